"""The options of ``serve`` that every command built on this package offers the same way
(``cqrskit serve`` and an app's own, such as ``social serve``)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["HeaderTimeout", "Host", "LogLevel", "MaxConnections", "Port", "Workers"]

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
