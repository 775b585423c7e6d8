"""The ``social`` command: ``serve``, ``worker``, ``rebuild``, ``status``, built on
:mod:`cqrskit.cli` (which ``cqrskit --app`` runs for any app) with the service's own
options: ``--data-dir`` or ``--write-url``/``--read-url`` and the ``SOCIAL_*`` variables.

``serve`` prints exactly one line on stdout, ``Listening on http://HOST:PORT``, once the
projections run and the socket accepts connections (``--port 0`` picks a free port and
prints it). SIGTERM or SIGINT: stop accepting, finish the requests in flight and the
projections' current batch, exit 0. Logs go to stderr (``--log-format text|json``, each
line with the id of the request it was written for: see docs/observability.md).
``serve --no-projections`` is an API process only (reads wait on the checkpoints that
``worker`` processes move); ``serve --workers N`` is N processes on one port (see
docs/cli.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from cqrskit import ConfigurationError
from cqrskit.cli import (
    EXIT_CANNOT_LISTEN,
    EXIT_DATABASE,
    EXIT_ERROR,
    EXIT_USAGE,
    AccessLog,
    HeaderTimeout,
    Host,
    LogFormat,
    LogLevel,
    MaxConnections,
    Port,
    Served,
    ServeOptions,
    Workers,
    configure_logging,
    projections_commands,
    rebuild_with_progress,
    report,
    run,
    show_status,
    work,
)
from cqrskit.cli import (
    serve as serve_target,
)

from .api import create_app
from .api.schemas import STATUS_FIELDS
from .infrastructure.bootstrap import SocialApp
from .infrastructure.settings import Settings

__all__ = [
    "EXIT_CANNOT_LISTEN",
    "EXIT_DATABASE",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "SocialTarget",
    "app",
    "main",
]

app = typer.Typer(add_completion=False, help="The social reference service built on cqrskit.")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="SOCIAL_DATA_DIR", help="SQLite files and secret.key."),
]
WriteUrl = Annotated[
    str | None,
    typer.Option("--write-url", envvar="SOCIAL_WRITE_URL", help="PostgreSQL: event store."),
]
ReadUrl = Annotated[
    str | None,
    typer.Option("--read-url", envvar="SOCIAL_READ_URL", help="PostgreSQL: read models."),
]


def _settings(data_dir: Path | None, write_url: str | None, read_url: str | None) -> Settings:
    """The settings; a bad value in the environment is one line and exit status 2."""
    try:
        return Settings.from_env(data_dir=data_dir, write_url=write_url, read_url=read_url)
    except ConfigurationError as exc:
        report(str(exc))
        raise typer.Exit(EXIT_USAGE) from None


def _existing(settings: Settings) -> Settings:
    """``settings``, for a command that works on what ``serve`` wrote: on SQLite, a data
    directory that does not exist is refused in one line (a typo in ``--data-dir`` would
    otherwise create an empty one, with a fresh secret, and report on nothing)."""
    if settings.write_url is None and not settings.data_dir.is_dir():
        report(f"no data directory at {settings.data_dir}: is --data-dir right?")
        raise typer.Exit(EXIT_USAGE)
    return settings


def _service(settings: Settings, *, run_projections: bool = True) -> SocialApp:
    """The service (nothing opened); a setting it refuses is one line and exit status 2."""
    try:
        return SocialApp(settings, run_projections=run_projections)
    except ConfigurationError as exc:
        report(str(exc))
        raise typer.Exit(EXIT_USAGE) from None


@dataclass(frozen=True)
class SocialTarget:
    """What ``serve`` serves: the service and its HTTP API (made afresh in each worker
    process of ``--workers``: it pickles)."""

    settings: Settings

    def __call__(self) -> Served:
        service = SocialApp(self.settings)
        return Served(service, create_app(self.settings, service=service))


@app.command()
def serve(
    host: Host = ServeOptions.host,
    port: Port = ServeOptions.port,
    data_dir: DataDir = None,
    write_url: WriteUrl = None,
    read_url: ReadUrl = None,
    log_level: LogLevel = ServeOptions.log_level,
    projections: Annotated[
        bool,
        typer.Option(
            "--projections/--no-projections",
            help="Also run the projections (on PostgreSQL, each one in one process at a"
            " time: the others stand by); --no-projections: HTTP only, for `worker`s to run.",
        ),
    ] = True,
    header_timeout: HeaderTimeout = ServeOptions.header_timeout,
    max_connections: MaxConnections = ServeOptions.max_connections,
    workers: Workers = ServeOptions.workers,
    log_format: LogFormat = "text",
    access_log: AccessLog = True,
) -> None:
    """The HTTP API and the projections (in one process, or --workers processes)."""
    options = ServeOptions(
        host=host,
        port=port,
        workers=workers,
        run_projections=projections,
        header_timeout=header_timeout,
        max_connections=max_connections,
        log_level=log_level,
    )
    target = SocialTarget(_settings(data_dir, write_url, read_url))
    # A partial of a module-level function: it pickles, for each worker process to call.
    logs = partial(configure_logging, log_format, access_log=access_log)
    raise typer.Exit(serve_target(target, options, configure_logging=logs))


@app.command()
def worker(
    data_dir: DataDir = None,
    write_url: WriteUrl = None,
    read_url: ReadUrl = None,
    log_format: LogFormat = "text",
) -> None:
    """The projections only, no HTTP."""
    configure_logging(log_format)
    run(work(_service(_settings(data_dir, write_url, read_url))))


@app.command("rebuild")
def rebuild_command(
    name: Annotated[str | None, typer.Argument(help="One read model (default: all).")] = None,
    data_dir: DataDir = None,
    write_url: WriteUrl = None,
    read_url: ReadUrl = None,
) -> None:
    """Rebuild read models by replaying the event store; safe while the service runs."""
    settings = _existing(_settings(data_dir, write_url, read_url))
    run(rebuild_with_progress(_service(settings, run_projections=False), name))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="JSON, like GET /projections.")] = False,
    data_dir: DataDir = None,
    write_url: WriteUrl = None,
    read_url: ReadUrl = None,
) -> None:
    """Position, head, lag and state of each projection."""
    settings = _existing(_settings(data_dir, write_url, read_url))
    run(show_status(_service(settings, run_projections=False), as_json, STATUS_FIELDS))


def _operated(ctx: typer.Context) -> SocialApp:
    """The service ``projections`` acts on (the group's options: ``ctx.obj``)."""
    settings: Settings = ctx.obj
    return _service(_existing(settings), run_projections=False)


projections = projections_commands(_operated)


@projections.callback()
def _where(
    ctx: typer.Context,
    data_dir: DataDir = None,
    write_url: WriteUrl = None,
    read_url: ReadUrl = None,
) -> None:
    """See and steer projections: parked events, pause, resume, retry, skip, rewind.

    The database options come before the subcommand: social projections --data-dir D
    retry posts."""
    ctx.obj = _settings(data_dir, write_url, read_url)


app.add_typer(projections, name="projections")


def main() -> None:
    configure_logging()
    app()


SUBJECT_PREFIX = "social.events"
"""``social relay`` publishes on ``social.events.<EventType>`` (docs/relay.md)."""


@app.command()
def relay(
    nats_url: Annotated[
        str,
        typer.Option(
            "--nats-url",
            envvar="SOCIAL_NATS_URL",
            metavar="URL",
            help="The NATS server (JetStream on): nats://HOST:PORT.",
        ),
    ],
    stream: Annotated[str, typer.Option("--stream", help="The JetStream stream.")] = "SOCIAL",
    data_dir: DataDir = None,
    write_url: WriteUrl = None,
    read_url: ReadUrl = None,
    status: Annotated[
        bool, typer.Option("--status", help="Print the stream's position and lag, then exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --status: JSON.")] = False,
    log_format: LogFormat = "text",
) -> None:
    """Publish every event, in log order, to a NATS JetStream stream (subjects
    social.events.<EventType>): each once, by one process at a time (others stand by)."""
    # Imported here: only this command needs nats-py (the nats extra).
    from cqrskit.cli import relay_events, show_relay_status

    configure_logging(log_format)
    service = _service(_existing(_settings(data_dir, write_url, read_url)), run_projections=False)
    if status:
        run(show_relay_status(service, nats_url, stream, SUBJECT_PREFIX, as_json))
    run(relay_events(service, nats_url, stream, SUBJECT_PREFIX))
