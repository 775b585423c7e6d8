"""The ``cqrskit`` command, and the pieces an application's own command is built of.

::

    cqrskit --app myapp.main:api serve --workers 4 --port 8000
    cqrskit --app myapp.main:api worker
    cqrskit --app myapp.main:api rebuild [NAME]
    cqrskit --app myapp.main:api status [--json]
    cqrskit --app myapp.main:api relay --nats-url nats://127.0.0.1:4222

``--app MODULE:ATTR`` (or ``CQRSKIT_APP``) names a cqrskit App, an ASGI app connected to
one with :func:`cqrskit.fastapi.connect`, or a function returning either; ``--url`` and
``--read-url`` (``CQRSKIT_URL``, ``CQRSKIT_READ_URL``) point it at other databases;
``serve`` and ``worker`` log as ``--log-format text|json`` says, each line with the id of
the request it was written for (docs/observability.md). See docs/cli.md.

This package is the ``cli`` extra (typer, rich, uvicorn): ``import cqrskit`` never imports
it. An application's own command (``social``) reuses :func:`serve` (one process or
``workers`` processes on one port, the header deadline, one-line failures and their exit
statuses), :func:`work`, :func:`rebuild_with_progress`, :func:`show_status`,
:func:`relay_events` and :func:`show_relay_status`.
"""

from .._tracing import JsonFormatter, RequestIdFilter, TextFormatter
from ._commands import STATUS_FIELDS, existing, rebuild_with_progress, show_status, work
from ._logging import configure_logging
from ._main import cli, main
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
from ._protocol import protocol_with_header_timeout
from ._relay import NatsUrl, relay_events, show_relay_status
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
    "AccessLog",
    "AppSpec",
    "Failure",
    "HeaderTimeout",
    "Host",
    "JsonFormatter",
    "LogFormat",
    "LogLevel",
    "MaxConnections",
    "NatsUrl",
    "Port",
    "RequestIdFilter",
    "ServeOptions",
    "Served",
    "Target",
    "TextFormatter",
    "Workers",
    "cli",
    "configure_logging",
    "existing",
    "exit_status",
    "main",
    "projections_commands",
    "protocol_with_header_timeout",
    "rebuild_with_progress",
    "relay_events",
    "report",
    "run",
    "run_async",
    "serve",
    "show_relay_status",
    "show_status",
    "work",
]
