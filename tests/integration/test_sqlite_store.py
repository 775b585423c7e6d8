"""The SQLite event store: the contract, plus group commit and inline handlers on a real file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cqrskit import (
    NO_STREAM,
    Aggregate,
    Codec,
    ConcurrencyError,
    ConfigurationError,
    Event,
    EventStore,
    IntegrityError,
    OperationalError,
    Projection,
    Repository,
    SchemaError,
    StoreClosed,
    UniqueViolation,
)
from cqrskit.backends.sqlite import SqliteEventStore
from tests.contracts.eventstore import Deposited, EventStoreContract, Renamed, contract_codec
from tests.contracts.inline import (
    InlineProjectionContract,
    UserJoinedGroup,
    UserRegistered,
    Users,
    all_users,
    users_codec,
)


class TestSqliteEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _where(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    async def make_store(self, codec: Codec) -> EventStore:
        return await SqliteEventStore.open(self.path, codec)


class TestSqliteInlineProjections(InlineProjectionContract):
    @pytest.fixture(autouse=True)
    def _where(self, tmp_path: Path) -> None:
        self.path = tmp_path / "write.db"

    async def make_store(self, codec: Codec, inline: Sequence[Projection]) -> EventStore:
        return await SqliteEventStore.open(self.path, codec, inline=inline)


# -- a write model kept inline: users with a unique email ------------------------------------


@pytest.fixture
async def users_store(tmp_path: Path) -> Any:
    store = await SqliteEventStore.open(tmp_path / "write.db", users_codec(), inline=[Users()])
    yield store
    await store.close()


def register(user_id: str, email: str) -> list[Event]:
    return [UserRegistered(user_id, email)]


# -- making groups on purpose ----------------------------------------------------------------


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Hold the file's write lock from another connection (the store's writer then waits)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("COMMIT")
        conn.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in time")


async def in_one_group(
    store: SqliteEventStore, calls: list[Callable[[], Coroutine[Any, Any, Any]]]
) -> list[Any]:
    """Run ``calls`` so that the writer takes them all in one group, and check it did.

    The writer first takes a blocker request and waits for the lock another connection
    holds; meanwhile ``calls`` queue up, and all of them are taken at once after it.
    """
    with write_lock(store.path):
        blocker = asyncio.create_task(store.append("blocker", [Deposited(0)]))
        await asyncio.sleep(0)  # the blocker is queued
        await until(lambda: store.pending_requests == 0)  # ... and taken by the writer
        await asyncio.sleep(0.05)  # the writer is past collecting its batch, in BEGIN
        groups_before = store.stats.groups
        tasks = [asyncio.create_task(call()) for call in calls]
        await until(lambda: store.pending_requests == len(calls))
    await blocker
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert store.stats.groups - groups_before <= 2  # the blocker's group, then at most one
    assert store.stats.largest_group >= len(calls)
    return list(outcomes)


# -- schema and reopening --------------------------------------------------------------------


async def test_reopening_keeps_events_and_the_schema_is_created_once(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    for round_ in range(3):
        store = await SqliteEventStore.open(path, contract_codec())
        result = await store.append("a", [Deposited(round_)], expected_version=round_)
        assert result.position == round_ + 1
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name, version FROM cqrskit_schema_version").fetchall() == [
            ("event_store", 2)
        ]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT max(stream_version) FROM events").fetchall() == [(3,)]
    conn.close()


async def test_a_v1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    """v1 kept each stream's version in a ``streams`` table; v2 reads it from the events'
    index. A v1 file opens, loses the table, and keeps its events and versions."""
    path = tmp_path / "events.db"
    store = await SqliteEventStore.open(path, contract_codec())
    await store.append("a", [Deposited(1), Deposited(2)], NO_STREAM)
    await store.close()
    with sqlite3.connect(path) as conn:  # back to what v1 code left on disk
        conn.execute("UPDATE cqrskit_schema_version SET version = 1")
        conn.execute("CREATE TABLE streams (stream_id TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        conn.execute("INSERT INTO streams VALUES ('a', 2)")
    conn.close()
    store = await SqliteEventStore.open(path, contract_codec())
    try:
        assert await store.stream_version("a") == 2
        with pytest.raises(ConcurrencyError):
            await store.append("a", [Deposited(3)], 1)
        assert (await store.append("a", [Deposited(3)], 2)).version == 3
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM cqrskit_schema_version").fetchall() == [(2,)]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "streams" not in names
    conn.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await (await SqliteEventStore.open(path, contract_codec())).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE cqrskit_schema_version SET version = 99")
    conn.close()
    with pytest.raises(SchemaError, match="v99"):
        await SqliteEventStore.open(path, contract_codec())
    store = SqliteEventStore(path, contract_codec())
    try:
        with pytest.raises(SchemaError):
            await store.append("a", [Deposited(1)])
        with pytest.raises(SchemaError):
            await store.read_all()
    finally:
        await store.close()


async def test_a_file_that_cannot_be_opened_fails_every_call(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path, contract_codec())  # a directory, not a database file
    try:
        with pytest.raises(OperationalError):
            await store.ready()
        with pytest.raises(OperationalError):
            await store.append("a", [Deposited(1)])
        with pytest.raises(OperationalError):
            await store.head_position()
    finally:
        await store.close()


def test_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SqliteEventStore(tmp_path / "x.db", contract_codec(), synchronous="SOMETIMES")
    with pytest.raises(ConfigurationError):
        SqliteEventStore(tmp_path / "x.db", contract_codec(), readers=0)


# -- group commit ----------------------------------------------------------------------------


async def test_concurrent_appends_share_transactions(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", contract_codec())
    try:
        results = await asyncio.gather(
            *(store.append(f"s-{i}", [Deposited(i)]) for i in range(200))
        )
        assert sorted(r.position for r in results) == list(range(1, 201))
        assert store.stats.appends == 200
        assert store.stats.events == 200
        assert store.stats.failed == 0
        # One COMMIT (one fsync) per group: far fewer than one per append.
        assert store.stats.groups <= 40
        assert store.stats.largest_group > 1
    finally:
        await store.close()


async def test_requests_in_one_group_see_each_others_effects(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", contract_codec())
    try:
        outcomes = await in_one_group(
            store,
            [
                lambda: store.append("s", [Deposited(1)], expected_version=NO_STREAM),
                lambda: store.append("s", [Deposited(2)], expected_version=1),
                lambda: store.append("s", [Deposited(3)], expected_version=NO_STREAM),
                lambda: store.append("s", [Deposited(4), Deposited(5)], expected_version=2),
            ],
        )
        assert [o.version for o in outcomes if not isinstance(o, BaseException)] == [1, 2, 4]
        assert isinstance(outcomes[2], ConcurrencyError)
        assert outcomes[2].actual == 2
        records = await store.read_stream("s")
        assert [store.codec.decode(r) for r in records] == [Deposited(i) for i in (1, 2, 4, 5)]
        # The failed request burned no positions: the log has no gap.
        assert [r.position for r in await store.read_all()] == [1, 2, 3, 4, 5]
    finally:
        await store.close()


async def test_failing_requests_fail_alone_and_their_neighbours_commit(
    users_store: SqliteEventStore,
) -> None:
    store = users_store
    await store.append("user-u0", register("u0", "taken@example.com"))
    failed_before = store.stats.failed
    outcomes = await in_one_group(
        store,
        [
            lambda: store.append("user-u1", register("u1", "one@example.com")),
            lambda: store.append("user-u2", register("u2", "taken@example.com")),
            lambda: store.append("user-u0", [Renamed("x")], expected_version=NO_STREAM),
            lambda: store.append("user-u3", [UserJoinedGroup("explode")]),
            lambda: store.append("user-u4", register("u4", "four@example.com")),
        ],
    )
    ok_1, unique, conflict, bug, ok_4 = outcomes
    assert isinstance(unique, UniqueViolation)
    assert unique.constraint == "users.email"
    assert isinstance(unique.__cause__, sqlite3.IntegrityError)
    assert isinstance(conflict, ConcurrencyError)
    assert conflict.actual == 1
    assert isinstance(bug, RuntimeError)
    assert str(bug) == "handler bug"
    assert ok_4.position == ok_1.position + 1  # the failures in between left no gap
    assert store.stats.failed - failed_before == 3
    assert [u[0] for u in await all_users(store)] == ["u0", "u1", "u4"]
    assert {r.stream_id for r in await store.read_all()} == {
        "user-u0",
        "user-u1",
        "user-u4",
        "blocker",
    }
    assert await store.stream_version("user-u2") == 0
    assert await store.stream_version("user-u3") == 0


async def test_a_failed_commit_fails_every_request_of_its_group(
    users_store: SqliteEventStore,
) -> None:
    store = users_store
    head = await store.head_position()
    outcomes = await in_one_group(
        store,
        [
            lambda: store.append("user-u1", register("u1", "one@example.com")),
            # Its deferred foreign key fails at COMMIT, which takes the whole group down.
            lambda: store.append("user-ghost", [UserJoinedGroup("ghost")]),
        ],
    )
    assert all(isinstance(o, IntegrityError) for o in outcomes)
    assert "FOREIGN KEY" in str(outcomes[0])
    assert outcomes[0] is not outcomes[1]
    assert await store.head_position() == head + 1  # the blocker only
    assert await all_users(store) == []
    # The writer recovered: the next group commits.
    result = await store.append("user-u1", register("u1", "one@example.com"))
    assert result.position == head + 2


# -- inline handlers -------------------------------------------------------------------------


async def test_inline_handler_runs_in_the_append_transaction(
    users_store: SqliteEventStore,
) -> None:
    first = await users_store.append("user-u1", register("u1", "one@example.com"))
    second = await users_store.append("user-u2", register("u2", "two@example.com"))
    assert await all_users(users_store) == [
        ("u1", "one@example.com", first.position),
        ("u2", "two@example.com", second.position),
    ]


async def test_unique_violation_in_inline_handler_fails_the_whole_command(
    users_store: SqliteEventStore,
) -> None:
    store = users_store
    await store.append("user-u1", register("u1", "one@example.com"))
    with pytest.raises(UniqueViolation) as info:
        await store.append(
            "batch",
            [UserRegistered("u2", "two@example.com"), UserRegistered("u3", "one@example.com")],
        )
    assert info.value.constraint == "users.email"
    assert await store.head_position() == 1
    assert await store.stream_version("batch") == 0
    # The first event's row was rolled back with the second's failure.
    assert [u[0] for u in await all_users(store)] == ["u1"]


async def test_inline_schema_is_created_at_open(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "w.db", users_codec(), inline=[Users()])
    try:
        tables = await store.query(
            lambda tx: tx.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
        )
        assert {"users", "memberships", "events", "snapshots"} <= {t[0] for t in tables}
    finally:
        await store.close()


async def test_query_runs_read_only(users_store: SqliteEventStore) -> None:
    with pytest.raises(OperationalError, match="readonly"):
        await users_store.query(lambda tx: tx.execute("DELETE FROM users"))


# -- snapshots through the repository --------------------------------------------------------


@dataclass(frozen=True)
class Withdrawn(Event):
    amount: int


class Account(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0
        self.restored = False

    def deposit(self, amount: int) -> None:
        self.record(Deposited(amount))

    def apply(self, event: Event) -> None:
        match event:
            case Deposited(amount=amount):
                self.balance += amount
            case _:
                super().apply(event)

    def snapshot_state(self) -> Any:
        return {"balance": self.balance}

    def restore_state(self, state: Any) -> None:
        self.balance = state["balance"]
        self.restored = True


async def test_repository_snapshots_every_n_events(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", contract_codec())
    try:
        repo = Repository.for_type(store, Account, snapshot_every=3)
        for amount in range(1, 8):
            account = await repo.load("acc")
            account.deposit(amount)
            await repo.save(account)
        snapshot = await store.load_snapshot("account-acc")
        assert snapshot is not None
        assert snapshot.version == 6
        loaded = await repo.get("acc")
        assert loaded.restored
        assert (loaded.version, loaded.balance) == (7, 28)
        # Without snapshots, a full replay gives the same state.
        plain = await Repository.for_type(store, Account).get("acc")
        assert (plain.version, plain.balance, plain.restored) == (7, 28, False)
    finally:
        await store.close()


# -- waking and closing ----------------------------------------------------------------------


async def test_wait_sees_commits_of_another_process_on_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = await SqliteEventStore.open(path, contract_codec())
    watcher = await SqliteEventStore.open(path, contract_codec())
    try:
        waiter = asyncio.create_task(watcher.wait_for_new_events(0, timeout=10))
        await asyncio.sleep(0.15)
        assert not waiter.done()
        await writer.append("a", [Deposited(1)])  # wakes nobody in `watcher`: it must poll
        assert await asyncio.wait_for(waiter, 2)
        assert [r.position for r in await watcher.read_all()] == [1]
    finally:
        await writer.close()
        await watcher.close()


async def test_close_commits_the_queued_appends(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = await SqliteEventStore.open(path, contract_codec())
    tasks = [asyncio.create_task(store.append(f"s-{i}", [Deposited(i)])) for i in range(30)]
    await asyncio.sleep(0)  # every task has queued its request
    await store.close()
    results = await asyncio.gather(*tasks)
    assert sorted(r.position for r in results) == list(range(1, 31))
    with pytest.raises(StoreClosed):
        await store.append("late", [Deposited(0)])
    reopened = await SqliteEventStore.open(path, contract_codec())
    try:
        assert await reopened.head_position() == 30
    finally:
        await reopened.close()


async def test_close_wakes_waiters(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", contract_codec())
    waiter = asyncio.create_task(store.wait_for_new_events(0, timeout=30))
    await asyncio.sleep(0.1)
    await store.close()
    assert await asyncio.wait_for(waiter, 2)
    with pytest.raises(StoreClosed):
        await store.read_all()
