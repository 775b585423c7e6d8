"""An append is durable once it returns: a child acknowledges appends, we SIGKILL it at a
random moment, reopen the file and find every acknowledged event."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cqrskit import Codec, Event
from cqrskit.backends.sqlite import SqliteEventStore

CHILD = Path(__file__).with_name("_append_child.py")


@dataclass(frozen=True)
class Tick(Event):  # the child's event, as this side decodes it
    n: int


def run_child_and_kill(path: Path, acks_before_kill: int, delay: float) -> list[tuple[int, int]]:
    """Acknowledged ``(position, n)`` of one child run, killed after some acks and a delay."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path)], stdout=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(30, proc.kill)  # a stuck child must not hang the suite
    watchdog.start()
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(acks_before_kill)]
        assert all(lines), "the child stopped before acknowledging anything"
        time.sleep(delay)  # lands the kill at a random point of an append
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        lines += proc.stdout.readlines()  # acks printed before the kill count too
    finally:
        watchdog.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    acks = [line.split() for line in lines if line.endswith("\n")]
    return [(int(position), int(n)) for position, n in acks]


async def stored_ticks(path: Path) -> dict[int, int]:
    store = await SqliteEventStore.open(path, Codec([Tick]))
    try:
        records = await store.read_all(0, limit=1_000_000)
        decoded = {r.position: store.codec.decode(r) for r in records}
    finally:
        await store.close()
    return {position: e.n for position, e in decoded.items() if isinstance(e, Tick)}


@pytest.mark.slow
def test_every_acknowledged_append_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    rng = random.Random()
    acknowledged: list[tuple[int, int]] = []
    for _ in range(4):
        acks = run_child_and_kill(path, rng.randint(1, 60), rng.uniform(0, 0.05))
        assert acks
        acknowledged += acks
        stored = asyncio.run(stored_ticks(path))
        missing = [(p, n) for p, n in acknowledged if stored.get(p) != n]
        assert missing == []
        # The log is the stream: positions and versions count up together, without gaps
        # (an append in flight at the kill may be there, unacknowledged, or not at all).
        assert sorted(stored.items()) == [(p, p) for p in range(1, len(stored) + 1)]
