"""Killing a child process in the middle of its work: at a point of its progress, not of
the clock. A kill timed by a sleep found the child finished on a fast machine (20,000
events projected within the kills' sleeps), and then no kill landed mid-work."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable


async def kill_after_progress(
    process: asyncio.subprocess.Process,
    progress: Callable[[], Awaitable[int]],
    events: int,
    pause: float,
) -> None:
    """SIGKILL ``process`` once ``progress()`` (its checkpoint) has moved ``events`` past
    where it was (0: at once), then ``pause`` seconds later: kills so land in every phase
    of a batch, and before the first.
    Fails if the child exits first."""
    target = await progress() + events
    while await progress() < target:
        if process.returncode is not None:
            raise AssertionError(f"the child exited ({process.returncode}) before its kill")
        await asyncio.sleep(0.001)
    await asyncio.sleep(pause)
    process.send_signal(signal.SIGKILL)
