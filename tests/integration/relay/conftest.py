"""Fixtures of the relay's tests, against real nats-server processes.

The machine's server (``CQRSKIT_TEST_NATS_URL``, default ``nats://127.0.0.1:4222``, JetStream
on) serves most tests; a test that stops the broker under the relay starts its own
(:class:`~tests.integration.relay._nats.NatsServer`: ``nats-server -js`` on a free port
with its own storage directory). Without them the tests skip with the reason, unless
``CQRSKIT_REQUIRE_NATS=1`` (set by .ci/run): there their absence fails them. Each test
relays to a stream of its own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.integration.relay._nats import NatsServer, Stream, delete_stream, jetstream_answers
from tests.integration.relay._support import RelayProcess

NATS_URL = os.environ.get("CQRSKIT_TEST_NATS_URL", "nats://127.0.0.1:4222")
REQUIRE_NATS = os.environ.get("CQRSKIT_REQUIRE_NATS") == "1"


def _missing(reason: str) -> None:
    if REQUIRE_NATS:
        pytest.fail(f"CQRSKIT_REQUIRE_NATS=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The URL of the machine's NATS server with JetStream (skips, or fails in CI)."""
    reason = asyncio.run(jetstream_answers(NATS_URL))
    if reason is not None:
        _missing(reason)
    return NATS_URL


@pytest.fixture(scope="session")
def nats_server_binary() -> str:
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None
    )
    if found is None:
        _missing("no nats-server binary to start a broker of the test's own")
    assert found is not None
    return found


@pytest.fixture
async def stream(nats_url: str) -> AsyncIterator[Stream]:
    """A stream name (and subject prefix) of this test's own; the stream is deleted after."""
    tag = uuid.uuid4().hex[:10]
    yield Stream(f"TEST_{tag}", f"test{tag}.events")
    await delete_stream(nats_url, f"TEST_{tag}")


@pytest.fixture
def own_nats(nats_server_binary: str, tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own (not started yet)."""
    server = NatsServer(nats_server_binary, tmp_path / "nats")
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture(autouse=True)
async def _reap_relays() -> AsyncIterator[None]:
    yield
    await RelayProcess.reap()
