"""``serve``: an ASGI app and its cqrskit App, opened before uvicorn listens.

The App is opened before uvicorn starts, so that a failure to open (a database that is
unreachable, damaged, newer than this code) is one line and an exit status, not uvicorn's
lifespan traceback; the app's own lifespan (``cqrskit.fastapi.connect``) sees it open and
leaves it to us. Exactly one line goes to stdout, ``Listening on http://HOST:PORT``, once
the projections run and the socket accepts connections. SIGTERM or SIGINT: stop
accepting, finish the requests in flight and the projections' current batch, exit 0 (a
second signal stops waiting for open connections).

With ``workers > 1`` the socket is bound once and handed to that many processes, each
running :func:`serve_socket` (:mod:`cqrskit.cli._workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import uvicorn
from uvicorn.config import LOG_LEVELS

from ..app import App
from ..connect import parse
from ..errors import ConfigurationError, CqrsKitError
from ._protocol import protocol_with_header_timeout
from ._run import EXIT_CANNOT_LISTEN, EXIT_USAGE, Failure, exit_status

__all__ = [
    "STOP_SIGNALS",
    "ServeOptions",
    "Served",
    "Target",
    "bind",
    "listening_line",
    "load",
    "raise_open_files_limit",
    "serve_socket",
]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class Served:
    """What a target gives: the cqrskit App, and the ASGI app serving it (None for a bare
    App: ``worker``, ``rebuild`` and ``status`` work on it, ``serve`` does not)."""

    app: App
    asgi: Callable[..., Any] | None = None


class Target(Protocol):
    """Makes a fresh, unopened :class:`Served`. With ``workers > 1`` each process calls it
    for its own, so it must pickle (a module-level class's instance, say)."""

    def __call__(self) -> Served: ...


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    """0: any free port (the ``Listening on`` line says which)."""
    workers: int = 1
    """Processes sharing the one listening socket."""
    run_projections: bool | None = None
    """Also run the projections (each in one process at a time, on the leases); None: as
    the App says (its ``run_projections``)."""
    header_timeout: float = 10.0
    """Seconds a client has to send a request's headers, else its connection is closed."""
    max_connections: int = 1000
    """Connections and requests at once per process; beyond, 503 at once."""
    log_level: str = "warning"
    """uvicorn's."""

    def check(self) -> None:
        if self.workers < 1:
            raise Failure(f"--workers must be at least 1, not {self.workers}", EXIT_USAGE)
        if not self.header_timeout > 0:
            raise Failure("--header-timeout must be positive", EXIT_USAGE)
        if self.max_connections < 1:
            raise Failure("--max-connections must be at least 1", EXIT_USAGE)
        if self.log_level not in LOG_LEVELS:
            known = ", ".join(LOG_LEVELS)
            raise Failure(f"--log-level must be one of {known}, not {self.log_level!r}", EXIT_USAGE)


def raise_open_files_limit() -> None:
    """Let ``serve`` use every file descriptor the system allows it (the soft limit is
    often 1,024, the hard one far higher): each connection holds one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, not listening yet; a :class:`Failure` (exit 4)
    when the address is busy or not ours to take."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = info[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise Failure(f"cannot listen on {host}:{port}: {why}", EXIT_CANNOT_LISTEN) from None
    return sock


def listening_line(host: str, sock: socket.socket) -> str:
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    return f"Listening on http://{shown}:{sock.getsockname()[1]}"


def load(target: Target, workers: int = 1) -> Served:
    """``target()``, checked for ``serve``; its errors are :class:`Failure`."""
    try:
        served = target()
    except CqrsKitError as exc:
        raise Failure(str(exc), exit_status(exc)) from None
    if served.asgi is None:
        raise Failure(
            f"serve needs an ASGI app, and {type(served.app).__name__} is a bare cqrskit App:"
            " name a FastAPI app connected to it with cqrskit.fastapi.connect(api, app)",
            EXIT_USAGE,
        )
    if workers > 1:
        try:
            scheme = parse(served.app.url).scheme
        except ConfigurationError as exc:
            raise Failure(str(exc), EXIT_USAGE) from None
        if scheme == "memory":
            raise Failure(
                "--workers needs a database the processes share (sqlite:// or postgresql://);"
                " memory:// lives in one process",
                EXIT_USAGE,
            )
    return served


async def serve_socket(
    served: Served,
    sock: socket.socket,
    options: ServeOptions,
    announce: Callable[[], None],
    *,
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
    parent: int | None = None,
) -> int:
    """Open the App, serve on ``sock`` until a stop signal, close the App (after the
    requests in flight). ``announce`` is called once listening; ``parent``: a
    supervisor's pid, whose end ends this server too."""
    assert served.asgi is not None
    await served.app.open(run_projections=options.run_projections)
    try:
        config = uvicorn.Config(
            served.asgi,
            lifespan="on",
            log_level=options.log_level,
            # uvicorn's lines go to the command's handler, in its format (--log-format);
            # the access log is cqrskit.fastapi's, one line per request with its id.
            log_config=None,
            access_log=False,
            http=protocol_with_header_timeout(options.header_timeout),
            # Beyond it a request is answered 503 at once rather than queued.
            limit_concurrency=options.max_connections,
        )
        server = _Server(config, announce, signals, parent)
        await server.serve(sockets=[sock])
        return 0 if server.started else 1
    finally:
        await served.app.close()  # after uvicorn finished the requests in flight


class _Server(uvicorn.Server):
    """uvicorn, announcing itself once started (lifespan done: projections running; socket
    listening), and ending normally (exit 0) on a stop signal instead of re-raising it
    after the graceful shutdown."""

    def __init__(
        self,
        config: uvicorn.Config,
        announce: Callable[[], None],
        signals: Sequence[signal.Signals],
        parent: int | None,
    ) -> None:
        super().__init__(config)
        self._announce = announce
        self._signals = tuple(signals)
        self._parent = parent

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._announce()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.add_signal_handler(sig, self._on_signal)
        try:
            yield
        finally:
            for sig in self._signals:
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting for connections
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._parent is not None and counter % 10 == 0 and os.getppid() != self._parent:
            self.should_exit = True  # the supervisor died (SIGKILL): no orphan keeps serving
        return await super().on_tick(counter)
