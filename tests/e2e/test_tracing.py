"""Tracing a request through a real `social serve`: `X-Request-ID` comes back, becomes the
correlation id of the events the request appended (read from the database itself) and
marks the server's log lines; one access line per request; GET /metrics counts requests by
route template and shows the process's own metrics."""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e._support import (
    PASSWORD,
    Server,
    ServerFactory,
    Storage,
    expect,
    register,
    unique_email,
)


def stored_metadata(storage: Storage, stream_id: str) -> list[dict[str, object]]:
    """The metadata of a stream's events, as the event store keeps them."""
    options = dict(zip(storage.args[::2], storage.args[1::2], strict=True))
    if "--data-dir" in options:
        path = Path(options["--data-dir"]) / "write.db"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT metadata FROM events WHERE stream_id = ? ORDER BY position", (stream_id,)
            ).fetchall()
    else:
        import psycopg

        with psycopg.connect(options["--write-url"]) as conn:
            rows = conn.execute(
                "SELECT metadata FROM cqrskit_events WHERE stream_id = %s ORDER BY position",
                (stream_id,),
            ).fetchall()
    return [json.loads(bytes(row[0])) for row in rows]


def log_lines(server: Server, needle: str, timeout: float = 5.0) -> list[str]:
    """The server's stderr lines holding ``needle`` (waiting a little: logs are async)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.stderr_tail(10**7).splitlines() if needle in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_the_request_id_comes_back_reaches_the_events_and_marks_the_log(
    server: Server, client: httpx.Client
) -> None:
    resp = client.post(
        "/users",
        json={"email": unique_email(), "password": PASSWORD},
        headers={"X-Request-ID": "abc-123"},
    )
    user_id = expect(resp, 201)["id"]
    assert resp.headers["X-Request-ID"] == "abc-123"
    (metadata,) = stored_metadata(server.storage, f"user-{user_id}")
    assert metadata["correlation_id"] == "abc-123"
    assert metadata["causation_id"] not in (None, "abc-123")  # the command's id
    (line,) = log_lines(server, "abc-123")  # one access line
    assert re.search(r" INFO cqrskit\.access POST /users 201 [\d.]+ms request_id=abc-123$", line)
    assert log_lines(server, "HTTP/1.1", timeout=0) == []  # and no uvicorn access line


def test_an_invalid_request_id_is_replaced(client: httpx.Client) -> None:
    for sent in ("has space", "x" * 129):
        resp = client.get("/health", headers={"X-Request-ID": sent})
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"]), resp.headers
    assert (
        client.get("/health").headers["X-Request-ID"]
        != client.get("/health").headers["X-Request-ID"]
    )


def test_errors_carry_the_request_id_too(client: httpx.Client) -> None:
    for resp in (
        client.get("/nowhere", headers={"X-Request-ID": "e-404"}),
        client.post("/users", content=b"{", headers={"X-Request-ID": "e-400"}),
    ):
        assert resp.status_code in (400, 404), resp.text
        assert resp.headers["X-Request-ID"] in ("e-404", "e-400")


def test_metrics_count_requests_by_route_template_and_show_the_process(
    client: httpx.Client,
) -> None:
    user = register(client)
    marker = uuid.uuid4().hex
    for _ in range(3):
        client.get(f"/users/{user.id}", headers={"X-Request-ID": marker})
    text = client.get("/metrics").text
    assert user.id not in text  # the raw path never becomes a label
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("social_http_requests_total", method="POST", route="/users", status="201") >= 1
    got = value("social_http_requests_total", method="GET", route="/users/{user_id}", status="200")
    assert got >= 3
    count = value(
        "social_http_request_duration_seconds_count", method="GET", route="/users/{user_id}"
    )
    assert count >= 3
    names = {name for name, _ in samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names


def test_json_logs_are_one_object_a_line_with_the_request_id(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(extra_args=("--log-format", "json"))
    with server.client() as http:
        resp = http.post(
            "/users",
            json={"email": unique_email(), "password": PASSWORD},
            headers={"X-Request-ID": "json-1"},
        )
        expect(resp, 201)
    (line,) = log_lines(server, "json-1")
    entry = json.loads(line)
    assert entry["logger"] == "cqrskit.access"
    assert entry["request_id"] == "json-1"
    assert (entry["method"], entry["route"], entry["status"]) == ("POST", "/users", 201)
    assert set(entry) >= {"time", "level", "message", "duration_ms"}
    assert server.stop() == 0
    for raw in server.stderr_tail(10**7).splitlines():
        json.loads(raw)  # every line the server wrote, uvicorn's too


def test_every_line_of_a_request_carries_its_id_with_or_without_the_access_log(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(extra_args=("--no-access-log",))
    email = unique_email()
    with server.client() as http:
        expect(http.post("/users", json={"email": email, "password": PASSWORD}), 201)
        again = http.post(
            "/users", json={"email": email, "password": PASSWORD}, headers={"X-Request-ID": "dup-1"}
        )
    assert again.status_code == 409, again.text
    assert again.headers["X-Request-ID"] == "dup-1"
    (line,) = log_lines(server, "dup-1")  # the bus's line for the failed command
    assert " cqrskit.bus command RegisterUser failed: " in line
    assert line.endswith(" request_id=dup-1")
    assert log_lines(server, "cqrskit.access", timeout=0) == []
