"""The event store contract, as one abstract test suite every backend passes.

How to run it against a backend: subclass :class:`EventStoreContract` in a module whose
name starts with ``test_``, with a class name starting with ``Test``, and implement
:meth:`EventStoreContract.make_store`. Put whatever the backend needs on ``self`` from an
autouse fixture (pytest makes a new instance of the class for every test)::

    class TestSqliteEventStore(EventStoreContract):
        @pytest.fixture(autouse=True)
        def _where(self, tmp_path: Path) -> None:
            self.path = tmp_path / "events.db"

        async def make_store(self, codec: Codec) -> EventStore:
            return await SqliteEventStore.open(self.path, codec)

The suite closes every store it made (``dispose_store``, override it for extra cleanup).
Tests get a ready store from the ``store`` fixture, or call ``self.open(codec)`` when they
need their own codec; both are built on the same events (:func:`contract_codec`).

Positions: a fresh backend's first event is at position 1, and the suite checks exact
positions only where no append failed, so a backend whose failed appends burn positions
(a PostgreSQL sequence) passes too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cqrskit import (
    ANY,
    NO_STREAM,
    Codec,
    ConcurrencyError,
    Event,
    EventStore,
    Metadata,
    Snapshot,
    StoreClosed,
    UnknownEventType,
)
from tests.contracts.append_streams import AppendStreamsContract
from tests.contracts.personal import PersonalDataContract


@dataclass(frozen=True)
class Deposited(Event):
    amount: int


@dataclass(frozen=True)
class Renamed(Event):
    __event_type__ = "AccountRenamed"
    __schema_version__ = 3
    name: str
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NeverRegistered(Event):
    note: str


def contract_codec() -> Codec:
    return Codec([Deposited, Renamed])


class EventStoreContract(AppendStreamsContract, PersonalDataContract, ABC):
    """Behaviour every :class:`~cqrskit.eventstore.EventStore` must have."""

    @abstractmethod
    async def make_store(self, codec: Codec) -> EventStore:
        """A new store on an empty backend (called at most a few times per test)."""

    async def dispose_store(self, store: EventStore) -> None:
        """Release what ``make_store`` made (close() is idempotent, so it is always safe)."""
        await store.close()

    # -- plumbing ---------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    async def _dispose_all(self) -> AsyncIterator[None]:
        self._made: list[EventStore] = []
        yield
        for made in self._made:
            await self.dispose_store(made)

    async def open(self, codec: Codec) -> EventStore:
        """A store from ``make_store`` that is disposed of after the test."""
        made = await self.make_store(codec)
        self._made.append(made)
        return made

    @pytest.fixture
    async def store(self, _dispose_all: None) -> EventStore:
        return await self.open(contract_codec())

    # -- append and read --------------------------------------------------------------------

    async def test_append_returns_position_and_version(self, store: EventStore) -> None:
        first = await store.append("acc-1", [Deposited(1), Deposited(2)])
        assert (first.position, first.version) == (2, 2)
        second = await store.append("acc-2", [Deposited(3)])
        assert (second.position, second.version) == (3, 1)

    async def test_read_stream_in_version_order_with_decodable_payloads(
        self, store: EventStore
    ) -> None:
        await store.append("acc-1", [Deposited(1), Renamed("a", ["x"])])
        await store.append("acc-2", [Deposited(99)])
        await store.append("acc-1", [Deposited(3)])
        records = await store.read_stream("acc-1")
        assert [r.stream_version for r in records] == [1, 2, 3]
        assert {r.stream_id for r in records} == {"acc-1"}
        assert [store.codec.decode(r) for r in records] == [
            Deposited(1),
            Renamed("a", ["x"]),
            Deposited(3),
        ]
        assert [(r.type, r.schema_version) for r in records] == [
            ("Deposited", 1),
            ("AccountRenamed", 3),
            ("Deposited", 1),
        ]

    async def test_read_stream_is_exclusive_of_from_version(self, store: EventStore) -> None:
        await store.append("acc-1", [Deposited(i) for i in range(1, 6)])
        records = await store.read_stream("acc-1", from_version=3)
        assert [r.stream_version for r in records] == [4, 5]
        assert await store.read_stream("acc-1", from_version=5) == []

    async def test_read_stream_of_missing_stream_is_empty(self, store: EventStore) -> None:
        assert await store.read_stream("nobody") == []

    async def test_read_all_in_log_order_across_streams(self, store: EventStore) -> None:
        await store.append("a", [Deposited(1)])
        await store.append("b", [Deposited(2), Deposited(3)])
        await store.append("a", [Deposited(4)])
        records = await store.read_all()
        assert [r.position for r in records] == [1, 2, 3, 4]
        assert [(r.stream_id, r.stream_version) for r in records] == [
            ("a", 1),
            ("b", 1),
            ("b", 2),
            ("a", 2),
        ]
        assert [store.codec.decode(r) for r in records] == [Deposited(i) for i in range(1, 5)]

    async def test_read_all_is_exclusive_of_from_position_and_honours_limit(
        self, store: EventStore
    ) -> None:
        await store.append("a", [Deposited(i) for i in range(1, 11)])
        assert [r.position for r in await store.read_all(4, limit=3)] == [5, 6, 7]
        assert [r.position for r in await store.read_all(8)] == [9, 10]
        assert await store.read_all(10) == []
        assert await store.read_all(1000) == []

    async def test_read_all_pages_cover_everything_exactly_once(self, store: EventStore) -> None:
        for i in range(23):
            await store.append(f"s-{i % 4}", [Deposited(i)] * (1 + i % 3))
        head = await store.head_position()
        seen: list[int] = []
        checkpoint = 0
        while page := await store.read_all(checkpoint, limit=7):
            assert len(page) <= 7
            seen.extend(r.position for r in page)
            checkpoint = page[-1].position
        assert seen == list(range(1, head + 1))
        assert len(seen) == sum(1 + i % 3 for i in range(23))

    async def test_multi_event_append_has_contiguous_positions_and_versions(
        self, store: EventStore
    ) -> None:
        await store.append("other", [Deposited(0)])
        result = await store.append("a", [Deposited(1), Deposited(2), Deposited(3)])
        records = await store.read_stream("a")
        assert [r.position for r in records] == [2, 3, 4]
        assert [r.stream_version for r in records] == [1, 2, 3]
        assert result.position == records[-1].position

    # -- expected versions ------------------------------------------------------------------

    async def test_expected_exact_version(self, store: EventStore) -> None:
        await store.append("a", [Deposited(1)], expected_version=NO_STREAM)
        result = await store.append("a", [Deposited(2)], expected_version=1)
        assert result.version == 2

    async def test_wrong_exact_version_raises_with_actual_and_appends_nothing(
        self, store: EventStore
    ) -> None:
        await store.append("a", [Deposited(1), Deposited(2)])
        with pytest.raises(ConcurrencyError) as info:
            await store.append("a", [Deposited(3)], expected_version=1)
        assert (info.value.stream_id, info.value.expected, info.value.actual) == ("a", 1, 2)
        with pytest.raises(ConcurrencyError) as info:
            await store.append("a", [Deposited(3)], expected_version=5)
        assert info.value.actual == 2
        assert await store.stream_version("a") == 2
        assert await store.head_position() == 2

    async def test_no_stream_expects_a_new_stream(self, store: EventStore) -> None:
        await store.append("a", [Deposited(1)], expected_version=NO_STREAM)
        with pytest.raises(ConcurrencyError) as info:
            await store.append("a", [Deposited(2)], expected_version=NO_STREAM)
        assert info.value.actual == 1
        assert info.value.expected is NO_STREAM
        assert (await store.append("b", [Deposited(2)], expected_version=0)).version == 1

    async def test_expecting_a_version_of_a_missing_stream_fails_with_actual_zero(
        self, store: EventStore
    ) -> None:
        with pytest.raises(ConcurrencyError) as info:
            await store.append("missing", [Deposited(1)], expected_version=3)
        assert info.value.actual == 0
        assert await store.read_stream("missing") == []

    async def test_any_appends_whatever_the_version(self, store: EventStore) -> None:
        assert (await store.append("a", [Deposited(1)], expected_version=ANY)).version == 1
        assert (await store.append("a", [Deposited(2)], expected_version=ANY)).version == 2
        assert (await store.append("a", [Deposited(3)])).version == 3

    async def test_concurrent_appends_with_the_same_expected_version_one_wins(
        self, store: EventStore
    ) -> None:
        await store.append("contested", [Deposited(0)])
        outcomes = await asyncio.gather(
            *(store.append("contested", [Deposited(i)], expected_version=1) for i in range(50)),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if not isinstance(o, BaseException)]
        losses = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(wins) == 1
        assert len(losses) == 49
        assert all(isinstance(e, ConcurrencyError) for e in losses)
        assert {e.actual for e in losses if isinstance(e, ConcurrencyError)} == {2}
        assert wins[0].version == 2
        assert await store.stream_version("contested") == 2
        assert len(await store.read_stream("contested")) == 2

    async def test_concurrent_appends_to_different_streams_all_succeed(
        self, store: EventStore
    ) -> None:
        results = await asyncio.gather(
            *(
                store.append(f"s-{i}", [Deposited(i), Deposited(-i)], expected_version=NO_STREAM)
                for i in range(60)
            )
        )
        assert all(r.version == 2 for r in results)
        assert sorted(r.position for r in results) == list(range(2, 121, 2))
        records = await store.read_all(0, limit=1000)
        assert [r.position for r in records] == list(range(1, 121))
        for first, second in zip(records[::2], records[1::2], strict=True):
            # The two events of one append are adjacent in the log.
            assert first.stream_id == second.stream_id
            assert (first.stream_version, second.stream_version) == (1, 2)

    # -- input checks -----------------------------------------------------------------------

    async def test_empty_append_is_a_value_error(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="at least one event"):
            await store.append("a", [])
        assert await store.head_position() == 0

    async def test_unregistered_event_type_appends_nothing(self, store: EventStore) -> None:
        with pytest.raises(UnknownEventType) as info:
            await store.append("a", [Deposited(1), NeverRegistered("x")])
        assert info.value.type_name == "NeverRegistered"
        assert await store.read_stream("a") == []
        assert await store.head_position() == 0
        assert await store.stream_version("a") == 0

    # -- envelopes --------------------------------------------------------------------------

    async def test_metadata_round_trips(self, store: EventStore) -> None:
        meta = Metadata(correlation_id="corr-1", causation_id="cmd-1", extra={"user": "u1"})
        await store.append("a", [Deposited(1), Deposited(2)], metadata=meta)
        await store.append("b", [Deposited(3)])
        records = await store.read_all()
        assert [store.codec.decode_metadata(r.metadata) for r in records] == [
            meta,
            meta,
            Metadata(),
        ]

    async def test_event_ids_are_unique_uuids(self, store: EventStore) -> None:
        await store.append("a", [Deposited(i) for i in range(10)])
        await store.append("b", [Deposited(i) for i in range(10)])
        ids = [r.event_id for r in await store.read_all()]
        assert len(set(ids)) == 20
        assert all(str(uuid.UUID(i)) == i for i in ids)

    async def test_recorded_at_is_the_append_time(self, store: EventStore) -> None:
        before = time.time()
        await store.append("a", [Deposited(1)])
        after = time.time()
        (record,) = await store.read_all()
        assert before - 1 <= record.recorded_at <= after + 1
        assert await store.recorded_at(0) == record.recorded_at
        assert await store.recorded_at(1) is None

    # -- head, versions, positions ----------------------------------------------------------

    async def test_head_position(self, store: EventStore) -> None:
        assert await store.head_position() == 0
        await store.append("a", [Deposited(1), Deposited(2)])
        assert await store.head_position() == 2
        await store.append("b", [Deposited(3)])
        assert await store.head_position() == 3

    async def test_stream_version(self, store: EventStore) -> None:
        assert await store.stream_version("a") == 0
        await store.append("a", [Deposited(1), Deposited(2)])
        await store.append("b", [Deposited(3)])
        assert await store.stream_version("a") == 2
        assert await store.stream_version("b") == 1

    async def test_position_reached(self, store: EventStore) -> None:
        await store.append("a", [Deposited(1), Deposited(2)])
        assert await store.position_reached(2, 2)
        assert await store.position_reached(2, 1)
        assert not await store.position_reached(1, 2)

    # -- snapshots --------------------------------------------------------------------------

    async def test_snapshots(self, store: EventStore) -> None:
        assert await store.load_snapshot("a") is None
        await store.save_snapshot(Snapshot("a", 5, b'{"balance":5}'))
        await store.save_snapshot(Snapshot("b", 1, b"{}"))
        assert await store.load_snapshot("a") == Snapshot("a", 5, b'{"balance":5}')
        await store.save_snapshot(Snapshot("a", 10, b'{"balance":10}'))
        assert await store.load_snapshot("a") == Snapshot("a", 10, b'{"balance":10}')
        assert await store.load_snapshot("b") == Snapshot("b", 1, b"{}")

    # -- waiting for events -----------------------------------------------------------------

    async def test_wait_returns_at_once_when_events_are_already_there(
        self, store: EventStore
    ) -> None:
        await store.append("a", [Deposited(1)])
        start = time.monotonic()
        assert await store.wait_for_new_events(0, timeout=5)
        assert time.monotonic() - start < 1

    async def test_wait_wakes_on_append(self, store: EventStore) -> None:
        await store.append("a", [Deposited(1)])
        waiter = asyncio.create_task(store.wait_for_new_events(1, timeout=10))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        start = time.monotonic()
        await store.append("a", [Deposited(2)])
        assert await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - start < 2

    async def test_wait_times_out_when_nothing_is_appended(self, store: EventStore) -> None:
        await store.append("a", [Deposited(1)])
        start = time.monotonic()
        assert not await store.wait_for_new_events(1, timeout=0.2)
        assert 0.15 <= time.monotonic() - start < 2

    # -- closing ----------------------------------------------------------------------------

    async def test_use_after_close_raises_store_closed(self) -> None:
        store = await self.open(contract_codec())
        await store.append("a", [Deposited(1)])
        await store.close()
        await store.close()  # idempotent
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: store.append("a", [Deposited(2)]),
            lambda: store.read_stream("a"),
            lambda: store.read_all(),
            lambda: store.head_position(),
            lambda: store.stream_version("a"),
            lambda: store.save_snapshot(Snapshot("a", 1, b"{}")),
            lambda: store.load_snapshot("a"),
            lambda: store.wait_for_new_events(0, 0.1),
        ]
        for call in calls:
            with pytest.raises(StoreClosed):
                await call()
