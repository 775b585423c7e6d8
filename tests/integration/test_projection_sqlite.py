"""The runner on SQLite files: the event store in one, the read models in another."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cqrskit.backends.sqlite import SqliteDatabase, SqliteEventStore
from cqrskit.checkpoints import ensure_table, read_position
from cqrskit.monitoring import projection_status
from cqrskit.runner import ProjectionRunner
from cqrskit.sql import SqlTx
from tests.integration import _projection_child as child
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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    events = await SqliteEventStore.open(tmp_path / "write.db", counters_codec())
    yield events
    await events.close()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "read.db")
    yield database
    await database.close()


async def test_follows_concurrent_appends_to_exactly_the_replayed_model(
    store: SqliteEventStore, db: SqliteDatabase
) -> None:
    events = random_events(3_000, seed=11)
    await append_all(store, events[:1_000])
    async with ProjectionRunner(store, db, [Counters()], batch_size=50) as runner:
        # Appends race the runner: many small appends from several writers.
        chunks = [events[i : i + 20] for i in range(1_000, 3_000, 20)]
        results = await asyncio.gather(
            *(store.append(f"w-{i % 5}", chunk) for i, chunk in enumerate(chunks))
        )
        head = max(r.position for r in results)
        assert await runner.wait_for("counters", head, timeout=20) == head
    logged = [store.codec.decode(e) for e in await store.read_all(0, 10_000)]
    assert await read_counts(db) == replay(logged)
    assert sorted(map(repr, logged)) == sorted(map(repr, events))


async def test_a_query_reads_rows_and_position_from_one_snapshot(
    store: SqliteEventStore, db: SqliteDatabase
) -> None:
    events = random_events(1_500, seed=12)
    head = await append_all(store, events, chunk=40)
    handled_up_to = [0]
    for event in events:
        handled_up_to.append(handled_up_to[-1] + (not isinstance(event, Noted)))

    def query(tx: SqlTx) -> tuple[int, int]:
        (applied,) = tx.fetchone("SELECT coalesce(sum(events), 0) FROM counters") or (0,)
        return read_position(tx, "counters"), applied

    seen: list[tuple[int, int]] = []
    async with ProjectionRunner(store, db, [Counters()], batch_size=7) as runner:
        done = asyncio.ensure_future(runner.wait_for("counters", head, timeout=30))
        while not done.done():
            seen.append(await db.read(query))
        await done
    assert len({position for position, _ in seen}) > 10  # queries really raced batches
    for position, applied in seen:
        assert applied == handled_up_to[position]


async def test_wait_for_sees_a_projection_run_by_another_process(
    store: SqliteEventStore, db: SqliteDatabase, tmp_path: Path
) -> None:
    head = await append_all(store, random_events(2_000, seed=13))
    await db.write(ensure_table)  # the file exists, in WAL mode, before the child opens it
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        child.__file__,
        str(store.path),
        str(db.path),
        "25",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        # This runner runs no projection: wait_for polls the checkpoint table.
        observer = ProjectionRunner(store, db, [])
        assert await observer.wait_for("counters", head, timeout=30) == head
    finally:
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, out
    assert await read_counts(db) == replay(random_events(2_000, seed=13))
    (status,) = await projection_status(store, db, ["counters"])
    assert (status.position, status.lag_events, status.state) == (head, 0, "stopped")


async def test_status_of_a_partially_caught_up_projection(
    store: SqliteEventStore, db: SqliteDatabase
) -> None:
    first = await append_all(store, [Incremented("a", 1)] * 30)
    async with ProjectionRunner(store, db, [Counters()]) as runner:
        await runner.wait_for("counters", first, timeout=5)
    head = await append_all(store, [Reset("a"), Noted("n"), Incremented("b", 2)] * 4)
    (oldest,) = await store.read_all(first, 1)
    now = oldest.recorded_at + 3.5
    (status,) = await projection_status(store, db, ["counters"], clock=lambda: now)
    assert (status.position, status.head, status.lag_events) == (30, head, head - 30)
    assert head - 30 == 12
    assert status.lag_seconds == pytest.approx(3.5)
    assert status.to_dict()["lag_events"] == 12


async def test_a_read_database_failure_is_retried_without_an_error_state(
    store: SqliteEventStore, db: SqliteDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    head = await append_all(store, random_events(100, seed=14))
    async with ProjectionRunner(store, db, [Counters()], idle_timeout=0.05) as runner:
        await runner.wait_for("counters", head, timeout=5)
        # The checkpoint table vanishes (an operator's mistake, a restored backup...):
        # every batch transaction fails, through no handler's fault.
        saved = await db.write(lambda tx: tx.fetchall("SELECT * FROM cqrskit_projections"))
        await db.write(lambda tx: tx.execute("DROP TABLE cqrskit_projections"))
        head = await append_all(store, random_events(50, seed=15))
        for _ in range(200):
            if any("read database failed" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.01)
        assert runner.error("counters") is None
        assert [s.state for s in await runner.status()] == ["running"]

        def restore(tx: SqlTx) -> None:
            ensure_table(tx)
            tx.executemany(f"INSERT INTO cqrskit_projections VALUES ({', '.join('?' * 12)})", saved)

        await db.write(restore)
        assert await runner.wait_for("counters", head, timeout=10) == head
    events = random_events(100, seed=14) + random_events(50, seed=15)
    assert await read_counts(db) == replay(events)
    assert any("read database failed" in r.getMessage() for r in caplog.records)
