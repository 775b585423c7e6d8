"""The projection runner against the in-memory store and a SQLite read file."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cqrskit import ConfigurationError, ConsistencyTimeout, Projection, RecordedEvent, SqlTx
from cqrskit.backends.memory import MemoryEventStore
from cqrskit.backends.sqlite import SqliteDatabase
from cqrskit.checkpoints import ensure_table, read_position
from cqrskit.monitoring import projection_status
from cqrskit.projection import handles
from cqrskit.runner import ProjectionRunner, RetryPolicy
from tests.integration._projection_child import (
    Counters,
    Incremented,
    Noted,
    Reset,
    append_all,
    counters_codec,
    random_events,
    read_counts,
    replay,
)

FAST_RETRY = RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.002)


@pytest.fixture
def store() -> MemoryEventStore:
    return MemoryEventStore(counters_codec())


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "read.db", synchronous="OFF")
    yield database
    await database.close()


class Totals(Projection):
    """A second projection: one row with the sum of every increment."""

    name = "totals"
    tables = ("totals",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY, total INTEGER)")
        tx.execute("INSERT OR IGNORE INTO totals VALUES (1, 0)")

    @handles(Incremented)
    def on_incremented(self, tx: SqlTx, event: Incremented, record: RecordedEvent) -> None:
        tx.execute("UPDATE totals SET total = total + ? WHERE id = 1", (event.amount,))


class PoisonedCounters(Counters):
    """Fails on every increment of ``amount == poison`` (a deterministic handler bug)."""

    name = "poisoned"
    tables = ("counters",)

    def __init__(self, poison: int, failures: int | None = None) -> None:
        self.poison = poison
        self.failures_left = failures  # None: fails every time

    @handles(Incremented)
    def on_incremented(self, tx: SqlTx, event: Incremented, record: RecordedEvent) -> None:
        if event.amount == self.poison and (self.failures_left is None or self.failures_left > 0):
            if self.failures_left is not None:
                self.failures_left -= 1
            raise RuntimeError(f"cannot apply {event.amount}")
        super().on_incremented(tx, event, record)


async def test_catch_up_applies_every_event_once_and_checkpoints_the_last(
    store: MemoryEventStore, db: SqliteDatabase
) -> None:
    events = random_events(2_345, seed=1)
    head = await append_all(store, events)
    async with ProjectionRunner(store, db, [Counters()], batch_size=100) as runner:
        assert await runner.wait_for("counters", head, timeout=10) == head
        assert runner.position("counters") == head
    assert await read_counts(db) == replay(events)
    assert await db.read(lambda tx: read_position(tx, "counters")) == head


async def test_unhandled_events_are_skipped_undecoded_but_move_the_checkpoint(
    store: MemoryEventStore, db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    original = store.codec.decode_payload

    def spy(type_name: str, schema_version: int, payload: bytes) -> object:
        decoded.append(type_name)
        return original(type_name, schema_version, payload)

    monkeypatch.setattr(store.codec, "decode_payload", spy)
    await store.append("a", [Incremented("x", 1), Noted("skip me"), Reset("x")])
    head = (await store.append("b", [Noted("last one is skipped too")])).position
    async with ProjectionRunner(store, db, [Counters()]) as runner:
        await runner.wait_for("counters", head, timeout=5)
    assert sorted(set(decoded)) == ["Incremented", "Reset"]
    assert await db.read(lambda tx: read_position(tx, "counters")) == head == 4


async def test_a_restarted_runner_continues_from_its_checkpoint(
    store: MemoryEventStore, db: SqliteDatabase
) -> None:
    first, second = random_events(500, seed=2), random_events(300, seed=3)
    head = await append_all(store, first)
    async with ProjectionRunner(store, db, [Counters()], batch_size=64) as runner:
        await runner.wait_for("counters", head, timeout=5)
    head = await append_all(store, second)
    async with ProjectionRunner(store, db, [Counters()], batch_size=64) as runner:
        assert runner.position("counters") == 500
        await runner.wait_for("counters", head, timeout=5)
    assert await read_counts(db) == replay(first + second)


async def test_two_runners_on_one_read_model_never_apply_a_batch_twice(
    store: MemoryEventStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = random_events(600, seed=4)
    head = await append_all(store, events)
    caplog.set_level(logging.INFO, logger="cqrskit.runner")
    # Every attempt must end exact. An attempt proves something only if both runners did
    # read the same batch at least once (the checkpoint compare then discards the loser's);
    # on a loaded machine one runner may rarely finish alone, so try again, on a fresh file.
    for attempt in range(5):
        caplog.clear()
        path = tmp_path / f"read-{attempt}.db"
        dbs = [SqliteDatabase(path, synchronous="OFF") for _ in range(2)]
        runners = [ProjectionRunner(store, d, [Counters()], batch_size=5) for d in dbs]
        try:
            # Create the file first: two connections switching a new file to WAL at once
            # may see "database is locked".
            await dbs[0].write(ensure_table)
            await asyncio.gather(*(r.start() for r in runners))
            await asyncio.gather(*(r.wait_for("counters", head, timeout=20) for r in runners))
            await asyncio.gather(*(r.stop() for r in runners))
            assert await read_counts(dbs[0]) == replay(events)
        finally:
            for d in dbs:
                await d.close()
        if any("batch discarded" in r.getMessage() for r in caplog.records):
            return
    pytest.fail("in 5 attempts the two runners never read the same batch: nothing was tested")


async def test_a_failing_handler_commits_what_precedes_it_then_stops_in_error(
    store: MemoryEventStore, db: SqliteDatabase
) -> None:
    amounts = [1, 2, 3, 4, 5, 13, 6, 7]
    await store.append("s", [Incremented("c", a) for a in amounts])
    async with ProjectionRunner(
        store, db, [PoisonedCounters(poison=13), Totals()], batch_size=100, retry=FAST_RETRY
    ) as runner:
        await runner.wait_for("totals", 8, timeout=5)
        for _ in range(500):  # the error is recorded right after the prefix commits
            if runner.error("poisoned") is not None:
                break
            await asyncio.sleep(0.01)
        error = runner.error("poisoned")
        assert error is not None
        assert (error.position, error.event_type) == (6, "Incremented")
        assert "cannot apply 13" in error.cause
        # The other projection keeps running, also past the poisoned event.
        head = (await store.append("s", [Incremented("c", 100)])).position
        await runner.wait_for("totals", head, timeout=5)
        statuses = {s.name: s for s in await runner.status()}
    assert await read_counts(db) == {"c": (15, 5)}  # events 1..5 only, nothing after
    assert await db.read(lambda tx: read_position(tx, "poisoned")) == 5
    assert await db.read(lambda tx: tx.fetchone("SELECT total FROM totals")) == (141,)
    poisoned = statuses["poisoned"]
    assert poisoned.state == "error"
    assert poisoned.position == 5
    assert poisoned.lag_events == 4
    assert poisoned.error is not None
    assert poisoned.error.position == 6
    assert poisoned.error.event_type == "Incremented"
    assert "cannot apply 13" in poisoned.error.message
    assert statuses["totals"].state == "running"
    # ... and a process that only reads sees the error too, from the checkpoint table.
    (seen,) = await projection_status(store, db, ["poisoned"])
    assert (seen.state, seen.error) == ("error", poisoned.error)


async def test_a_handler_failing_once_caught_up_stops_at_its_event(
    store: MemoryEventStore, db: SqliteDatabase
) -> None:
    """The same isolation when the poisoned event arrives while the runner follows the
    head (woken by the append, not catching up): the events before it commit, the
    projection stops in error at it, nothing after it is applied."""
    await store.append("s", [Incremented("c", 1)])
    async with ProjectionRunner(
        store, db, [PoisonedCounters(poison=13)], batch_size=100, retry=FAST_RETRY
    ) as runner:
        await runner.wait_for("poisoned", 1, timeout=5)  # caught up
        await store.append("s", [Incremented("c", 2)])
        await runner.wait_for("poisoned", 2, timeout=5)
        await store.append("s", [Incremented("c", a) for a in (3, 4, 13, 5)])
        for _ in range(500):
            if runner.error("poisoned") is not None:
                break
            await asyncio.sleep(0.01)
        error = runner.error("poisoned")
        assert error is not None
        assert (error.position, error.event_type) == (5, "Incremented")
        assert runner.position("poisoned") == 4
    assert await read_counts(db) == {"c": (10, 4)}  # 1, 2, 3, 4: nothing from 13 on


async def test_a_transient_failure_is_retried_and_then_applied(
    store: MemoryEventStore, db: SqliteDatabase
) -> None:
    await store.append("s", [Incremented("c", a) for a in (1, 13, 2)])
    projection = PoisonedCounters(poison=13, failures=2)
    retry = RetryPolicy(attempts=3, base_delay=0.001)
    async with ProjectionRunner(store, db, [projection], retry=retry) as runner:
        await runner.wait_for("poisoned", 3, timeout=5)
        assert runner.error("poisoned") is None
    assert await read_counts(db) == {"c": (16, 3)}


async def test_wait_for_wakes_in_process_as_soon_as_the_batch_commits(
    store: MemoryEventStore, db: SqliteDatabase
) -> None:
    async with ProjectionRunner(store, db, [Counters()], idle_timeout=30) as runner:
        await asyncio.sleep(0.05)  # idle: waiting for events
        position = (await store.append("s", [Incremented("c", 1)])).position
        started = time.monotonic()
        assert await runner.wait_for("counters", position, timeout=5) == position
        assert time.monotonic() - started < 0.5


async def test_wait_for_times_out_with_consistency_timeout(
    store: MemoryEventStore, db: SqliteDatabase
) -> None:
    head = await append_all(store, random_events(10, seed=5))
    async with ProjectionRunner(store, db, [Counters()]) as runner:
        await runner.wait_for("counters", head, timeout=5)
        started = time.monotonic()
        with pytest.raises(ConsistencyTimeout) as caught:
            await runner.wait_for("counters", head + 1, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert (caught.value.wanted, caught.value.reached) == (head + 1, head)


class SharedLease:
    """An in-process lease: the real Protocol, held in a dict instead of a database."""

    def __init__(self) -> None:
        self.holders: dict[str, object] = {}

    def for_runner(self) -> RunnerLease:
        return RunnerLease(self)


class RunnerLease:
    def __init__(self, shared: SharedLease) -> None:
        self.shared = shared

    async def acquire(self, name: str) -> bool:
        return self.shared.holders.setdefault(name, self) is self

    async def renew(self, name: str) -> bool:
        return self.shared.holders.get(name) is self

    async def release(self, name: str) -> None:
        if self.shared.holders.get(name) is self:
            del self.shared.holders[name]


async def test_with_a_lease_one_runner_applies_and_the_other_stands_by_then_takes_over(
    store: MemoryEventStore, tmp_path: Path
) -> None:
    events = random_events(400, seed=6)
    head = await append_all(store, events[:200])
    shared = SharedLease()
    dbs = [SqliteDatabase(tmp_path / "read.db", synchronous="OFF") for _ in range(2)]
    first = ProjectionRunner(store, dbs[0], [Counters()], lease=shared.for_runner())
    second = ProjectionRunner(
        store, dbs[1], [Counters()], lease=shared.for_runner(), lease_interval=0.02
    )
    try:
        await first.start()
        await first.wait_for("counters", head, timeout=5)
        await second.start()
        # The standby runner still answers wait_for, by polling the checkpoint table.
        head = await append_all(store, events[200:300])
        assert await second.wait_for("counters", head, timeout=5) == head
        assert [s.state for s in await second.status()] == ["standby"]
        await first.stop()
        head = await append_all(store, events[300:])
        await second.wait_for("counters", head, timeout=5)
        assert [s.state for s in await second.status()] == ["running"]
        await second.stop()
        assert await read_counts(dbs[0]) == replay(events)
    finally:
        for d in dbs:
            await d.close()


async def test_status_reports_lag_of_a_partially_caught_up_projection(
    store: MemoryEventStore, db: SqliteDatabase
) -> None:
    head = await append_all(store, random_events(10, seed=7))
    async with ProjectionRunner(store, db, [Counters()]) as runner:
        await runner.wait_for("counters", head, timeout=5)
    await append_all(store, random_events(5, seed=8))
    (oldest_unprocessed,) = await store.read_all(10, 1)
    now = oldest_unprocessed.recorded_at + 42.0
    (status,) = await projection_status(store, db, ["counters"], clock=lambda: now)
    assert (status.position, status.head, status.lag_events) == (10, 15, 5)
    assert status.lag_seconds == pytest.approx(42.0)
    assert status.state == "stopped"
    (never,) = await projection_status(store, db, ["never_ran"])
    assert (never.position, never.lag_events, never.state) == (0, 15, "stopped")


async def test_status_while_running_shows_rate_and_no_lag_when_caught_up(
    store: MemoryEventStore, db: SqliteDatabase
) -> None:
    head = await append_all(store, random_events(3_000, seed=9))
    async with ProjectionRunner(store, db, [Counters()], batch_size=100) as runner:
        await runner.wait_for("counters", head, timeout=10)
        (status,) = await runner.status()
    assert (status.position, status.head, status.lag_events) == (head, head, 0)
    assert status.lag_seconds == 0.0
    assert status.state == "running"
    assert status.events_per_second > 0


async def test_stop_finishes_the_current_batch_and_records_the_stopped_state(
    store: MemoryEventStore, db: SqliteDatabase
) -> None:
    head = await append_all(store, random_events(5_000, seed=10))
    runner = ProjectionRunner(store, db, [Counters()], batch_size=10)
    await runner.start()
    await asyncio.sleep(0.01)
    await runner.stop()
    position = await db.read(lambda tx: read_position(tx, "counters"))
    assert 0 < position < head
    assert position == runner.position("counters")
    (status,) = await runner.status()
    assert status.state == "stopped"
    events = await store.read_all(0, position)
    decoded = [store.codec.decode(e) for e in events]
    assert await read_counts(db) == replay(decoded)


def test_projection_names_must_be_unique(store: MemoryEventStore, db: SqliteDatabase) -> None:
    with pytest.raises(ConfigurationError):
        ProjectionRunner(store, db, [Counters(), Counters()])
