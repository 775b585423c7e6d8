"""SIGKILL the relay process 20 times while the log grows: the stream still holds every
event exactly once, in log order (the broker's acknowledgements are the only checkpoint)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.integration._relay_app import write
from tests.integration.relay._nats import Stream, read_stream
from tests.integration.relay._support import RelayProcess, assert_exactly_once_in_order

pytestmark = pytest.mark.slow

KILLS = 20


async def test_sigkill_20_times_under_writes(tmp_path: Path, nats_url: str, stream: Stream) -> None:
    db_url = f"sqlite:///{tmp_path / 'db'}"
    await write(db_url, 200)
    rng = random.Random(2026)
    stop_writing = asyncio.Event()

    async def keep_writing() -> int:
        written = 0
        while not stop_writing.is_set():
            await write(db_url, 50, writers=2)
            written += 50
            await asyncio.sleep(0.02)
        return written

    writer = asyncio.create_task(keep_writing())
    seen: list[int] = []
    for _ in range(KILLS):
        # Small batches: many acknowledgements, so kills land in every phase of a batch.
        relay = await RelayProcess.start(
            db_url, nats_url, stream, "--batch-size", rng.choice(["3", "17", "64"])
        )
        assert (await relay.line()).startswith("Relaying")
        await asyncio.sleep(rng.uniform(0.0, 0.25))
        await relay.kill()
        seen.append(len((await read_stream(nats_url, stream.name, stream.prefix)).positions))
    stop_writing.set()
    written = await writer
    assert written > 0

    # The kills hit the run at many points, and progress was kept across them.
    assert seen == sorted(seen)
    assert len(set(seen)) >= KILLS // 2, seen

    relay = await RelayProcess.start(db_url, nats_url, stream)
    await relay.line()
    count = await assert_exactly_once_in_order(db_url, nats_url, stream)
    assert count == 200 + written
    assert await relay.stop() == 0
