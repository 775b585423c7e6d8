"""The relay's report of itself in the read database (``cqrskit_relays``), without a
broker: it reaches the log's head and says stopped at the end; a relay standing by never
hides the one that publishes; a report that cannot be written costs one warning line,
never the relay; a row that says running but is not written any more reads "stalled"."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from cqrskit import RelayReport, relay_reports
from cqrskit._relays import ensure_relays_table, write_report
from cqrskit.backends.memory import LeaseRegistry, MemoryDatabase, MemoryEventStore, MemoryLease
from cqrskit.monitoring import STALE_AFTER
from cqrskit.relay import MemoryPublisher, Relay, RelayMessage
from cqrskit.relay import report as relay_report
from tests.unit.test_relay import PREFIX, codec, fill


@pytest.fixture
async def db() -> AsyncIterator[MemoryDatabase]:
    database = MemoryDatabase()
    await database.write(ensure_relays_table)
    yield database
    await database.close()


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Report progress every 50 ms rather than every second: the same logic, sooner."""
    monkeypatch.setattr(relay_report, "PROGRESS", 0.05)


async def reported(
    store: MemoryEventStore,
    db: MemoryDatabase,
    check: Callable[[RelayReport], bool],
    timeout: float = 5.0,
) -> RelayReport:
    """The one relay's report once ``check`` holds for it."""
    async with asyncio.timeout(timeout):
        while True:
            found = await relay_reports(store, db)
            if found and check(found[0]):
                assert len(found) == 1, found
                return found[0]
            await asyncio.sleep(0.01)


def running(stop: asyncio.Event, *relays: Relay) -> Callable[[], Awaitable[None]]:
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]

    async def stopped() -> None:
        stop.set()
        await asyncio.gather(*tasks)

    return stopped


async def test_the_report_follows_the_relay_to_the_head_and_says_when_it_stops(
    db: MemoryDatabase,
) -> None:
    store = MemoryEventStore(codec())
    await fill(store, 120)
    relay = Relay(
        store, MemoryPublisher("NOTES"), PREFIX, batch_size=50, report_to=db, lease_interval=0.05
    )
    stop = running(asyncio.Event(), relay)
    first = await reported(store, db, lambda r: r.position == 120)
    assert (first.stream, first.head, first.lag_events, first.lag_seconds) == ("NOTES", 120, 0, 0)
    assert first.state == "running"
    assert relay.reporter is not None
    assert first.holder == relay.reporter.holder
    await fill(store, 30, start=120)
    later = await reported(store, db, lambda r: r.position == 150)
    assert (later.head, later.lag_events, later.state) == (150, 0, "running")
    await stop()
    await fill(store, 5, start=150)
    last = await reported(store, db, lambda r: r.state == "stopped")
    assert (last.position, last.head, last.lag_events) == (150, 155, 5)
    assert last.lag_seconds is not None
    assert last.lag_seconds >= 0


async def test_a_relay_standing_by_does_not_hide_the_one_that_publishes(
    db: MemoryDatabase,
) -> None:
    store = MemoryEventStore(codec())
    await fill(store, 40)
    stored: list[RelayMessage] = []
    registry = LeaseRegistry()
    relays = [
        Relay(store, MemoryPublisher(stored=stored), PREFIX, batch_size=7, report_to=db,
              lease=MemoryLease(registry), lease_interval=0.01)
        for _ in range(2)
    ]  # fmt: skip
    for name, relay in zip("ab", relays, strict=True):
        assert relay.reporter is not None
        relay.reporter.holder = name  # two processes, as far as the row can tell
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(r.run(s)) for r, s in zip(relays, stops, strict=True)]
    first = await reported(store, db, lambda r: r.position == 40)
    active = next(i for i, r in enumerate(relays) if r.state == "relaying")
    assert first.holder == "ab"[active]
    await asyncio.sleep(0.1)  # the other one has stood by meanwhile, reported nothing over it
    assert sorted(r.state for r in relays) == ["relaying", "standby"]
    assert (await reported(store, db, lambda r: True)).state == "running"

    stops[1 - active].set()  # the one standing by stops: still running, as reported
    await tasks[1 - active]
    assert (await reported(store, db, lambda r: True)).holder == "ab"[active]
    stops[active].set()
    await tasks[active]
    last = await reported(store, db, lambda r: True)
    assert (last.state, last.holder, last.position) == ("stopped", "ab"[active], 40)


