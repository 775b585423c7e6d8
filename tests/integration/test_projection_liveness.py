"""A reader of the checkpoint table can tell a live projection from one whose process died."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cqrskit import runner as runner_module
from cqrskit.backends.memory import MemoryEventStore
from cqrskit.backends.sqlite import SqliteDatabase
from cqrskit.checkpoints import read_rows
from cqrskit.monitoring import STALE_AFTER, projection_status
from cqrskit.runner import ProjectionRunner
from tests.integration._projection_child import Counters, counters_codec


async def test_idle_runner_heartbeats_and_a_dead_one_reads_as_stalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "HEARTBEAT_INTERVAL", 0.05)
    store = MemoryEventStore(counters_codec())
    db = SqliteDatabase(tmp_path / "read.db")
    runner = ProjectionRunner(store, db, [Counters()], idle_timeout=0.02)
    await runner.start()
    try:
        await asyncio.sleep(0.2)
        first = (await db.read(lambda tx: read_rows(tx, [Counters.name])))[Counters.name]
        await asyncio.sleep(0.3)
        later = (await db.read(lambda tx: read_rows(tx, [Counters.name])))[Counters.name]
        assert later.state == "running"
        assert first.updated_at is not None
        assert later.updated_at is not None
        assert later.updated_at > first.updated_at  # idle, yet it says it is alive

        [alive] = await projection_status(store, db, [Counters.name])
        assert alive.state == "running"
        # The same row read long after its last heartbeat: the process may be gone.
        [dead] = await projection_status(
            store, db, [Counters.name], clock=lambda: time.time() + STALE_AFTER + 5
        )
        assert dead.state == "stalled"
    finally:
        await runner.stop()
        await db.close()
    # A clean stop says so: stopped, never stalled.
    db = SqliteDatabase(tmp_path / "read.db")
    try:
        [stopped] = await projection_status(
            store, db, [Counters.name], clock=lambda: time.time() + STALE_AFTER + 5
        )
        assert stopped.state == "stopped"
    finally:
        await db.close()
