"""Slow clients cannot hold the server: a connection that does not deliver a request's
headers in time is closed (``--header-timeout``), and normal clients are served meanwhile
(issue 14: 1,100 connections sending a byte a second took a server down)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from tests.e2e._support import ServerFactory, expect


def open_slow(host: str, port: int, count: int) -> list[socket.socket]:
    """Connections that start a request and never finish its headers."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: slow\r\n")
        socks.append(sock)
    return socks


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slow_headers_are_cut_off_and_others_are_served(server_factory: ServerFactory) -> None:
    server = server_factory(extra_args=["--header-timeout", "1"])
    address = urlsplit(server.url)
    assert address.hostname is not None
    assert address.port is not None
    slow = open_slow(address.hostname, address.port, 50)
    idle = socket.create_connection((address.hostname, address.port), timeout=10)  # says nothing
    try:
        with server.client() as client:
            expect(client.get("/health"), 200)  # served while the slow ones hang
        started = time.monotonic()
        assert all(closed_by_server(s, within=15) for s in [*slow, idle])
        assert time.monotonic() - started < 15
        with server.client() as client:
            expect(client.get("/health"), 200)
    finally:
        for sock in [*slow, idle]:
            sock.close()
    server.stop()
    assert "did not send complete request headers in time" in server.stderr_tail()


def test_a_request_sent_in_time_is_not_cut(server_factory: ServerFactory) -> None:
    server = server_factory(extra_args=["--header-timeout", "2"])
    address = urlsplit(server.url)
    assert address.hostname is not None
    assert address.port is not None
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        for part in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            sock.sendall(part)
            time.sleep(0.5)  # slow, but the whole headers within the timeout
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200"), answer
