"""HTTP load generator, run as its own process so it never shares a GIL with the server.

``python -m benchmarks.loadgen --url http://127.0.0.1:P --connections 64 --seconds 5``
registers one user per connection and opens a session for each (untimed), then runs two
timed phases over keep-alive connections: ``GET /users/{id}`` and ``POST /posts``. It
prints one JSON line: requests per second and p99 latency of each phase (``figures``), and
the CPU used during each phase, in cores (``cores``): by this process (``client``), with
``--server-pids`` by those processes (``server``, from ``/proc/PID/stat``), and by the whole
machine (``machine``, from ``/proc/stat``: the server, the client, PostgreSQL's backends and
anything else running). On a 2-core machine what the load generator takes is not there for
the server.

The client is a minimal HTTP/1.1 one on asyncio streams (a general client such as httpx
costs more CPU per request than the server under test on a 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .stats import percentile


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of these processes so far (0 for one that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick


def machine_busy_seconds() -> float:
    """CPU time all cores spent neither idle nor waiting for I/O so far (0 without /proc)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        """Send one request, read its whole response; returns the status code."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                await self._skip_chunked()
        if length:
            await self.reader.readexactly(length)
        return status

    async def _skip_chunked(self) -> None:
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            await self.reader.readexactly(size + 2)
            if size == 0:
                return

    def close(self) -> None:
        self.writer.close()


def build_request(method: str, host: str, path: str, body: bytes, token: str | None) -> bytes:
    headers = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: application/json"]
    if token:
        headers.append(f"Authorization: Bearer {token}")
    if body:
        headers += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def keyed_post(hostport: str, body: bytes, token: str) -> bytes:
    raw = build_request("POST", hostport, "/posts", body, token)
    head, rest = raw.split(b"\r\n", 1)
    return head + f"\r\nIdempotency-Key: {uuid.uuid4().hex}".encode() + b"\r\n" + rest


async def setup_users(base: str, n: int) -> list[tuple[str, str]]:
    """(user id, token) for ``n`` new users."""
    run = uuid.uuid4().hex[:8]
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def one(i: int) -> tuple[str, str]:
            email = f"load{i}-{run}@bench.example"
            created = await client.post(
                "/users", json={"email": email, "password": "benchmark-password"}
            )
            created.raise_for_status()
            session = await client.post(
                "/sessions", json={"email": email, "password": "benchmark-password"}
            )
            session.raise_for_status()
            return str(created.json()["id"]), str(session.json()["token"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def phase(
    host: str,
    port: int,
    requests: Sequence[bytes | Callable[[], bytes]],
    seconds: float,
    server: Sequence[int] = (),
) -> dict[str, float]:
    """Each connection repeats its request for ``seconds`` (or, given a function, sends
    what it makes each time: a new idempotency key per request); rps, p99 latency and the
    CPU over the phase, in cores, of this process and of the ``server`` processes."""
    conns = [await Connection.open(host, port) for _ in requests]
    latencies: list[list[float]] = [[] for _ in requests]
    failures = [0]
    deadline = 0.0
    go = asyncio.Event()

    async def loop(i: int) -> None:
        conn, raw, lat = conns[i], requests[i], latencies[i]
        await go.wait()
        clock = time.perf_counter
        while clock() < deadline:
            start = clock()
            status = await conn.request(raw if isinstance(raw, bytes) else raw())
            lat.append(clock() - start)
            if status >= 300:
                failures[0] += 1

    tasks = [asyncio.create_task(loop(i)) for i in range(len(requests))]
    await asyncio.sleep(0)
    cpu, server_cpu, busy = time.process_time(), cpu_seconds(server), machine_busy_seconds()
    began = time.perf_counter()
    deadline = began + seconds
    go.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    client_cores = (time.process_time() - cpu) / elapsed
    server_cores = (cpu_seconds(server) - server_cpu) / elapsed
    machine_cores = (machine_busy_seconds() - busy) / elapsed
    for conn in conns:
        conn.close()
    flat = [x for lat in latencies for x in lat]
    if failures[0]:
        raise RuntimeError(f"{failures[0]} of {len(flat)} requests failed")
    return {
        "rps": len(flat) / elapsed,
        "p99_ms": percentile(flat, 99) * 1000,
        "client": client_cores,
        "server": server_cores,
        "machine": machine_cores,
    }


async def main_async(
    url: str, connections: int, seconds: float, server: Sequence[int] = ()
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    hostport = f"{host}:{port}"
    users = await setup_users(url, connections)
    gets = [build_request("GET", hostport, f"/users/{uid}", b"", None) for uid, _ in users]
    body = json.dumps({"content": "benchmark post " + "x" * 84}).encode()
    posts = [build_request("POST", hostport, "/posts", body, token) for _, token in users]
    get = await phase(host, port, gets, seconds, server)
    post = await phase(host, port, posts, seconds, server)
    # POST /posts with an Idempotency-Key (a new one per request) against without, in two
    # adjacent half phases: what the key costs (its lookup, the held append, its row).
    keyed = [functools.partial(keyed_post, hostport, body, token) for _, token in users]
    with_key = await phase(host, port, keyed, seconds / 2, server)
    without = await phase(host, port, posts, seconds / 2, server)
    figures = {
        "http_get_rps": get["rps"],
        "http_get_p99_ms": get["p99_ms"],
        "http_post_rps": post["rps"],
        "http_post_p99_ms": post["p99_ms"],
        "http_post_keyed_rps": with_key["rps"],
        "http_post_keyed_p99_ms": with_key["p99_ms"],
        "http_post_keyed_ratio": with_key["rps"] / without["rps"],
    }
    cores = {
        name: {
            "client": result["client"],
            **({"server": result["server"]} if server else {}),
            "machine": result["machine"],
        }
        for name, result in (("get", get), ("post", post))
    }
    return {"figures": figures, "cores": cores}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--server-pids", default="", help="comma-separated: processes whose CPU use to report"
    )
    args = parser.parse_args(argv)
    server = [int(p) for p in args.server_pids.split(",") if p.strip()]
    output = asyncio.run(main_async(args.url, args.connections, args.seconds, server))
    print(json.dumps(output), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
