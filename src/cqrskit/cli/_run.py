"""Exit statuses, one-line failures, and running a command's coroutine.

Every command reports a failure in one line on stderr (``error: ...``), never a
traceback, and exits with a status that says which kind of failure it was.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import (
    ConfigurationError,
    CqrsKitError,
    InvalidAction,
    PersistenceError,
    UnknownProjection,
)

__all__ = [
    "EXIT_CANNOT_LISTEN",
    "EXIT_DATABASE",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "Failure",
    "err",
    "exit_status",
    "report",
    "run",
    "run_async",
]

EXIT_ERROR = 1
"""Exit status of a command that failed at run time (the message says why)."""
EXIT_USAGE = 2
"""Exit status of a command given something that cannot be right (as for a bad option)."""
EXIT_DATABASE = 3
"""Exit status when a database cannot be opened or used: unreachable, damaged, full, its
schema newer than this code (the message names which and why)."""
EXIT_CANNOT_LISTEN = 4
"""Exit status of ``serve`` when it cannot listen on the address (in use, not allowed)."""

err = Console(stderr=True, soft_wrap=True, emoji=False)  # one line, whatever its length


class Failure(Exception):
    """A command failed: ``message`` (one line) and the exit status that says which way."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def exit_status(exc: CqrsKitError | OSError) -> int:
    if isinstance(exc, ConfigurationError | InvalidAction | UnknownProjection):
        return EXIT_USAGE
    if isinstance(exc, PersistenceError):
        return EXIT_DATABASE
    return EXIT_ERROR


def report(message: str) -> None:
    """``error: message``, one line on stderr (a driver's message of several lines too)."""
    line = re.sub(r"\s*\n\s*", " ", message.strip())
    err.print(f"[red]error:[/red] {escape(line)}", markup=True, highlight=False)


def run_async(coro: Coroutine[Any, Any, int], *, uvloop_loop: bool = False) -> int:
    """Run a command's coroutine to its exit status; a framework error or one of the
    system's (a directory that cannot be created, say) becomes a :class:`Failure`.

    ``uvloop_loop``: on uvloop (installed with uvicorn[standard]) instead of asyncio's own
    loop, for ``serve``: its transports and thread wake-ups cost a fraction of the
    selector loop's, and ``uvicorn.Server.serve`` runs on whatever loop it is given."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if uvloop_loop:
        import uvloop

        factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)
    except (CqrsKitError, OSError) as exc:
        raise Failure(str(exc), exit_status(exc)) from None


def run(coro: Coroutine[Any, Any, int], *, uvloop_loop: bool = False) -> NoReturn:
    """Run a command's coroutine and exit with its status; a failure is one line."""
    try:
        code = run_async(coro, uvloop_loop=uvloop_loop)
    except Failure as failure:
        report(failure.message)
        raise typer.Exit(failure.status) from None
    raise typer.Exit(code)
