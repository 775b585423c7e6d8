"""The ``cqrskit`` command, and the pieces an application's own command is built of.

::

    cqrskit --app myapp.main:api serve --workers 4 --port 8000
    cqrskit --app myapp.main:api worker
    cqrskit --app myapp.main:api rebuild [NAME]
    cqrskit --app myapp.main:api status [--json]

``--app MODULE:ATTR`` (or ``CQRSKIT_APP``) names a cqrskit App, an ASGI app connected to
one with :func:`cqrskit.fastapi.connect`, or a function returning either; ``--url`` and
``--read-url`` (``CQRSKIT_URL``, ``CQRSKIT_READ_URL``) point it at other databases. See
docs/cli.md.

This package is the ``cli`` extra (typer, rich, uvicorn): ``import cqrskit`` never imports
it. An application's own command (``social``) reuses :func:`serve` (one process or
``workers`` processes on one port, the header deadline, one-line failures and their exit
statuses), :func:`work`, :func:`rebuild_with_progress` and :func:`show_status`.
"""

from ._commands import STATUS_FIELDS, existing, rebuild_with_progress, show_status, work
from ._main import cli, configure_logging, main
from ._options import HeaderTimeout, Host, LogLevel, MaxConnections, Port, Workers
from ._protocol import protocol_with_header_timeout
from ._run import (
    EXIT_CANNOT_LISTEN,
    EXIT_DATABASE,
    EXIT_ERROR,
    EXIT_USAGE,
    Failure,
    exit_status,
    report,
    run,
    run_async,
)
from ._serve import Served, ServeOptions, Target
from ._target import AppSpec
from ._workers import serve

__all__ = [
    "EXIT_CANNOT_LISTEN",
    "EXIT_DATABASE",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "STATUS_FIELDS",
    "AppSpec",
    "Failure",
    "HeaderTimeout",
    "Host",
    "LogLevel",
    "MaxConnections",
    "Port",
    "ServeOptions",
    "Served",
    "Target",
    "Workers",
    "cli",
    "configure_logging",
    "existing",
    "exit_status",
    "main",
    "protocol_with_header_timeout",
    "rebuild_with_progress",
    "report",
    "run",
    "run_async",
    "serve",
    "show_status",
    "work",
]
