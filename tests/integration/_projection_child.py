"""A small counters domain for the projection tests, and a child process that projects it.

Run as a script (``python _projection_child.py EVENTS_DB READ_DB BATCH_SIZE``) it projects
the event log of ``EVENTS_DB`` into ``READ_DB`` until it has caught up with the head, then
exits 0. It prints ``started`` once its runner is running, so a parent can kill it while
it applies batches.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cqrskit import Codec, Event, Projection, RecordedEvent, SqlTx, handles
from cqrskit.backends.sqlite import SqliteDatabase
from cqrskit.eventstore import EventStore
from cqrskit.readside import ReadDatabase
from cqrskit.runner import ProjectionRunner


@dataclass(frozen=True)
class Incremented(Event):
    counter: str
    amount: int


@dataclass(frozen=True)
class Reset(Event):
    counter: str


@dataclass(frozen=True)
class Noted(Event):
    """Handled by no projection here: the runner must skip it without decoding it."""

    text: str


def counters_codec() -> Codec:
    return Codec([Incremented, Reset, Noted])


class Counters(Projection):
    """``counters(id, value, events)``: ``events`` counts every event applied to a counter,
    so applying one twice shows even when it is a reset."""

    name = "counters"
    tables = ("counters",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS counters"
            " (id TEXT PRIMARY KEY, value INTEGER NOT NULL, events INTEGER NOT NULL)"
        )
        tx.execute("CREATE INDEX IF NOT EXISTS counters_by_value ON counters (value)")

    @handles(Incremented)
    def on_incremented(self, tx: SqlTx, event: Incremented, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO counters (id, value, events) VALUES (?, ?, 1) ON CONFLICT (id)"
            " DO UPDATE SET value = value + excluded.value, events = events + 1",
            (event.counter, event.amount),
        )

    @handles(Reset)
    def on_reset(self, tx: SqlTx, event: Reset, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO counters (id, value, events) VALUES (?, 0, 1) ON CONFLICT (id)"
            " DO UPDATE SET value = 0, events = events + 1",
            (event.counter,),
        )


Counts = dict[str, tuple[int, int]]


def random_events(n: int, seed: int, counters: int = 50) -> list[Event]:
    """``n`` events: mostly increments, some resets, some notes (for skipping)."""
    rng = random.Random(seed)
    events: list[Event] = []
    for _ in range(n):
        roll = rng.random()
        counter = f"c{rng.randrange(counters)}"
        if roll < 0.85:
            events.append(Incremented(counter, rng.randint(1, 9)))
        elif roll < 0.9:
            events.append(Reset(counter))
        else:
            events.append(Noted("x" * rng.randrange(20)))
    return events


def replay(events: Iterable[Event]) -> Counts:
    """The read model computed independently of the runner, in plain Python."""
    counts: Counts = {}
    for event in events:
        if isinstance(event, Incremented):
            value, n = counts.get(event.counter, (0, 0))
            counts[event.counter] = (value + event.amount, n + 1)
        elif isinstance(event, Reset):
            _, n = counts.get(event.counter, (0, 0))
            counts[event.counter] = (0, n + 1)
    return counts


async def append_all(store: EventStore, events: list[Event], chunk: int = 100) -> int:
    """Append in chunks to a few streams; returns the head position."""
    position = 0
    for i in range(0, len(events), chunk):
        result = await store.append(f"counters-{i // chunk % 7}", events[i : i + chunk])
        position = result.position
    return position


async def read_counts(db: ReadDatabase) -> Counts:
    rows = await db.read(lambda tx: tx.fetchall("SELECT id, value, events FROM counters"))
    return {r[0]: (r[1], r[2]) for r in rows}


async def _main(events_db: Path, read_db: Path, batch_size: int) -> None:
    from cqrskit.backends.sqlite import SqliteEventStore

    store = await SqliteEventStore.open(events_db, counters_codec())
    db = SqliteDatabase(read_db)
    try:
        head = await store.head_position()
        runner = ProjectionRunner(store, db, [Counters()], batch_size=batch_size)
        async with runner:
            print("started", flush=True)
            await runner.wait_for("counters", head, timeout=120)
    finally:
        await db.close()
        await store.close()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(_main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
