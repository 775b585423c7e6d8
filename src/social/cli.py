"""The ``social`` command: ``serve``, ``worker``, ``rebuild``, ``status``.

``serve`` prints exactly one line on stdout, ``Listening on http://HOST:PORT``, once the
projections run and the socket accepts connections (``--port 0`` picks a free port and
prints it). SIGTERM or SIGINT: stop accepting, finish the requests in flight and the
projections' current batch, exit 0. Logs go to stderr. ``serve --no-projections`` is an
API process only (reads wait on the checkpoints that ``worker`` processes move).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cqrskit import (
    ConfigurationError,
    CqrsKitError,
    PersistenceError,
    RebuildProgress,
)

from .api import create_app
from .api.protocol import protocol_with_header_timeout
from .api.schemas import STATUS_FIELDS
from .infrastructure.bootstrap import SocialApp
from .infrastructure.logs import OneLineFormatter
from .infrastructure.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, help="The social reference service built on cqrskit.")
err = Console(stderr=True, soft_wrap=True)  # an error is one line, whatever its length

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
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _settings(data_dir: Path | None, write_url: str | None, read_url: str | None) -> Settings:
    """The settings; a bad value in the environment is one line and exit status 2."""
    try:
        return Settings.from_env(data_dir=data_dir, write_url=write_url, read_url=read_url)
    except ConfigurationError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


EXIT_ERROR = 1
"""Exit status of a command that failed at run time (the message says why)."""
EXIT_USAGE = 2
"""Exit status of a command given something that cannot be right (as for a bad option)."""
EXIT_DATABASE = 3
"""Exit status when a database cannot be opened or used: unreachable, damaged, full, its
schema newer than this code (the message names which and why)."""
EXIT_CANNOT_LISTEN = 4
"""Exit status of ``serve`` when it cannot listen on the address (in use, not allowed)."""


def _exit_status(exc: CqrsKitError | OSError) -> int:
    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE
    if isinstance(exc, PersistenceError):
        return EXIT_DATABASE
    return EXIT_ERROR


def _existing(settings: Settings) -> Settings:
    """``settings``, for a command that works on what ``serve`` wrote: on SQLite, a data
    directory that does not exist is refused in one line (a typo in ``--data-dir`` would
    otherwise create an empty one, with a fresh secret, and report on nothing)."""
    if settings.write_url is None and not settings.data_dir.is_dir():
        err.print(f"error: no data directory at {settings.data_dir}: is --data-dir right?")
        raise typer.Exit(EXIT_USAGE)
    return settings


def _run(coro: Coroutine[Any, Any, int], *, uvloop_loop: bool = False) -> None:
    """Run a command's coroutine; a framework error or one of the system's (a directory
    that cannot be created, say) is one line and an exit status that says which kind.

    ``uvloop_loop``: on uvloop (installed with uvicorn[standard]) instead of asyncio's own
    loop, for ``serve``: its transports and thread wake-ups cost a fraction of the
    selector loop's, and ``uvicorn.Server.serve`` runs on whatever loop it is given."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if uvloop_loop:
        import uvloop

        factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            code = runner.run(coro)
    except (CqrsKitError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(_exit_status(exc)) from None
    raise typer.Exit(code)


class _Server(uvicorn.Server):
    """uvicorn, announcing itself once started (lifespan done: projections running; socket
    listening), and ending normally (exit 0) on a stop signal instead of re-raising it
    after the graceful shutdown."""

    def __init__(self, config: uvicorn.Config, announce: str) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self._announce, flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal)
        try:
            yield
        finally:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting for connections
        self.should_exit = True


@dataclass(frozen=True)
class _Limits:
    header_timeout: float
    max_connections: int


