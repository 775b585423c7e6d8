"""``relay``: publish any app's event log to NATS JetStream (:mod:`cqrskit.relay`).

::

    cqrskit --app myapp.main:app relay --nats-url nats://127.0.0.1:4222 [--stream NAME]
        [--subject-prefix P] [--batch-size N] [--metrics-port PORT] [--status [--json]]

Prints one line on stdout each time the relay starts relaying (``Relaying to stream ...
after position N``) or stands by (another process holds the stream's lease); the broker or
the database away is one log line on stderr and a retry with backoff. SIGTERM or SIGINT:
the batch in flight is acknowledged or dropped (the next relay reads where the stream
ends), the lease is released, exit 0. ``--status``: the stream's position, the log's head
and the lag between them, then exit. An app's own command (``social relay``) reuses
:func:`relay_events` and :func:`show_relay_status`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..app import App
from ._logging import configure_logging
from ._options import LogFormat
from ._run import EXIT_USAGE, Failure, report, run
from ._serve import STOP_SIGNALS

__all__ = [
    "BatchSize",
    "MetricsPort",
    "NatsUrl",
    "relay_command",
    "relay_events",
    "show_relay_status",
]

log = logging.getLogger("cqrskit.relay")

NatsUrl = Annotated[
    str,
    typer.Option(
        "--nats-url",
        envvar="CQRSKIT_NATS_URL",
        metavar="URL",
        help="The NATS server (JetStream on): nats://HOST:PORT.",
    ),
]
BatchSize = Annotated[
    int, typer.Option("--batch-size", min=1, max=4000, help="Events per published batch.")
]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve the relay's Prometheus gauges on 127.0.0.1:PORT.",
    ),
]
StatusOnly = Annotated[
    bool, typer.Option("--status", help="Print the stream's position and lag, then exit.")
]
AsJson = Annotated[bool, typer.Option("--json", help="With --status: JSON instead of a table.")]


async def relay_events(
    app: App,
    nats_url: str,
    stream: str,
    subject_prefix: str,
    *,
    batch_size: int = 500,
    metrics_port: int | None = None,
) -> int:
    """Relay ``app``'s log to ``stream`` until SIGTERM or SIGINT (see the module docstring)."""
    _need_nats()
    from ..relay import JetStreamPublisher, Relay, prometheus_text, serve_metrics

    publisher = JetStreamPublisher(nats_url, stream, subject_prefix)  # bad names fail here
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    await app.open(run_projections=False)
    try:
        relay = Relay.for_app(app, publisher, subject_prefix, batch_size=batch_size, on_state=_say)
        server = None
        if metrics_port is not None:

            async def metrics() -> str:
                return prometheus_text(await relay.status(), relay.published)

            server = await serve_metrics("127.0.0.1", metrics_port, metrics)
            port = server.sockets[0].getsockname()[1]
            log.info("relay %s: metrics on http://127.0.0.1:%d/metrics", stream, port)
        try:
            await relay.run(stop)
        finally:
            if server is not None:
                server.close()
    finally:
        await app.close()
    return 0


def _need_nats() -> None:
    """:mod:`cqrskit.relay` is imported when a relay command runs, after this check: the
    ``cqrskit`` command itself needs no nats-py."""
    try:
        import nats  # noqa: F401
    except ImportError:
        raise Failure(
            "relay needs nats-py: install cqrskit with the nats extra", EXIT_USAGE
        ) from None


def _say(state: str, line: str) -> None:
    if state in ("relaying", "standby"):
        print(line[:1].upper() + line[1:], flush=True)


async def show_relay_status(
    app: App, nats_url: str, stream: str, subject_prefix: str, as_json: bool
) -> int:
    """The stream's position, the log's head, the lag between them and whether a relay runs:
    a table, or one JSON object."""
    _need_nats()
    from ..relay import JetStreamPublisher, Relay, relay_status

    publisher = JetStreamPublisher(nats_url, stream, subject_prefix)
    await app.open(run_projections=False)
    try:
        relay = Relay.for_app(app, publisher, subject_prefix)
        status = await relay_status(app.store, publisher, relay.lease)
    finally:
        await app.close()
    if as_json:
        print(json.dumps(status.to_dict()), flush=True)
        return 0
    table = Table("stream", "relay", "position", "head", "lag (events)", "lag (s)")
    table.add_row(
        status.stream,
        status.state,
        str(status.position),
        str(status.head),
        str(status.lag_events),
        f"{status.lag_seconds or 0.0:.2f}",
    )
    Console().print(table)
    return 0


def relay_command(cli: typer.Typer, get_app: Callable[[typer.Context], App]) -> None:
    """Add ``relay`` to ``cli``, on the app ``get_app(ctx)`` gives."""

    @cli.command("relay")
    def relay(
        ctx: typer.Context,
        nats_url: NatsUrl,
        stream: Annotated[
            str | None,
            typer.Option(
                "--stream",
                help="The JetStream stream (default: the app's class name in capitals,"
                " without a trailing App: BankApp relays to BANK).",
            ),
        ] = None,
        subject_prefix: Annotated[
            str | None,
            typer.Option(
                "--subject-prefix",
                help="Subjects are PREFIX.<EventType> (default: the stream's name in lower"
                " case, then .events).",
            ),
        ] = None,
        batch_size: BatchSize = 500,
        metrics_port: MetricsPort = None,
        status: StatusOnly = False,
        as_json: AsJson = False,
        log_format: LogFormat = "text",
    ) -> None:
        """Publish the event log to NATS JetStream: every event once, in log order, by one
        process per stream at a time (the others stand by)."""
        configure_logging(log_format)
        app = get_app(ctx)
        try:
            _need_nats()
        except Failure as failure:
            report(failure.message)
            raise typer.Exit(failure.status) from None
        from ..relay import default_stream

        name = stream or default_stream(type(app).__name__)
        prefix = subject_prefix or f"{name.lower()}.events"
        if status:
            run(show_relay_status(app, nats_url, name, prefix, as_json))
        run(
            relay_events(
                app, nats_url, name, prefix, batch_size=batch_size, metrics_port=metrics_port
            )
        )
