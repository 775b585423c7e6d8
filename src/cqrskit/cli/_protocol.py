"""uvicorn's HTTP protocol with a deadline for each request's headers.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but gives a new
connection, or a request whose headers arrive a byte at a time, all the time in the world:
1,100 such connections held every file descriptor of a process with the usual limit of
1,024, and normal requests failed. Here a connection must deliver each request's complete
headers within ``header_timeout`` seconds of its first byte (or of the connection, for
the first request), or it is closed. A slow body is the request deadline's business
(an application's own deadline: social's ``Guard`` answers 408).

Production advice stays: a reverse proxy in front (nginx, HAProxy, a cloud load balancer)
with its own client timeouts and connection limits (docs/operations.md, docs/cli.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["protocol_with_header_timeout"]

log = logging.getLogger("cqrskit.http")

_REPORT_EVERY = 10.0
"""Seconds between two log lines about closed slow connections (an attack makes many)."""


class _SlowConnections:
    """How many connections were closed for slow headers since the last log line."""

    closed = 0
    reported_at = 0.0

    @classmethod
    def note(cls) -> None:
        cls.closed += 1
        now = time.monotonic()
        if now - cls.reported_at >= _REPORT_EVERY:
            log.warning(
                "closed %d connection(s) that did not send complete request headers in time",
                cls.closed,
            )
            cls.closed, cls.reported_at = 0, now


class _HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            _SlowConnections.note()
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[HttpToolsProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    if not seconds > 0:
        raise ValueError("the header timeout must be positive")
    return type("HeaderDeadlineProtocol", (_HeaderDeadlineProtocol,), {"header_timeout": seconds})
