"""A running relay's progress, as every process of the app sees it without reaching NATS:
the row it reports in the read database, served by ``GET /ops/relays`` (and social's
``/metrics``). It reaches the log's head with lag 0 while running, says stopped once the
relay stops, and stalled when a running relay's row is no longer written; on SQLite and
PostgreSQL, from a relay in the same process and from ``relay`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cqrskit.fastapi import connect, operations_router
from cqrskit.monitoring import STALE_AFTER
from cqrskit.relay import JetStreamPublisher, Relay
from tests.integration._relay_app import RelayedApp, write
from tests.integration.relay._nats import NatsServer, Stream
from tests.integration.relay._support import RelayProcess, start_social_relay

TOKEN = "operator-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@contextlib.asynccontextmanager
async def operations(app: RelayedApp) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` behind FastAPI with the operator routes, opened by its lifespan."""
    api = FastAPI()
    connect(api, app, run_projections=False)
    api.include_router(operations_router(app, token=TOKEN))
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(api, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            yield http


async def relays(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    resp = await http.get("/ops/relays", headers=BEARER)
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json()["relays"]
    return found


async def reported(
    http: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> dict[str, Any]:
    """The one relay's report once ``check`` holds for it (fails with the last one seen)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await relays(http)
        if found and check(found[0]):
            assert len(found) == 1, found
            return found[0]
        assert loop.time() < deadline, f"not seen within {timeout:g}s: {found}"
        await asyncio.sleep(0.1)


async def test_the_relay_reports_its_progress_to_every_process(
    db_url: str, nats_url: str, stream: Stream
) -> None:
    app = RelayedApp(db_url)
    async with operations(app) as http:
        assert await relays(http) == []
        assert (await http.get("/ops/relays")).status_code == 401
        publisher = JetStreamPublisher(nats_url, stream.name, stream.prefix)
        relay = Relay.for_app(app, publisher, stream.prefix, batch_size=16)
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        try:
            await write(db_url, 120)
            running = await reported(http, lambda r: r["position"] == 120)
            assert running["stream"] == stream.name
            assert (running["head"], running["lag_events"], running["lag_seconds"]) == (120, 0, 0)
            assert running["state"] == "running"
            assert abs(running["updated_at"] - time.time()) < 10
            assert running["holder"].endswith(f":{os.getpid()}")
        finally:
            stop.set()
            await task
        await write(db_url, 5)
        stopped = await reported(http, lambda r: r["state"] == "stopped")
        assert (stopped["position"], stopped["head"], stopped["lag_events"]) == (120, 125, 5)
        assert stopped["lag_seconds"] > 0

        # A relay killed while running leaves its row saying so: once it is older than
        # STALE_AFTER (as a missed heartbeat makes it), it reads "stalled".
        def silent(tx: Any) -> None:
            tx.execute(
                "UPDATE cqrskit_relays SET state = 'running', updated_at = ?",
                (time.time() - STALE_AFTER - 1,),
            )

        await app.db.write(silent)
        assert (await reported(http, lambda r: True))["state"] == "stalled"


async def test_relay_processes_report_running_standby_and_stopped(
    tmp_path: Path, nats_url: str, stream: Stream
) -> None:
    db_url = f"sqlite:///{tmp_path / 'db'}"
    await write(db_url, 40)
    first = await RelayProcess.start(db_url, nats_url, stream)
    assert (await first.line()).startswith("Relaying")
    second = await RelayProcess.start(db_url, nats_url, stream)
    assert (await second.line()).startswith("Standing by")
    async with operations(RelayedApp(db_url)) as http:
        running = await reported(http, lambda r: r["position"] == 40)
        assert (running["state"], running["lag_events"]) == ("running", 0)
        assert running["holder"].endswith(f":{first.process.pid}")  # not hidden by the other
        await write(db_url, 10)
        assert (await reported(http, lambda r: r["position"] == 50))["lag_events"] == 0

        assert await first.stop() == 0  # the other one takes over
        assert (await second.line()).startswith("Relaying")
        taken = await reported(http, lambda r: r["holder"].endswith(f":{second.process.pid}"))
        assert (taken["state"], taken["position"], taken["lag_events"]) == ("running", 50, 0)
        assert await second.stop() == 0
        stopped = await reported(http, lambda r: r["state"] == "stopped")
        assert (stopped["position"], stopped["head"]) == (50, 50)
    assert "Traceback" not in await first.stderr() + await second.stderr()


async def test_social_shows_its_relay_in_ops_and_metrics(
    tmp_path: Path, own_nats: NatsServer
) -> None:
    """``social relay`` in a process of its own; the API process sees it through the read
    database: ``GET /ops/relays`` and the gauge ``social_relay_lag_events``."""
    from social.api import create_app
    from social.domain import ScryptParams
    from social.infrastructure.settings import Settings

    own_nats.start()
    relay, data, name = await start_social_relay(tmp_path, own_nats.url)
    assert (await relay.line()).startswith("Relaying")
    settings = Settings(
        data_dir=data, secret=b"s" * 32, scrypt=ScryptParams(n=2**10), ops_token=TOKEN
    )
    api = create_app(settings)
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(api, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://social") as http:
            signed = await http.post(
                "/users", json={"email": "ada@example.com", "password": "a long password 1"}
            )
            assert signed.status_code == 201, signed.text
            running = await reported(http, lambda r: r["position"] == 1)
            assert (running["stream"], running["state"], running["lag_events"]) == (
                name,
                "running",
                0,
            )
            metrics = (await http.get("/metrics")).text
            assert f'social_relay_lag_events{{stream="{name}"}} 0.0' in metrics
    assert await relay.stop() == 0
    assert "Traceback" not in await relay.stderr()
