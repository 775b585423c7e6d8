"""SIGKILL the process that runs a projection while it retries or skips parked events:
nothing is lost, nothing applied twice, and the action is carried out by the next run."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from cqrskit import Action
from tests.integration import _ops_child as child
from tests.integration._ops_child import Deposited, Ledger

pytestmark = pytest.mark.slow

STREAMS = 8
PER_STREAM = 500  # after each stream's poison event: all parked behind it


async def spawn(directory: Path, delay: float = 0.0) -> asyncio.subprocess.Process:
    env = {**os.environ, "OPS_CHILD_DELAY": str(delay)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, child.__file__, str(directory), stdout=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line == b"started\n", line
    return proc


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def accounts(app: Ledger) -> dict[str, tuple[int, int]]:
    rows = await app.db.read(lambda tx: tx.fetchall("SELECT id, balance, events FROM accounts"))
    return {str(i): (int(b), int(n)) for i, b, n in rows}


async def settle(app: Ledger, action: Action, directory: Path, kills: int) -> tuple[Action, Action]:
    """Kill the runner ``kills`` times while it carries ``action`` out, then let it end;
    the action as the kills left it, and as it ended."""
    rng = random.Random(kills)
    for _ in range(kills):
        # A slow handler, and the kill once this run has applied something (then a little
        # later): it lands in the middle of the action, whatever the machine's speed.
        proc = await spawn(directory, delay=0.002)
        before = await app.operations.wait(action.id, 0)
        assert before is not None
        for _ in range(3000):
            now = await app.operations.wait(action.id, 0)
            assert now is not None
            if now.progress > before.progress or now.state != "pending":
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(rng.uniform(0, 0.05))
        await kill(proc)
    interrupted = await app.operations.wait(action.id, 0)
    assert interrupted is not None
    proc = await spawn(directory)
    try:
        done = await app.operations.wait(action.id, 120)
    finally:
        await kill(proc)
    assert done is not None
    return interrupted, done


async def test_sigkill_during_retry_and_skip_loses_and_repeats_nothing(tmp_path: Path) -> None:
    (tmp_path / "broken").touch()
    async with Ledger(f"sqlite:///{tmp_path}", run_projections=False) as app:
        for s in range(STREAMS):
            await app.append(f"acct-{s}", [Deposited(13)])
        for s in range(STREAMS):
            await app.append(f"acct-{s}", [Deposited(1 + i % 7) for i in range(PER_STREAM)])
        head = await app.store.head_position()

        proc = await spawn(tmp_path)  # parks everything: each stream held behind its 13
        try:
            await app.wait_for(["accounts"], head)
        finally:
            await kill(proc)
        assert await accounts(app) == {}
        parked = STREAMS * (PER_STREAM + 1)
        assert (await app.status())[0].parked == parked

        # The fix, then a retry of every stream, killed 5 times on its way.
        (tmp_path / "broken").unlink()
        asked = await app.operations.retry("accounts", by="test", wait=0)
        interrupted, done = await settle(app, asked, tmp_path, kills=5)
        assert interrupted.state == "pending"  # the kills did cut it short
        assert 0 < interrupted.progress < parked
        assert done.state == "done", done.result
        assert done.result == f"applied {parked} events"  # counted once, across the runs
        expected = 13 + sum(1 + i % 7 for i in range(PER_STREAM))
        assert await accounts(app) == {
            f"acct-{s}": (expected, PER_STREAM + 1) for s in range(STREAMS)
        }
        assert (await app.status())[0].parked == 0
        assert await app.operations.parked("accounts") == []

        # Park again, then a skip of one stream, killed on its way: all or nothing.
        (tmp_path / "broken").touch()
        await app.append("acct-0", [Deposited(13), Deposited(100)])
        head = await app.store.head_position()
        proc = await spawn(tmp_path)
        try:
            await app.wait_for(["accounts"], head)
        finally:
            await kill(proc)
        assert (await app.status())[0].parked == 2
        asked = await app.operations.skip("accounts", stream_id="acct-0", reason="test", wait=0)
        _, done = await settle(app, asked, tmp_path, kills=2)
        assert (done.state, done.result) == ("done", "skipped 2 events")
        assert (await accounts(app))["acct-0"] == (expected, PER_STREAM + 1)
        assert (await app.status())[0].parked == 0
