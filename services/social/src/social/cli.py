"""The ``social`` command: ``serve``, ``worker``, ``rebuild``, ``status``, built on
:mod:`cqrskit.cli` (which ``cqrskit --app`` runs for any app) with the service's own
options: ``--data-dir`` or ``--write-url``/``--read-url`` and the ``SOCIAL_*`` variables.

``serve`` prints exactly one line on stdout, ``Listening on http://HOST:PORT``, once the
projections run and the socket accepts connections (``--port 0`` picks a free port and
prints it). SIGTERM or SIGINT: stop accepting, finish the requests in flight and the
projections' current batch, exit 0. Logs go to stderr. ``serve --no-projections`` is an
API process only (reads wait on the checkpoints that ``worker`` processes move);
``serve --workers N`` is N processes on one port (see docs/cli.md).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from cqrskit import ConfigurationError
from cqrskit.cli import (
    EXIT_CANNOT_LISTEN,
    EXIT_DATABASE,
    EXIT_ERROR,
    EXIT_USAGE,
    HeaderTimeout,
    Host,
    LogLevel,
    MaxConnections,
    Port,
    Served,
    ServeOptions,
    Workers,
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
from .infrastructure.logs import OneLineFormatter
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
    raise typer.Exit(serve_target(target, options, configure_logging=_configure_logging))


@app.command()
def worker(data_dir: DataDir = None, write_url: WriteUrl = None, read_url: ReadUrl = None) -> None:
    """The projections only, no HTTP."""
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


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def main() -> None:
    _configure_logging()
    app()
