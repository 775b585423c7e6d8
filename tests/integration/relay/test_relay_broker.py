"""The broker away: NATS down when the relay starts, NATS restarted under it. One clear log
line, retries with backoff, never a traceback; then every event exactly once, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration._relay_app import write
from tests.integration.relay._nats import NatsServer, Stream
from tests.integration.relay._support import (
    RelayProcess,
    assert_exactly_once_in_order,
    caught_up,
)

STREAM = Stream("EVENTS", "app.events")


async def test_nats_down_at_start_one_line_then_relays_once_up(
    tmp_path: Path, own_nats: NatsServer
) -> None:
    db_url = f"sqlite:///{tmp_path / 'db'}"
    await write(db_url, 100)
    relay = await RelayProcess.start(db_url, own_nats.url, STREAM)
    assert relay.process.stderr is not None
    logged = (await asyncio.wait_for(relay.process.stderr.readline(), 10)).decode()
    assert f"NATS at {own_nats.url} is unavailable: connection refused; retrying" in logged
    await asyncio.sleep(1.5)  # it keeps retrying, quietly
    own_nats.start()
    assert (await relay.line()).endswith("after position 0")
    await write(db_url, 100)
    assert await assert_exactly_once_in_order(db_url, own_nats.url, STREAM) == 200
    assert await relay.stop() == 0
    rest = await relay.stderr()
    assert "Traceback" not in rest
    assert "unavailable" not in rest  # one line for the outage, not one per retry
    assert "created JetStream stream EVENTS (subjects app.events.>)" in rest


async def test_nats_restarted_under_the_relay(tmp_path: Path, own_nats: NatsServer) -> None:
    db_url = f"sqlite:///{tmp_path / 'db'}"
    await write(db_url, 10)
    own_nats.start()
    relay = await RelayProcess.start(db_url, own_nats.url, STREAM, "--batch-size", "20")
    await relay.line()
    writes = asyncio.create_task(write(db_url, 1500, writers=2))
    before = await caught_up(own_nats.url, STREAM, 100, timeout=10)
    own_nats.stop(kill=True)  # mid-way through the writes and the relaying
    assert len(before.positions) < 1510
    await asyncio.sleep(1.0)
    own_nats.start()
    again = await relay.line()
    assert again.startswith("Relaying"), again
    await writes
    assert await assert_exactly_once_in_order(db_url, own_nats.url, STREAM) == 1510
    assert await relay.stop() == 0
    logged = await relay.stderr()
    assert "Traceback" not in logged
    assert f"NATS at {own_nats.url}" in logged
