"""A ledger projection that cannot apply an event twice, and a child process that projects it.

:class:`Ledger` writes one row per event it handles, keyed by the event's position (a
primary key: applying an event a second time fails its batch, and the projection stops in
``error``), and keeps per-counter totals as the counters projection does.

Run as a script (``python _readside_durability_child.py BACKEND EVENTS READ BATCH_SIZE
DURABILITY``, BACKEND ``sqlite`` with two file paths or ``postgresql`` with two URLs) it
projects the log into the read database with that durability until it has caught up with
the head, then prints ``done`` and exits 0. It first prints what the read database's write
transactions run with (``synchronous=N`` on SQLite, ``synchronous_commit=X`` on
PostgreSQL), then ``started`` once its runner runs, so a parent can kill it mid-catch-up.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from cqrskit import Event, Projection, RecordedEvent, SqlTx, handles
from cqrskit.connect import check_read_durability
from cqrskit.eventstore import EventStore
from cqrskit.readside import ReadDatabase
from cqrskit.runner import ProjectionRunner
from tests.integration._projection_child import Incremented, Reset, counters_codec, replay

LEDGER = "ledger"

Totals = dict[str, tuple[int, int]]


class Ledger(Projection):
    """``ledger(position PRIMARY KEY, counter)``: one row per handled event, so a second
    application of any event is a UNIQUE violation; ``ledger_totals(id, value, events)``."""

    name = LEDGER
    tables = ("ledger", "ledger_totals")

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS ledger (position BIGINT PRIMARY KEY, counter TEXT NOT NULL)"
        )
        tx.execute(
            "CREATE TABLE IF NOT EXISTS ledger_totals"
            " (id TEXT PRIMARY KEY, value BIGINT NOT NULL, events BIGINT NOT NULL)"
        )

    def _entry(self, tx: SqlTx, record: RecordedEvent, counter: str) -> None:
        tx.execute(
            "INSERT INTO ledger (position, counter) VALUES (?, ?)", (record.position, counter)
        )

    @handles(Incremented)
    def on_incremented(self, tx: SqlTx, event: Incremented, record: RecordedEvent) -> None:
        self._entry(tx, record, event.counter)
        tx.execute(
            "INSERT INTO ledger_totals (id, value, events) VALUES (?, ?, 1) ON CONFLICT (id)"
            " DO UPDATE SET value = ledger_totals.value + excluded.value,"
            " events = ledger_totals.events + 1",
            (event.counter, event.amount),
        )

    @handles(Reset)
    def on_reset(self, tx: SqlTx, event: Reset, record: RecordedEvent) -> None:
        self._entry(tx, record, event.counter)
        tx.execute(
            "INSERT INTO ledger_totals (id, value, events) VALUES (?, 0, 1) ON CONFLICT (id)"
            " DO UPDATE SET value = 0, events = ledger_totals.events + 1",
            (event.counter,),
        )


def expected(events: Sequence[Event]) -> tuple[list[int], Totals]:
    """The ledger's positions and totals computed without the runner (positions start at 1
    and follow the order of appending)."""
    positions = [i for i, e in enumerate(events, 1) if isinstance(e, Incremented | Reset)]
    return positions, replay(events)


async def read_ledger(db: ReadDatabase) -> tuple[list[int], Totals]:
    def read(tx: SqlTx) -> tuple[list[int], Totals]:
        positions = [int(r[0]) for r in tx.fetchall("SELECT position FROM ledger ORDER BY 1")]
        rows = tx.fetchall("SELECT id, value, events FROM ledger_totals")
        return positions, {str(r[0]): (int(r[1]), int(r[2])) for r in rows}

    return await db.read(read)


def durability_setting(tx: SqlTx, backend: str) -> str:
    """What a write transaction on ``tx`` runs with, as ``name=value``."""
    if backend == "sqlite":
        row = tx.fetchone("PRAGMA synchronous")
        return f"synchronous={row[0] if row else None}"
    row = tx.fetchone("SHOW synchronous_commit")
    return f"synchronous_commit={row[0] if row else None}"


async def open_backend(
    backend: str, events: str, read: str, durability: str
) -> tuple[EventStore, ReadDatabase]:
    """The event store at ``events`` (always synchronous) and the read database at ``read``."""
    level = check_read_durability(durability)
    if backend == "sqlite":
        from cqrskit.backends.sqlite import SqliteDatabase, SqliteEventStore

        store: EventStore = await SqliteEventStore.open(Path(events), counters_codec())
        return store, SqliteDatabase(Path(read), durability=level)
    from cqrskit.backends.postgres import PostgresDatabase, PostgresEventStore

    store = await PostgresEventStore.open(events, counters_codec())
    return store, PostgresDatabase(read, durability=level, pool_max=2)


async def _main(argv: Iterable[str]) -> None:
    backend, events, read, batch, durability = argv
    store, db = await open_backend(backend, events, read, durability)
    try:
        head = await store.head_position()
        print(await db.write(lambda tx: durability_setting(tx, backend)), flush=True)
        runner = ProjectionRunner(store, db, [Ledger()], batch_size=int(batch))
        async with runner:
            print("started", flush=True)
            await runner.wait_for(LEDGER, head, timeout=120)
    finally:
        await db.close()
        await store.close()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
