"""Inline projections, as one contract every event store passes: handlers that keep a
write model in the append's own transaction (an append whose handler fails is not stored
at all), and ``query`` that reads it.

Subclass :class:`InlineProjectionContract` once per backend with ``make_store(codec,
inline)``. ``dense_positions = False`` for a backend whose failed appends burn positions
(a PostgreSQL sequence): the suite then checks order instead of exact positions after a
failure.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest

from cqrskit import (
    NO_STREAM,
    Codec,
    ConcurrencyError,
    Event,
    EventStore,
    IntegrityError,
    PersistenceError,
    Projection,
    RecordedEvent,
    SqlTx,
    StoreClosed,
    UniqueViolation,
    handles,
)
from tests.contracts.eventstore import Deposited, contract_codec
from tests.contracts.personal import Joined


@dataclass(frozen=True)
class UserRegistered(Event):
    user_id: str
    email: str


@dataclass(frozen=True)
class UserJoinedGroup(Event):
    user_id: str


class Users(Projection):
    name = "users"
    tables = ("users", "memberships")

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY,"
            " email TEXT NOT NULL UNIQUE, position INTEGER NOT NULL)"
        )
        # Deferred: the foreign key is checked at COMMIT, which lets a test make COMMIT fail.
        tx.execute(
            "CREATE TABLE IF NOT EXISTS memberships (user_id TEXT NOT NULL"
            " REFERENCES users (user_id) DEFERRABLE INITIALLY DEFERRED)"
        )

    @handles(UserRegistered)
    def on_registered(self, tx: SqlTx, event: UserRegistered, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO users (user_id, email, position) VALUES (?, ?, ?)",
            (event.user_id, event.email, record.position),
        )

    @handles(UserJoinedGroup)
    def on_joined(self, tx: SqlTx, event: UserJoinedGroup, record: RecordedEvent) -> None:
        if event.user_id == "explode":
            raise RuntimeError("handler bug")
        tx.execute("INSERT INTO memberships (user_id) VALUES (?)", (event.user_id,))


class Deposits(Projection):
    """Every deposit, by position: a second inline projection, run in the same transaction."""

    name = "deposits"
    tables = ("deposits",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS deposits (position INTEGER PRIMARY KEY,"
            " stream_id TEXT NOT NULL, amount INTEGER NOT NULL)"
        )

    @handles(Deposited)
    def on_deposited(self, tx: SqlTx, event: Deposited, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO deposits (position, stream_id, amount) VALUES (?, ?, ?)",
            (record.position, record.stream_id, event.amount),
        )


def users_codec() -> Codec:
    codec = contract_codec()
    codec.register(UserRegistered)
    codec.register(UserJoinedGroup)
    return codec


async def all_users(store: EventStore) -> list[tuple[str, str, int]]:
    rows = await store.query(
        lambda tx: tx.fetchall("SELECT user_id, email, position FROM users ORDER BY position")
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def members(store: EventStore) -> list[str]:
    rows = await store.query(lambda tx: tx.fetchall("SELECT user_id FROM memberships"))
    return [r[0] for r in rows]


async def assert_nothing_of_it_stored(store: EventStore, stream_id: str) -> None:
    assert await store.read_stream(stream_id) == []
    assert await store.stream_version(stream_id) == 0
    assert await store.head_position() == 1
    assert [r.stream_id for r in await store.read_all()] == ["u-1"]
    assert await all_users(store) == [("u-1", "a@x.io", 1)]
    assert await members(store) == []
    assert await store.query(lambda tx: tx.fetchall("SELECT * FROM deposits")) == []


class InlineProjectionContract(ABC):
    """Behaviour of inline projections on every :class:`~cqrskit.EventStore`."""

    dense_positions = True
    """Failed appends leave no hole in the positions."""

    @abstractmethod
    async def make_store(self, codec: Codec, inline: Sequence[Projection]) -> EventStore:
        """A new store on an empty backend with these inline projections."""

    @pytest.fixture
    async def users_store(self) -> AsyncIterator[EventStore]:
        store = await self.make_store(users_codec(), [Users(), Deposits()])
        yield store
        await store.close()

    async def test_inline_tables_are_created_at_construction(self, users_store: EventStore) -> None:
        assert await all_users(users_store) == []
        assert await users_store.query(lambda tx: tx.fetchall("SELECT * FROM deposits")) == []

    async def test_inline_handlers_run_with_each_append(self, users_store: EventStore) -> None:
        await users_store.append("u-1", [UserRegistered("u-1", "a@x.io")], NO_STREAM)
        result = await users_store.append(
            "u-2", [UserRegistered("u-2", "b@x.io"), UserJoinedGroup("u-2")], NO_STREAM
        )
        await users_store.append("acc", [Deposited(5), Deposited(7)])
        assert result.position == 3
        assert await all_users(users_store) == [("u-1", "a@x.io", 1), ("u-2", "b@x.io", 2)]
        assert await members(users_store) == ["u-2"]
        assert await users_store.query(
            lambda tx: tx.fetchall("SELECT position, stream_id, amount FROM deposits ORDER BY 1")
        ) == [(4, "acc", 5), (5, "acc", 7)]

    async def test_a_raising_inline_handler_fails_the_append_whole(
        self, users_store: EventStore
    ) -> None:
        await users_store.append("u-1", [UserRegistered("u-1", "a@x.io")])
        # The first events' rows (in both projections) were written before the handler raised.
        events = [UserRegistered("u-2", "b@x.io"), Deposited(3), UserJoinedGroup("explode")]
        with pytest.raises(RuntimeError, match="handler bug"):
            await users_store.append("u-2", events)
        await assert_nothing_of_it_stored(users_store, "u-2")
        # The log goes on (without a gap where positions are dense).
        result = await users_store.append("u-3", [UserRegistered("u-3", "c@x.io")])
        assert [r.position for r in await users_store.read_all()] == [1, result.position]
        if self.dense_positions:
            assert result.position == 2

    async def test_a_failing_sealed_append_makes_no_key(self) -> None:
        codec = users_codec()
        codec.register(Joined)
        store = await self.make_store(codec, [Users(), Deposits()])
        try:
            await store.append("u-1", [UserRegistered("u-1", "a@x.io")])
            # The subject's first key is written with the events: undone with them.
            with pytest.raises(RuntimeError, match="handler bug"):
                await store.append(
                    "u-2", [Joined("m-2", "b@x.io", None), UserJoinedGroup("explode")]
                )
            await assert_nothing_of_it_stored(store, "u-2")
            assert await store.keys.get("m-2") is None
            await store.append("u-2", [Joined("m-2", "b@x.io", None), UserJoinedGroup("u-1")])
            (joined, _) = await store.read_stream("u-2")
            assert store.codec.decode(joined) == Joined("m-2", "b@x.io", None)
            assert await store.keys.get("m-2") is not None
        finally:
            await store.close()

    async def test_a_unique_violation_in_an_inline_handler_fails_the_append_whole(
        self, users_store: EventStore
    ) -> None:
        await users_store.append("u-1", [UserRegistered("u-1", "a@x.io")])
        with pytest.raises(UniqueViolation):
            await users_store.append("u-2", [Deposited(1), UserRegistered("u-2", "a@x.io")])
        await assert_nothing_of_it_stored(users_store, "u-2")

    async def test_a_failed_commit_fails_the_append_whole(self, users_store: EventStore) -> None:
        await users_store.append("u-1", [UserRegistered("u-1", "a@x.io")])
        with pytest.raises(IntegrityError):  # the deferred foreign key fails at COMMIT
            await users_store.append("ghost", [Deposited(1), UserJoinedGroup("nobody")])
        await assert_nothing_of_it_stored(users_store, "ghost")
        await users_store.append("u-1", [UserJoinedGroup("u-1")])  # the store goes on working
        assert await members(users_store) == ["u-1"]

    async def test_a_conflicting_append_runs_no_inline_handler(
        self, users_store: EventStore
    ) -> None:
        await users_store.append("u-1", [UserRegistered("u-1", "a@x.io")])
        with pytest.raises(ConcurrencyError):
            await users_store.append("u-1", [UserJoinedGroup("u-1")], expected_version=0)
        assert await members(users_store) == []

    async def test_concurrent_appends_keep_the_write_model_and_the_log_in_step(
        self, users_store: EventStore
    ) -> None:
        outcomes = await asyncio.gather(
            *(
                users_store.append(
                    "contested", [UserRegistered(f"u-{i}", f"{i}@x.io")], expected_version=NO_STREAM
                )
                for i in range(20)
            ),
            *(users_store.append(f"acc-{i}", [Deposited(i)]) for i in range(20)),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 19
        assert all(isinstance(o, ConcurrencyError) for o in failures)
        log = await users_store.read_all()
        positions = [r.position for r in log]
        assert len(log) == 21
        assert positions == sorted(set(positions))
        if self.dense_positions:
            assert positions == list(range(1, 22))
        (winner,) = [r for r in log if r.stream_id == "contested"]
        assert [u[2] for u in await all_users(users_store)] == [winner.position]
        deposits = await users_store.query(
            lambda tx: tx.fetchall("SELECT position, stream_id FROM deposits ORDER BY 1")
        )
        assert deposits == [(r.position, r.stream_id) for r in log if r.stream_id != "contested"]

    async def test_an_inline_append_wakes_waiters(self, users_store: EventStore) -> None:
        waiter = asyncio.create_task(users_store.wait_for_new_events(0, timeout=30))
        await asyncio.sleep(0)
        await users_store.append("acc", [Deposited(1)])
        assert await asyncio.wait_for(waiter, 30)

    async def test_query_is_read_only_and_refused_after_close(
        self, users_store: EventStore
    ) -> None:
        with pytest.raises(PersistenceError):
            await users_store.query(
                lambda tx: tx.execute("INSERT INTO users VALUES ('u-9', 'z@x.io', 9)")
            )
        assert await all_users(users_store) == []
        await users_store.close()
        with pytest.raises(StoreClosed):
            await users_store.query(lambda tx: tx.fetchone("SELECT 1"))
        with pytest.raises(StoreClosed):
            await users_store.append("acc", [Deposited(1)])
