"""Operations: GET /health, /projections, /metrics, `social status --json`, and how
`social serve` starts and stops (one `Listening on` line; SIGTERM/SIGINT exit 0)."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e._support import (
    LISTENING,
    PROJECTION_KEYS,
    Server,
    ServerFactory,
    all_posts,
    create_post,
    describe,
    expect,
    get_user,
    login,
    position,
    register,
    run_cli,
)


def assert_projection_row(row: Any) -> None:
    assert isinstance(row, dict), row
    assert set(row) == PROJECTION_KEYS, row
    assert isinstance(row["name"], str)
    assert row["name"]
    for key in ("position", "head", "lag_events"):
        assert type(row[key]) is int, row
        assert row[key] >= 0, row
    assert type(row["lag_seconds"]) in (int, float), row
    assert row["lag_seconds"] >= 0, row
    assert isinstance(row["state"], str), row
    assert row["state"], row
    assert type(row["parked"]) is int, row
    assert row["parked"] >= 0, row
    error = row["error"]
    assert error is None or {"position", "event_type", "message"} <= set(error), row


def test_health(client: httpx.Client) -> None:
    resp = client.get("/health")
    assert expect(resp, 200) == {"status": "ok"}, describe(resp)


def test_projections_list(client: httpx.Client) -> None:
    user = register(client)
    _, pos = create_post(client, user, "make the head move")
    get_user(client, user.id, pos)
    resp = client.get("/projections")
    rows = expect(resp, 200)
    assert isinstance(rows, list), describe(resp)
    assert rows, describe(resp)
    for row in rows:
        assert_projection_row(row)
    names = [row["name"] for row in rows]
    assert len(names) == len(set(names)), names
    assert all(row["head"] >= pos for row in rows), rows


def test_metrics_are_prometheus_text(client: httpx.Client) -> None:
    user = register(client)
    create_post(client, user, "count me")
    resp = client.get("/metrics")
    assert resp.status_code == 200, describe(resp)
    assert resp.headers["content-type"].startswith("text/plain"), describe(resp)
    families = list(text_string_to_metric_families(resp.text))
    assert families, "no metric families"
    assert sum(len(f.samples) for f in families) > 0


def test_status_json_lists_every_projection(client: httpx.Client, server: Server) -> None:
    user = register(client)
    _, pos = create_post(client, user, "status")
    get_user(client, user.id, pos)
    result = run_cli(["status", "--json", *server.storage.args])
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list), result.stdout
    assert rows, result.stdout
    for row in rows:
        assert_projection_row(row)
        assert row["head"] >= pos, row
    served = expect(client.get("/projections"), 200)
    assert sorted(r["name"] for r in rows) == sorted(r["name"] for r in served)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_prints_one_listening_line_and_stops_cleanly(
    server_factory: ServerFactory, sig: signal.Signals
) -> None:
    server = server_factory()
    listening = [line for line in server.stdout_lines if LISTENING.match(line.strip())]
    assert listening == [f"Listening on {server.url}"], server.stdout_lines
    with server.client() as http:
        assert expect(http.get("/health"), 200) == {"status": "ok"}
    assert server.stop(sig) == 0, server.stderr_tail()


@pytest.mark.slow
def test_sigterm_finishes_in_flight_writes(server_factory: ServerFactory) -> None:
    """Writes racing a SIGTERM either are answered (and then durable) or fail to connect;
    none is acknowledged and then lost, and the exit code is 0."""
    server = server_factory()
    with server.client() as http:
        user = register(http)
    acknowledged: list[str] = []
    lock = threading.Lock()
    started = threading.Barrier(9)

    def writer(n: int) -> None:
        with server.client() as http:
            started.wait()
            for i in range(30):
                try:
                    resp = http.post("/posts", json={"content": f"w{n}-{i}"}, headers=user.auth)
                except httpx.TransportError:
                    return
                if resp.status_code != 201:
                    return
                with lock:
                    acknowledged.append(resp.json()["id"])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    started.wait()
    while len(acknowledged) < 20 and any(t.is_alive() for t in threads):
        threading.Event().wait(0.005)
    code = server.stop(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    assert code == 0, server.stderr_tail()
    assert acknowledged, "no write was answered before SIGTERM"

    restarted = server_factory(server.storage)
    with restarted.client() as http:
        user = login(http, user)  # sessions need not outlive the process
        head = position(http.post("/posts", json={"content": "after"}, headers=user.auth))
        ids = {p["id"] for p in all_posts(http, user.id, head, limit=100)}
        missing = set(acknowledged) - ids
        assert not missing, f"{len(missing)} acknowledged posts lost after SIGTERM"
        assert get_user(http, user.id, head)["post_count"] == len(ids)
