"""Read models know which log they follow, and recover when it is not this one (issue 14,
findings 2 and 10): a restored `write.db` with `read.db` kept, an empty `write.db`, a
damaged `read.db` or `write.db`; and `rebuild` works from any state of the read side.
Real SQLite files throughout."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from cqrskit import DamagedDatabase
from cqrskit.backends.sqlite import SqliteDatabase, SqliteEventStore
from cqrskit.monitoring import projection_status
from cqrskit.rebuild import rebuild
from cqrskit.runner import ProjectionRunner
from tests.integration._projection_child import (
    Counters,
    append_all,
    counters_codec,
    random_events,
    read_counts,
    replay,
)


async def logged(store: SqliteEventStore) -> dict[str, tuple[int, int]]:
    head = await store.head_position()
    return replay(store.codec.decode(e) for e in await store.read_all(0, head))


def backup(source: Path, target: Path) -> None:
    """As docs/operations.md says: SQLite's online backup of write.db."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


async def follow(data: Path, appended: int = 0, seed: int = 0) -> tuple[int, dict[str, object]]:
    """Open write.db/read.db, append ``appended`` events, run the projection until it has
    applied the head; return the head and whether the read model equals a replay."""
    store = await SqliteEventStore.open(data / "write.db", counters_codec())
    db = SqliteDatabase(data / "read.db")
    try:
        runner = ProjectionRunner(store, db, [Counters()], batch_size=7)
        await runner.start()
        try:
            if appended:
                await append_all(store, random_events(appended, seed=seed))
            head = await store.head_position()
            await runner.wait_for("counters", head, timeout=20)
            assert runner.error("counters") is None
            return head, {"model": await read_counts(db), "replay": await logged(store)}
        finally:
            await runner.stop()
    finally:
        await store.close()
        await db.close()


async def test_a_restored_write_db_is_noticed_and_new_writes_become_readable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await follow(tmp_path, appended=40, seed=1)
    backup(tmp_path / "write.db", tmp_path / "backup.db")
    head, _ = await follow(tmp_path, appended=60, seed=2)
    assert head == 100
    shutil.copy(tmp_path / "backup.db", tmp_path / "write.db")  # read.db kept: at 100

    # Before any runner takes it: status says why, with the cause, not "lag 0".
    store = await SqliteEventStore.open(tmp_path / "write.db", counters_codec())
    db = SqliteDatabase(tmp_path / "read.db")
    try:
        (status,) = await projection_status(store, db, ["counters"])
    finally:
        await store.close()
        await db.close()
    assert status.state == "error"
    assert status.error is not None
    assert "beyond the log, which ends at 40" in status.error.message

    # A new write after the restore (position 41) is applied and readable.
    head, found = await follow(tmp_path, appended=1, seed=3)
    assert head == 41
    assert found["model"] == found["replay"]
    assert "does not follow this log" in caplog.text


async def test_a_restored_log_written_past_the_checkpoint_is_noticed(tmp_path: Path) -> None:
    """The head alone cannot tell: the restored log already has more events than the read
    model's checkpoint, but not the ones it applied."""
    await follow(tmp_path, appended=30, seed=4)
    backup(tmp_path / "write.db", tmp_path / "backup.db")
    await follow(tmp_path, appended=20, seed=5)  # read.db at 50
    shutil.copy(tmp_path / "backup.db", tmp_path / "write.db")
    store = await SqliteEventStore.open(tmp_path / "write.db", counters_codec())
    try:
        await append_all(store, random_events(35, seed=6))  # other events at 31..65
    finally:
        await store.close()
    head, found = await follow(tmp_path)
    assert head == 65
    assert found["model"] == found["replay"]


async def test_an_empty_write_db_empties_the_read_models(tmp_path: Path) -> None:
    await follow(tmp_path, appended=25, seed=7)
    (tmp_path / "write.db").unlink()
    head, found = await follow(tmp_path, appended=3, seed=8)
    assert head == 3
    assert found["model"] == found["replay"]


async def test_rebuild_succeeds_when_the_live_model_is_beyond_the_log(tmp_path: Path) -> None:
    await follow(tmp_path, appended=20, seed=9)
    backup(tmp_path / "write.db", tmp_path / "backup.db")
    await follow(tmp_path, appended=30, seed=10)
    shutil.copy(tmp_path / "backup.db", tmp_path / "write.db")  # live checkpoint 50, head 20
    store = await SqliteEventStore.open(tmp_path / "write.db", counters_codec())
    db = SqliteDatabase(tmp_path / "read.db")
    try:
        result = await rebuild(store, db, Counters(), batch_size=8, max_swap_attempts=3)
        assert result.position == 20
        assert await read_counts(db) == await logged(store)
        (status,) = await projection_status(store, db, ["counters"])
        assert status.state != "error"
        assert status.position == 20
    finally:
        await store.close()
        await db.close()


def scribble(path: Path, offset: int, length: int = 4096) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(b"\xa5" * length)


async def test_a_read_db_that_is_not_a_database_is_set_aside_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await follow(tmp_path, appended=30, seed=11)
    scribble(tmp_path / "read.db", 0, 100)  # the header
    head, found = await follow(tmp_path, appended=2, seed=12)
    assert head == 32
    assert found["model"] == found["replay"]
    aside = await asyncio.to_thread(lambda: list(tmp_path.glob("read.db.damaged-*")))
    assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))]
    assert f"{tmp_path / 'read.db'}: the database file is damaged" in caplog.text


async def test_damaged_pages_in_read_db_are_found_at_open(tmp_path: Path) -> None:
    await follow(tmp_path, appended=3000, seed=13)
    size = (tmp_path / "read.db").stat().st_size
    assert size > 5 * 4096
    scribble(tmp_path / "read.db", 4096 * 2, 4096 * 2)  # pages past the schema
    db = SqliteDatabase(tmp_path / "read.db")
    try:
        with pytest.raises(DamagedDatabase, match=r"read\.db: the database file is damaged"):
            await db.read(lambda tx: tx.fetchall("SELECT 1"))
    finally:
        await db.close()
    head, found = await follow(tmp_path)
    assert head == 3000
    assert found["model"] == found["replay"]


async def test_damaged_pages_in_write_db_stop_the_projection_with_the_cause(
    tmp_path: Path,
) -> None:
    await follow(tmp_path, appended=3000, seed=14)
    (tmp_path / "read.db").unlink()  # replay from 0: reads every page of the log
    # Pages of the events and their indexes (the first dozen hold the schema and the small
    # tables that opening reads: damage there fails the open itself, with the same cause).
    scribble(tmp_path / "write.db", 4096 * 16, 4096 * 4)
    store = await SqliteEventStore.open(tmp_path / "write.db", counters_codec())
    db = SqliteDatabase(tmp_path / "read.db")
    try:
        runner = ProjectionRunner(store, db, [Counters()], batch_size=100)
        await runner.start()
        try:
            for _ in range(200):
                if runner.error("counters") is not None:
                    break
                await asyncio.sleep(0.05)
            error = runner.error("counters")
            assert error is not None, "the projection kept retrying a damaged log"
            assert "write.db: the database file is damaged" in str(error)
            (status,) = await runner.status()
            assert status.state == "error"
        finally:
            await runner.stop()
    finally:
        await store.close()
        await db.close()
