"""SIGKILL a projecting process at random moments: no event is ever lost or applied twice."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from cqrskit.backends.sqlite import SqliteDatabase, SqliteEventStore
from tests.integration import _projection_child as child
from tests.integration._kills import kill_after_progress
from tests.integration._projection_child import (
    append_all,
    counters_codec,
    random_events,
    read_counts,
    replay,
)

pytestmark = pytest.mark.slow

EVENTS = 20_000
KILLS = 20


def checkpoint(read_db: Path) -> int:
    conn = sqlite3.connect(read_db)
    try:
        row = conn.execute("SELECT position FROM cqrskit_projections WHERE name = 'counters'")
        found = row.fetchone()
    except sqlite3.OperationalError:  # killed before the table was first created
        return 0
    finally:
        conn.close()
    return 0 if found is None else int(found[0])


async def at(read_db: Path) -> int:
    return checkpoint(read_db)


async def spawn(write_db: Path, read_db: Path, batch_size: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        child.__file__,
        str(write_db),
        str(read_db),
        str(batch_size),
        stdout=asyncio.subprocess.PIPE,
    )


async def test_sigkill_at_random_points_never_loses_or_doubles_an_event(tmp_path: Path) -> None:
    write_db, read_db = tmp_path / "write.db", tmp_path / "read.db"
    events = random_events(EVENTS, seed=2026)
    store = await SqliteEventStore.open(write_db, counters_codec(), synchronous="NORMAL")
    head = await append_all(store, events, chunk=200)
    await store.close()
    assert head == EVENTS

    rng = random.Random(99)
    killed_at: list[int] = []
    while len(killed_at) < KILLS:
        # Small batches (many commits) so that kills land in every phase of a batch.
        process = await spawn(write_db, read_db, rng.choice([2, 3, 5]))
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line == b"started\n", line
        # At most EVENTS / (2 * KILLS) a run (plus what the pause lets through): the
        # kills all land before the end of the log, however fast the machine.
        progress = rng.randint(0, EVENTS // (2 * KILLS))
        await kill_after_progress(process, lambda: at(read_db), progress, rng.uniform(0, 0.005))
        await process.communicate()
        assert process.returncode == -signal.SIGKILL, "the child finished before its kill"
        killed_at.append(checkpoint(read_db))

    # The kills hit the run at many different points, and progress was kept across them.
    assert len(set(killed_at)) >= KILLS // 2
    assert killed_at == sorted(killed_at)
    assert 0 < killed_at[-1] < EVENTS

    process = await spawn(write_db, read_db, 500)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out
    assert out.splitlines()[-1] == b"done"

    db = SqliteDatabase(read_db)
    try:
        assert await read_counts(db) == replay(events)
    finally:
        await db.close()
    assert checkpoint(read_db) == EVENTS
