"""The relay's Prometheus gauges, in the text format, served on a port of its own
(``cqrskit relay --metrics-port``) without any dependency: the relay runs in a process
of its own, beside no web server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from .status import RelayStatus

__all__ = ["prometheus_text", "serve_metrics"]

_GAUGES = (
    ("position", "Log position the broker stream ends at"),
    ("head", "Last position of the event log"),
    ("lag_events", "Events of the log the broker has not acknowledged yet"),
    ("lag_seconds", "Age of the oldest event the broker has not acknowledged yet"),
)


def prometheus_text(status: RelayStatus, published: int = 0) -> str:
    """``cqrskit_relay_*`` gauges of one relay (a gauge whose value is unknown is left out)."""
    label = f'{{stream="{status.stream}"}}'
    lines = []
    for name, help_text in _GAUGES:
        value = getattr(status, name)
        lines += [f"# HELP cqrskit_relay_{name} {help_text}", f"# TYPE cqrskit_relay_{name} gauge"]
        if value is not None:
            lines.append(f"cqrskit_relay_{name}{label} {value}")
    lines += [
        "# HELP cqrskit_relay_active 1 while this process publishes, 0 while it stands by",
        "# TYPE cqrskit_relay_active gauge",
        f"cqrskit_relay_active{label} {int(status.state == 'relaying')}",
        "# HELP cqrskit_relay_published_total Events this process has published",
        "# TYPE cqrskit_relay_published_total counter",
        f"cqrskit_relay_published_total{label} {published}",
    ]
    return "\n".join(lines) + "\n"


async def serve_metrics(host: str, port: int, text: Callable[[], Awaitable[str]]) -> asyncio.Server:
    """Answer every HTTP request on ``host:port`` with ``await text()`` (GET /metrics)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            try:
                body, status = (await text()).encode(), "200 OK"
            except Exception as exc:  # the database away: say so, keep serving
                body, status = f"# {exc}\n".encode(), "503 Service Unavailable"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(answer, host, port)
