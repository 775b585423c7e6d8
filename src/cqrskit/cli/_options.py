"""The options of ``serve`` that every command built on this package offers the same way
(``cqrskit serve`` and an app's own, such as ``social serve``)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._logging import LOG_FORMATS

__all__ = [
    "AccessLog",
    "HeaderTimeout",
    "Host",
    "LogFormat",
    "LogLevel",
    "MaxConnections",
    "Port",
    "Workers",
]

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(help="Port (0: any free port).")]
Workers = Annotated[
    int,
    typer.Option(help="Processes sharing the port; each projection runs in one of them at a time."),
]
HeaderTimeout = Annotated[
    float, typer.Option(help="Seconds a client has to send a request's headers, else closed.")
]
MaxConnections = Annotated[
    int, typer.Option(help="Connections and requests at once, per process; beyond, 503 at once.")
]
LogLevel = Annotated[str, typer.Option(help="uvicorn's log level.")]


def _log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(LOG_FORMATS)}, not {value!r}")
    return value


LogFormat = Annotated[
    str,
    typer.Option(
        callback=_log_format,
        metavar="text|json",
        help="Log lines on stderr: text, or json (one object per line); each carries the"
        " id of the request it was written for.",
    ),
]
AccessLog = Annotated[
    bool,
    typer.Option(
        "--access-log/--no-access-log",
        help="One log line per request (cqrskit.access: method, path, status, duration,"
        " request id).",
    ),
]