async def test_a_report_that_cannot_be_written_costs_one_warning_not_the_relay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryEventStore(codec())
    await fill(store, 100)
    gone = MemoryDatabase()
    await gone.close()  # every report fails
    publisher = MemoryPublisher()
    relay = Relay(store, publisher, PREFIX, batch_size=10, report_to=gone)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="cqrskit.relay"):
        task = asyncio.create_task(relay.run(stop))
        async with asyncio.timeout(5):
            while len(publisher.stored) < 100:  # noqa: ASYNC110 (a state to watch)
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)  # several reports due meanwhile
        stop.set()
        await task
    lines = [r.getMessage() for r in caplog.records if r.name == "cqrskit.relay"]
    assert lines == [f"relay EVENTS: could not report to the read database: database {gone.name}"
                     " is closed"]  # fmt: skip
    assert relay.published == 100


async def test_a_row_that_stops_being_written_reads_stalled(db: MemoryDatabase) -> None:
    store = MemoryEventStore(codec())
    await fill(store, 10)
    now = time.time()
    old = now - STALE_AFTER - 1

    async def write(stream: str, state: str, at: float, holder: str = "h:1") -> None:
        stale_before = now - STALE_AFTER
        await db.write(
            lambda tx: write_report(tx, stream, 8, state, at, holder, stale_before=stale_before)
        )

    await write("A", "running", old)
    await write("B", "waiting", old)
    await write("C", "stopped", old)
    await write("D", "running", now - 1)
    states = {r.stream: (r.state, r.lag_events) for r in await relay_reports(store, db)}
    assert states == {
        "A": ("stalled", 2), "B": ("stalled", 2), "C": ("stopped", 2), "D": ("running", 2),
    }  # fmt: skip

    # Another process standing by: it writes over a stalled row, not over a live one.
    await write("A", "standby", now, holder="h:2")
    await write("D", "standby", now, holder="h:2")
    states = {r.stream: (r.state, r.holder) for r in await relay_reports(store, db)}
    assert states["A"] == ("standby", "h:2")
    assert states["D"] == ("running", "h:1")


async def test_no_report_no_relays(db: MemoryDatabase) -> None:
    assert await relay_reports(MemoryEventStore(codec()), db) == []


async def test_progress_at_most_once_a_second_and_a_heartbeat_while_idle(
    db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_report, "PROGRESS", 1.0)
    clock = [1000.0]
    reporter = relay_report.Reporter(db, "S", holder="h:1", clock=lambda: clock[0])
    store = MemoryEventStore(codec())

    async def row_after(at: float, state: str, position: int | None) -> tuple[int | None, float]:
        clock[0] = 1000.0 + at
        await reporter.report(state, position)
        (found,) = await relay_reports(store, db, clock=lambda: clock[0])
        return found.position, round(found.updated_at - 1000.0, 3)

    assert await row_after(0.0, "running", 10) == (10, 0.0)
    assert await row_after(0.5, "running", 11) == (10, 0.0)  # progress: not within a second
    assert await row_after(1.0, "running", 11) == (11, 1.0)
    assert await row_after(5.9, "running", 11) == (11, 1.0)
    assert await row_after(6.0, "running", 11) == (11, 6.0)  # the heartbeat
    assert await row_after(6.1, "waiting", None) == (11, 6.1)  # a change: at once
    assert await row_after(6.2, "standby", None) == (11, 6.2)
    assert await row_after(60.0, "standby", None) == (11, 6.2)  # standing by: no heartbeat
