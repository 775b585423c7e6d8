"""HTTP load generator, run as its own process so it never shares a GIL with the server.

``python -m benchmarks.loadgen --url http://127.0.0.1:P --connections 64 --seconds 5``
registers one user per connection and opens a session for each (untimed), then runs two
timed phases over keep-alive connections: ``GET /users/{id}`` and ``POST /posts``. It
prints one JSON line: requests per second and p99 latency of each phase.

The client is a minimal HTTP/1.1 one on asyncio streams (a general client such as httpx
costs more CPU per request than the server under test on a 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from .stats import percentile


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
    host: str, port: int, requests: Sequence[bytes], seconds: float
) -> dict[str, float]:
    """Each connection repeats its request for ``seconds``; rps and latency percentiles."""
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
            status = await conn.request(raw)
            lat.append(clock() - start)
            if status >= 300:
                failures[0] += 1

    tasks = [asyncio.create_task(loop(i)) for i in range(len(requests))]
    await asyncio.sleep(0)
    began = time.perf_counter()
    deadline = began + seconds
    go.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    for conn in conns:
        conn.close()
    flat = [x for lat in latencies for x in lat]
    if failures[0]:
        raise RuntimeError(f"{failures[0]} of {len(flat)} requests failed")
    return {"rps": len(flat) / elapsed, "p99_ms": percentile(flat, 99) * 1000}


async def main_async(url: str, connections: int, seconds: float) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    hostport = f"{host}:{port}"
    users = await setup_users(url, connections)
    gets = [build_request("GET", hostport, f"/users/{uid}", b"", None) for uid, _ in users]
    body = json.dumps({"content": "benchmark post " + "x" * 84}).encode()
    posts = [build_request("POST", hostport, "/posts", body, token) for _, token in users]
    get = await phase(host, port, gets, seconds)
    post = await phase(host, port, posts, seconds)
    return {
        "http_get_rps": get["rps"],
        "http_get_p99_ms": get["p99_ms"],
        "http_post_rps": post["rps"],
        "http_post_p99_ms": post["p99_ms"],
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    figures = asyncio.run(main_async(args.url, args.connections, args.seconds))
    print(json.dumps({"figures": figures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