def _raise_open_files_limit() -> None:
    """Let ``serve`` use every file descriptor the system allows it (the soft limit is
    often 1,024, the hard one far higher): each connection holds one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _bind(host: str, port: int) -> socket.socket:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


async def _serve(
    settings: Settings,
    host: str,
    port: int,
    log_level: str,
    run_projections: bool,
    limits: _Limits,
) -> int:
    try:
        sock = _bind(host, port)
    except OSError as exc:
        err.print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}")
        return EXIT_CANNOT_LISTEN
    try:
        # Opened before uvicorn, so that a failure is one line and an exit status of
        # _run's, not uvicorn's lifespan traceback.
        async with SocialApp(settings, run_projections=run_projections) as service:
            # Closed after uvicorn finished the requests in flight.
            return await _listen(settings, service, sock, host, log_level, limits)
    finally:
        sock.close()


async def _listen(
    settings: Settings,
    service: SocialApp,
    sock: socket.socket,
    host: str,
    log_level: str,
    limits: _Limits,
) -> int:
    real_port = sock.getsockname()[1]
    _raise_open_files_limit()
    config = uvicorn.Config(
        create_app(settings, service=service),
        lifespan="on",
        log_level=log_level,
        access_log=False,
        http=protocol_with_header_timeout(limits.header_timeout),
        # Beyond it a request is answered 503 at once rather than queued.
        limit_concurrency=limits.max_connections,
    )
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    server = _Server(config, f"Listening on http://{shown}:{real_port}")
    await server.serve(sockets=[sock])
    return 0 if server.started else 1


async def _worker(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    async with SocialApp(settings) as service:  # closing lets the runner finish its batch
        names = ", ".join(p.name for p in service.projections)
        print(f"Running projections: {names}", flush=True)
        await stop.wait()
    return 0


async def _rebuild(settings: Settings, name: str | None) -> int:
    async with SocialApp(settings, run_projections=False) as service:
        if name:
            service.projection(name)  # an unknown name fails before the bars
        columns = (
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9.0f} events/s"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err) as progress:
            tasks: dict[str, TaskID] = {}

            def report(projection: str, p: RebuildProgress) -> None:
                if projection not in tasks:
                    tasks[projection] = progress.add_task(projection, total=None, rate=0.0)
                task = tasks[projection]
                progress.update(task, completed=p.done, total=p.total, rate=p.events_per_second)

            for result in await service.rebuild(name, on_progress=report):
                print(
                    f"Rebuilt {result.name}: {result.events} events up to position"
                    f" {result.position} in {result.seconds:.2f}s",
                    flush=True,
                )
    return 0


async def _status(settings: Settings, as_json: bool) -> int:
    async with SocialApp(settings, run_projections=False) as service:
        statuses = await service.status()
    rows = [s.to_dict(STATUS_FIELDS) for s in statuses]
    if as_json:
        print(json.dumps(rows), flush=True)
        return 0
    table = Table("projection", "position", "head", "lag (events)", "lag (s)", "state")
    for r in rows:
        table.add_row(
            str(r["name"]),
            str(r["position"]),
            str(r["head"]),
            str(r["lag_events"]),
            f"{r['lag_seconds']:.2f}",
            str(r["state"]),
        )
    Console().print(table)
    return 0


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8000,
    data_dir: DataDir = None,
    write_url: WriteUrl = None,
    read_url: ReadUrl = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "warning",
    projections: Annotated[
        bool,
        typer.Option(
            "--projections/--no-projections",
            help="Also run the projections (on PostgreSQL, each one in one process at a"
            " time: the others stand by); --no-projections: HTTP only, for `worker`s to run.",
        ),
    ] = True,
    header_timeout: Annotated[
        float,
        typer.Option(help="Seconds a client has to send a request's headers, else closed."),
    ] = 10.0,
    max_connections: Annotated[
        int,
        typer.Option(help="Connections and requests at once; beyond, 503 at once."),
    ] = 1000,
) -> None:
    """The HTTP API and the projections, in one process."""
    limits = _Limits(header_timeout, max_connections)
    settings = _settings(data_dir, write_url, read_url)
    _run(_serve(settings, host, port, log_level, projections, limits), uvloop_loop=True)


@app.command()
def worker(data_dir: DataDir = None, write_url: WriteUrl = None, read_url: ReadUrl = None) -> None:
    """The projections only, no HTTP."""
    _run(_worker(_settings(data_dir, write_url, read_url)))


@app.command("rebuild")
def rebuild_command(
    name: Annotated[str | None, typer.Argument(help="One read model (default: all).")] = None,
    data_dir: DataDir = None,
    write_url: WriteUrl = None,
    read_url: ReadUrl = None,
) -> None:
    """Rebuild read models by replaying the event store; safe while the service runs."""
    _run(_rebuild(_existing(_settings(data_dir, write_url, read_url)), name))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="JSON, like GET /projections.")] = False,
    data_dir: DataDir = None,
    write_url: WriteUrl = None,
    read_url: ReadUrl = None,
) -> None:
    """Position, head, lag and state of each projection."""
    _run(_status(_existing(_settings(data_dir, write_url, read_url)), as_json))


def main() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    app()
