"""Blue/green rebuild on SQLite files while the live projection serves and applies."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cqrskit import ProjectionError, RecordedEvent, SqlTx
from cqrskit.backends.sqlite import SqliteDatabase, SqliteEventStore
from cqrskit.checkpoints import ensure_table, read_position
from cqrskit.monitoring import projection_status
from cqrskit.projection import handles
from cqrskit.rebuild import RebuildProgress, rebuild
from cqrskit.runner import ProjectionRunner
from tests.integration._projection_child import (
    Counters,
    Incremented,
    Noted,
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


@pytest.fixture
async def other_db(db: SqliteDatabase) -> AsyncIterator[SqliteDatabase]:
    """The same read file through other connections: as a `rebuild` CLI process would."""
    database = SqliteDatabase(db.path)
    yield database
    await database.close()


async def logged_counts(store: SqliteEventStore) -> dict[str, tuple[int, int]]:
    """A fresh replay of the whole log, computed without the runner."""
    head = await store.head_position()
    return replay(store.codec.decode(e) for e in await store.read_all(0, head))


def leftovers(db: SqliteDatabase) -> list[Path]:
    return sorted(db.path.parent.glob(f"{db.path.name}.rebuild-*"))


async def test_rebuild_during_live_appends_swaps_in_exactly_the_replayed_model(
    store: SqliteEventStore, db: SqliteDatabase, other_db: SqliteDatabase
) -> None:
    await append_all(store, [*random_events(6_000, seed=21), Incremented("frozen", 5)])
    runner = ProjectionRunner(store, db, [Counters()], batch_size=50)
    await runner.start()
    await runner.wait_for("counters", await store.head_position(), timeout=20)
    # Damage the live model where no new event will repair it: only the rebuild can.
    await db.write(lambda tx: tx.execute("UPDATE counters SET value = -1 WHERE id = 'frozen'"))

    appending = True
    seen: list[tuple[int, int, int]] = []

    async def append_meanwhile() -> None:
        i = 0
        while appending:
            await store.append(f"live-{i % 3}", random_events(25, seed=1000 + i))
            i += 1
            await asyncio.sleep(0.002)

    def query(tx: SqlTx) -> tuple[int, int, int]:
        (applied,) = tx.fetchone("SELECT coalesce(sum(events), 0) FROM counters") or (0,)
        frozen = tx.fetchone("SELECT value FROM counters WHERE id = 'frozen'")
        return read_position(tx, "counters"), applied, frozen[0] if frozen else 0

    async def query_meanwhile() -> None:
        while appending:
            seen.append(await db.read(query))
            await asyncio.sleep(0.001)

    tasks = [asyncio.ensure_future(append_meanwhile()), asyncio.ensure_future(query_meanwhile())]
    progress: list[RebuildProgress] = []
    try:
        result = await rebuild(
            store, other_db, Counters(), on_progress=progress.append, batch_size=200
        )
        swapped_at = len(seen)
        await asyncio.sleep(0.1)  # the live runner goes on after the swap
    finally:
        appending = False
        await asyncio.gather(*tasks)
    head = await store.head_position()
    await runner.wait_for("counters", head, timeout=20)
    await runner.stop()

    assert result.position > 6_001
    assert result.events >= result.position
    assert await read_counts(db) == await logged_counts(store)
    assert (await read_counts(db))["frozen"] == (5, 1)
    assert leftovers(db) == []
    # Queries went on during the rebuild, from the old (damaged) tables, each one a
    # consistent snapshot: rows and checkpoint from the same moment; then the new tables.
    assert swapped_at > 5
    assert all(frozen == -1 for _, _, frozen in seen[: swapped_at // 2])
    assert seen[-1][2] == 5
    positions = [p for p, _, _ in seen]
    assert positions == sorted(positions)  # the swap never moved the checkpoint back
    logged = [store.codec.decode(e) for e in await store.read_all(0, head)]
    handled = [0]
    for event in logged:
        handled.append(handled[-1] + (not isinstance(event, Noted)))
    assert all(applied == handled[p] for p, applied, _ in seen)


async def test_rebuild_streams_the_log_in_batches_and_reports_progress(
    store: SqliteEventStore, db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = await append_all(store, random_events(2_500, seed=22))
    limits: list[int] = []
    read_all = store.read_all

    async def spy(from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        limits.append(limit)
        return await read_all(from_position, limit)

    monkeypatch.setattr(store, "read_all", spy)
    progress: list[RebuildProgress] = []
    result = await rebuild(store, db, Counters(), on_progress=progress.append, batch_size=300)
    assert set(limits) == {300}
    assert len(limits) >= head // 300
    assert (result.position, result.events, result.swap_attempts) == (head, head, 1)
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    assert progress[-1].done == progress[-1].total == head
    assert all(p.total == head for p in progress)
    assert progress[-1].events_per_second > 0
    assert await read_counts(db) == await logged_counts(store)
    assert await db.read(lambda tx: read_position(tx, "counters")) == head
    assert leftovers(db) == []
    indexes = await db.read(
        lambda tx: tx.fetchall("SELECT name FROM sqlite_master WHERE tbl_name = 'counters'")
    )
    assert ("counters_by_value",) in indexes  # the swap brought the indexes along


async def test_a_live_runner_ahead_at_swap_time_is_caught_up_with_under_the_lock(
    store: SqliteEventStore, db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = await append_all(store, random_events(1_000, seed=23))
    async with ProjectionRunner(store, db, [Counters()]) as runner:
        await runner.wait_for("counters", head, timeout=10)
    read_all = store.read_all
    hidden = True
    live_writer_locked: list[bool] = []

    def live_write_lock_is_taken() -> bool:
        conn = sqlite3.connect(db.path, timeout=0)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            return "locked" in str(exc)
        finally:
            conn.close()
        return False

    async def lagging(from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        # The first time round the rebuild sees a log ending at 600, as if it had read
        # before the last appends, while the live model has processed all 1,000.
        nonlocal hidden
        if hidden and from_position >= 600:
            hidden = False
            return []
        if not hidden:
            live_writer_locked.append(live_write_lock_is_taken())
        return await read_all(from_position, min(limit, 600 - from_position) if hidden else limit)

    monkeypatch.setattr(store, "read_all", lagging)
    result = await rebuild(store, db, Counters(), batch_size=100)
    assert (result.position, result.swap_attempts) == (head, 1)
    # The final catch-up (600 -> 1,000) ran while the swap held the live write lock.
    assert live_writer_locked
    assert all(live_writer_locked)
    assert await read_counts(db) == await logged_counts(store)


class Fragile(Counters):
    @handles(Incremented)
    def on_incremented(self, tx: SqlTx, event: Incremented, record: RecordedEvent) -> None:
        if record.position == 777:
            raise ValueError("bad data")
        super().on_incremented(tx, event, record)


async def test_a_failing_rebuild_leaves_the_live_model_untouched(
    store: SqliteEventStore, db: SqliteDatabase
) -> None:
    head = await append_all(store, [Incremented("c", 1)] * 1_000)
    async with ProjectionRunner(store, db, [Counters()]) as runner:
        await runner.wait_for("counters", head, timeout=10)
    with pytest.raises(ProjectionError) as caught:
        await rebuild(store, db, Fragile(), batch_size=100)
    assert (caught.value.position, caught.value.event_type) == (777, "Incremented")
    assert await read_counts(db) == {"c": (1_000, 1_000)}
    assert await db.read(lambda tx: read_position(tx, "counters")) == head
    (status,) = await projection_status(store, db, ["counters"])
    assert status.state == "stopped"
    assert leftovers(db) == []


async def test_status_shows_rebuilding_while_a_rebuild_runs(
    store: SqliteEventStore, db: SqliteDatabase, other_db: SqliteDatabase
) -> None:
    head = await append_all(store, random_events(5_000, seed=24))
    states: list[str] = []
    running = True
    await db.write(ensure_table)  # the file exists, in WAL mode, before two connections race

    async def watch() -> None:
        while running:
            (status,) = await projection_status(store, other_db, ["counters"])
            states.append(status.state)
            await asyncio.sleep(0.002)

    watcher = asyncio.ensure_future(watch())
    try:
        await rebuild(store, db, Counters(), batch_size=50, heartbeat_interval=0.0)
    finally:
        running = False
        await watcher
    assert "rebuilding" in states
    (status,) = await projection_status(store, db, ["counters"])
    assert (status.state, status.position, status.lag_events) == ("stopped", head, 0)
