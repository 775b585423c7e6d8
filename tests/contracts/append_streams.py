"""The contract of ``EventStore.append_streams`` (several streams, and ``within``, in one
transaction) and of the idempotency table it serves: part of
:class:`tests.contracts.eventstore.EventStoreContract`, run on every backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from cqrskit import ANY, NO_STREAM, ConcurrencyError, Event, EventStore, SqlTx, UniqueViolation
from cqrskit.eventstore import AppendResult, StreamAppend
from cqrskit.idempotency import (
    IdempotencyKey,
    find_answer,
    is_key_taken,
    purge_expired,
    store_answer,
)


def Moved(amount: int) -> Event:
    """The contract codec's ``Deposited`` (imported here: that module imports this one)."""
    from tests.contracts.eventstore import Deposited

    return Deposited(amount)


KEY = IdempotencyKey("key-1", IdempotencyKey.fingerprint_of("POST", "/x", b"{}"), "alice")


class AppendStreamsContract:
    """Behaviour of ``append_streams`` every store must have (uses the ``store`` fixture)."""

    async def test_several_streams_in_one_append_take_consecutive_positions(
        self, store: EventStore
    ) -> None:
        await store.append("a", [Moved(1)])
        results = await store.append_streams(
            [
                StreamAppend("a", [Moved(2), Moved(3)], expected_version=1),
                StreamAppend("b", [Moved(4)], expected_version=NO_STREAM),
                StreamAppend("a", [Moved(5)], expected_version=3),  # after the first part
            ]
        )
        assert results == [AppendResult(3, 3), AppendResult(4, 1), AppendResult(5, 4)]
        log = await store.read_all(0)
        assert [(r.position, r.stream_id, r.stream_version) for r in log] == [
            (1, "a", 1), (2, "a", 2), (3, "a", 3), (4, "b", 1), (5, "a", 4),
        ]  # fmt: skip
        assert len({r.recorded_at for r in log[1:]}) == 1  # one transaction

    async def test_a_wrong_version_in_any_part_stores_nothing(self, store: EventStore) -> None:
        await store.append("a", [Moved(1)])
        with pytest.raises(ConcurrencyError) as info:
            await store.append_streams(
                [StreamAppend("b", [Moved(2)]), StreamAppend("a", [Moved(3)], expected_version=0)]
            )
        assert (info.value.stream_id, info.value.actual) == ("a", 1)
        assert await store.head_position() == 1
        assert await store.read_stream("b") == []

    async def test_within_runs_in_the_transaction_and_its_failure_undoes_the_appends(
        self, store: EventStore
    ) -> None:
        seen: list[list[AppendResult]] = []

        def record(tx: SqlTx, results: list[AppendResult]) -> None:
            seen.append(results)
            store_answer(tx, KEY, '"ok"', results[-1].position, time.time(), 60)

        await store.append_streams([StreamAppend("a", [Moved(1)])], within=record)
        assert seen == [[AppendResult(1, 1)]]
        found = await store.query(lambda tx: find_answer(tx, KEY, time.time()))
        assert found is not None
        assert (found.answer, found.position, found.fingerprint) == ('"ok"', 1, KEY.fingerprint)

        # The same key again: its transaction fails whole, its events are not stored.
        with pytest.raises(UniqueViolation) as taken:
            await store.append_streams([StreamAppend("b", [Moved(2)])], within=record)
        assert is_key_taken(taken.value)
        assert await store.head_position() == 1
        assert await store.read_stream("b") == []
        # Another scope is another key.
        other = KEY.for_caller("bob")

        def record_other(tx: SqlTx, results: list[AppendResult]) -> None:
            store_answer(tx, other, "1", 0, time.time(), 60)

        assert await store.append_streams([], within=record_other) == []
        assert await store.query(lambda tx: find_answer(tx, other, time.time())) is not None

    async def test_concurrent_commands_with_one_key_store_once(self, store: EventStore) -> None:
        def record(tx: SqlTx, results: list[AppendResult]) -> None:
            store_answer(tx, KEY, "null", results[-1].position, time.time(), 60)

        outcomes = await asyncio.gather(
            *(
                store.append_streams([StreamAppend(f"s-{i}", [Moved(i)])], within=record)
                for i in range(16)
            ),
            return_exceptions=True,
        )
        done = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(done) == 1
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert all(isinstance(o, UniqueViolation) and is_key_taken(o) for o in refused)
        assert await store.head_position() == done[0][0].position
        assert len(await store.read_all(0)) == 1

    async def test_an_expired_key_is_replaced_and_purged(self, store: EventStore) -> None:
        now = time.time()

        def old(tx: SqlTx, results: list[AppendResult]) -> None:
            store_answer(tx, KEY, '"old"', 0, now - 100, 10)  # expired 90 s ago

        def new(tx: SqlTx, results: list[AppendResult]) -> None:
            store_answer(tx, KEY, '"new"', 0, now, 10)

        await store.append_streams([], within=old)
        assert await store.query(lambda tx: find_answer(tx, KEY, now)) is None
        await store.append_streams([], within=new)
        found = await store.query(lambda tx: find_answer(tx, KEY, now))
        assert found is not None
        assert found.answer == '"new"'
        purged: list[int] = []

        def purge(tx: SqlTx, results: list[AppendResult]) -> None:
            purged.append(purge_expired(tx, now + 11, 100))

        await store.append_streams([], within=purge)
        assert purged == [1]
        assert await store.query(lambda tx: find_answer(tx, KEY, now)) is None

    async def test_any_in_a_batch_appends_whatever_the_version(self, store: EventStore) -> None:
        await store.append("a", [Moved(1)])
        (result,) = await store.append_streams([StreamAppend("a", [Moved(2)], ANY)])
        assert result == AppendResult(2, 2)
