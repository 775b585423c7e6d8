"""The ``cqrskit`` command: ``cqrskit --app MODULE:ATTR serve|worker|rebuild|status``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from ..app import App
from ._commands import existing, rebuild_with_progress, show_status, work
from ._logging import configure_logging
from ._options import (
    AccessLog,
    HeaderTimeout,
    Host,
    LogFormat,
    LogLevel,
    MaxConnections,
    Port,
    Workers,
)
from ._projections import projections_commands
from ._relay import relay_command
from ._run import EXIT_USAGE, Failure, report, run
from ._serve import ServeOptions
from ._target import AppSpec
from ._workers import serve

__all__ = ["cli", "configure_logging", "main"]

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Serve, project, rebuild and inspect a cqrskit application.",
)


@dataclass(frozen=True)
class _Given:
    app: str | None
    url: str | None
    read_url: str | None

    def target(self) -> AppSpec:
        if not self.app:
            raise Failure("give the application: --app MODULE:ATTR (or CQRSKIT_APP)", EXIT_USAGE)
        return AppSpec(self.app, self.url, self.read_url)


def _show_version(value: bool) -> None:
    if value:
        try:
            print(f"cqrskit {version('cqrskit')}")
        except PackageNotFoundError:  # a source tree that was never installed
            print("cqrskit (version unknown: not installed)")
        raise typer.Exit(0)


@cli.callback()
def root(
    ctx: typer.Context,
    app: Annotated[
        str | None,
        typer.Option(
            "--app",
            envvar="CQRSKIT_APP",
            metavar="MODULE:ATTR",
            help="A cqrskit App, an ASGI app connected to one (cqrskit.fastapi.connect),"
            " or a function returning either.",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(envvar="CQRSKIT_URL", help="The database, instead of the app's own URL."),
    ] = None,
    read_url: Annotated[
        str | None,
        typer.Option(envvar="CQRSKIT_READ_URL", help="PostgreSQL: the read models' database."),
    ] = None,
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    ctx.obj = _Given(app, url, read_url)


def _app(ctx: typer.Context, *, must_exist: bool = False) -> App:
    """The App of ``--app`` (configured), or one line and exit status 2."""
    given: _Given = ctx.obj
    try:
        app = given.target()().app
        return existing(app) if must_exist else app
    except Failure as failure:
        report(failure.message)
        raise typer.Exit(failure.status) from None


@cli.command("serve")
def serve_command(
    ctx: typer.Context,
    host: Host = ServeOptions.host,
    port: Port = ServeOptions.port,
    workers: Workers = ServeOptions.workers,
    projections: Annotated[
        bool | None,
        typer.Option(
            "--projections/--no-projections",
            help="Also run the projections (default: as the App says);"
            " --no-projections: HTTP only, for `worker`s to run them.",
        ),
    ] = None,
    header_timeout: HeaderTimeout = ServeOptions.header_timeout,
    max_connections: MaxConnections = ServeOptions.max_connections,
    log_level: LogLevel = ServeOptions.log_level,
    log_format: LogFormat = "text",
    access_log: AccessLog = True,
) -> None:
    """The HTTP API (an ASGI app connected to the App) and the projections."""
    given: _Given = ctx.obj
    try:
        target = given.target()
    except Failure as failure:
        report(failure.message)
        raise typer.Exit(failure.status) from None
    options = ServeOptions(
        host=host,
        port=port,
        workers=workers,
        run_projections=projections,
        header_timeout=header_timeout,
        max_connections=max_connections,
        log_level=log_level,
    )
    # A partial of a module-level function: it pickles, for each worker process to call.
    logs = partial(configure_logging, log_format, access_log=access_log)
    raise typer.Exit(serve(target, options, configure_logging=logs))


@cli.command()
def worker(ctx: typer.Context, log_format: LogFormat = "text") -> None:
    """The projections only, no HTTP, until SIGTERM or SIGINT."""
    configure_logging(log_format)
    run(work(_app(ctx)))


@cli.command("rebuild")
def rebuild_command(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="One read model (default: all).")] = None,
) -> None:
    """Rebuild read models by replaying the event store; safe while the app runs."""
    run(rebuild_with_progress(_app(ctx, must_exist=True), name))


@cli.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON rows instead of a table.")] = False,
) -> None:
    """Position, head, lag and state of each projection."""
    run(show_status(_app(ctx, must_exist=True), as_json))


cli.add_typer(
    projections_commands(partial(_app, must_exist=True)),
    name="projections",
    help="See and steer projections: parked events, pause, resume, retry, skip, rewind.",
)
relay_command(cli, partial(_app, must_exist=True))


def main() -> None:
    configure_logging()
    cli(prog_name="cqrskit")
