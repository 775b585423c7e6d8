"""``/livez`` and ``/readyz`` (cqrskit.fastapi.health_routes) and what readiness judges:
the databases, a projection stopped in error, a runner that died (by its heartbeat, not
its lag); and the checkpoint table of an earlier release gaining the new columns."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cqrskit import ProjectionFailure
from cqrskit.checkpoints import CheckpointRow, ensure_table, read_rows
from cqrskit.fastapi import connect, health_routes
from cqrskit.monitoring import STALE_AFTER
from tests.integration.test_parking import POISON, Bank, Deposited


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Bank, httpx.AsyncClient]]:
    POISON.clear()
    bank = Bank(f"sqlite:///{tmp_path}")
    api = FastAPI()
    connect(api, bank)
    api.include_router(health_routes(bank))
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(api, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://bank") as client:
            yield bank, client
    POISON.clear()


async def ready(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/readyz")


async def test_ready_until_a_projection_stops_in_error_then_ready_after_its_restart(
    served: tuple[Bank, httpx.AsyncClient],
) -> None:
    bank, client = served
    assert (await client.get("/livez")).json() == {"status": "alive"}
    resp = await ready(client)
    assert (resp.status_code, resp.json()) == (200, {"status": "ready"})

    POISON.add(13)
    bad = (await bank.append("acct-a", [Deposited(13)])).position
    for _ in range(200):
        resp = await ready(client)
        if resp.status_code == 503:
            break
        await asyncio.sleep(0.05)
    assert resp.status_code == 503
    body = resp.json()
    assert body["reasons"] == [
        f"projection totals stopped in error at position {bad}: ValueError('cannot handle 13')"
    ]
    assert body["error"].startswith("not ready: projection totals stopped in error")
    # The parking projection parked the same event: that is not a reason to stop serving.
    assert next(s for s in await bank.status() if s.name == "balances").parked == 1

    POISON.clear()
    await bank.operations.restart("totals", by="test")
    assert (await ready(client)).status_code == 200
    assert (await client.get("/livez")).status_code == 200


async def test_a_runner_that_died_is_stalled_and_not_ready(
    served: tuple[Bank, httpx.AsyncClient],
) -> None:
    bank, client = served
    runner = bank.runner
    worker = runner._workers["totals"]  # the task of one projection dies (a bug escaped it)
    assert worker.task is not None
    worker.task.cancel()
    await asyncio.gather(worker.task, return_exceptions=True)
    resp = await ready(client)
    assert resp.status_code == 503
    assert "projection totals stalled" in resp.json()["error"]
    states = {s.name: s.state for s in await bank.status()}
    assert states == {"balances": "running", "totals": "stalled"}


async def test_a_runner_whose_heartbeat_is_old_is_stalled(
    served: tuple[Bank, httpx.AsyncClient],
) -> None:
    bank, client = served
    bank.runner._workers["balances"].beat -= STALE_AFTER + 1  # no batch nor heartbeat since
    states = {s.name: s.state for s in await bank.status()}
    assert states["balances"] == "stalled"
    assert (await ready(client)).status_code == 503


def test_a_checkpoint_table_of_an_earlier_release_gets_the_new_columns(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "read.db", isolation_level=None)
    conn.execute(
        "CREATE TABLE cqrskit_projections (name TEXT PRIMARY KEY, position BIGINT NOT NULL,"
        " state TEXT NOT NULL, error TEXT, updated_at DOUBLE PRECISION,"
        " events_per_second DOUBLE PRECISION NOT NULL DEFAULT 0, rebuild_position BIGINT,"
        " rebuild_updated_at DOUBLE PRECISION)"
    )
    conn.execute(
        "INSERT INTO cqrskit_projections VALUES ('p', 7, 'error', 'boom', 1, 0, NULL, NULL)"
    )

    class Tx:
        def execute(self, sql: str, params: tuple[object, ...] = ()) -> int:
            return conn.execute(sql, params).rowcount

        def fetchall(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
            return conn.execute(sql, params).fetchall()

    tx = Tx()
    ensure_table(tx)  # type: ignore[arg-type]
    ensure_table(tx)  # type: ignore[arg-type]  # idempotent
    row: CheckpointRow = read_rows(tx)["p"]  # type: ignore[arg-type]
    assert (row.position, row.parked, row.paused, row.failure) == (7, 0, None, None)
    # An error recorded before the structured cause: its message, at the checkpoint.
    assert row.failure_cause() == ProjectionFailure(7, "", "", "", "boom", 1, 0.0)


def test_a_failure_round_trips_through_its_json() -> None:
    failure = ProjectionFailure(3, "id-3", "Deposited", "acct-a", "ValueError('x')", 3, 1.5)
    assert ProjectionFailure.from_json(failure.to_json()) == failure
