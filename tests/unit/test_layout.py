"""The layout is the architecture: checks anyone can run.

- no import cycles, in cqrskit or social (every import statement counts, lazy ones too);
- the framework core imports no backend and no database driver; a backend imports the
  core and its own package, never another backend (the memory backend's read side runs
  on SQLite's stdlib driver in memory, through the SQLite backend's connection plumbing);
- every backend package has the same module names for the same ports;
- no module over 400 lines unless its docstring says why ("Why this module is long:");
- the public API is what ``cqrskit`` and ``cqrskit.backends.<name>`` export (pinned
  here), and the app imports nothing else (its domain only the domain primitives).
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"cqrskit": ROOT / "src", "social": ROOT / "services" / "social" / "src"}
"""Where each distribution's package lives: the framework, and the service beside it."""
BACKENDS = ("memory", "sqlite", "postgres")
MAX_LINES = 400
LONG_MARKER = "Why this module is long:"


def _modules(package: str) -> dict[str, Path]:
    src = SOURCES[package]
    found: dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


ALL = {**_modules("cqrskit"), **_modules("social")}


def _bound(package: str) -> set[str]:
    """Names a package's ``__init__`` binds by importing them."""
    path = ALL.get(package)
    if path is None or path.name != "__init__.py":
        return set()
    return {
        alias.asname or alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every module ``name`` imports (absolute names), at any depth of its code."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            for alias in node.names:  # ``from pkg import module`` (not a name it binds)
                if f"{target}.{alias.name}" in ALL and alias.name not in _bound(target):
                    yield f"{target}.{alias.name}"


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _imports(name, path) if m in ALL} for name, path in ALL.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_walker_sees_imports() -> None:
    graph = _graph()
    assert "cqrskit.eventstore" in graph["cqrskit.runner"]
    assert "cqrskit.backends.sqlite.connection" in graph["cqrskit.backends.sqlite.store"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package's __init__ importing its own modules is how it exports them; a module
    # importing a sibling makes Python import the package first, which is no cycle of ours.
    for name in graph:
        graph[name] = {
            m
            for m in graph[name]
            if not (ALL[m].name == "__init__.py" and name.startswith(m + "."))
        }
    assert _cycles(graph) == []


DRIVERS = {"sqlite3", "psycopg", "psycopg_pool"}


WEB = {"fastapi", "starlette", "pydantic", "uvicorn"}


def test_only_the_web_integration_imports_a_web_framework() -> None:
    """``pip install cqrskit`` needs msgspec alone: fastapi is the extra of cqrskit.fastapi,
    uvicorn (with typer and rich) the extra of the command, cqrskit.cli."""
    found = {}
    for name, path in ALL.items():
        if not name.startswith("cqrskit") or name.startswith(("cqrskit.fastapi", "cqrskit.cli")):
            continue
        bad = {m for m in _imports(name, path) if m.split(".")[0] in WEB}
        if bad:
            found[name] = bad
    assert found == {}


def test_only_the_relay_imports_the_nats_client() -> None:
    """nats-py is the extra of cqrskit.relay; the ``relay`` commands import the relay
    when they run (checked below), so ``cqrskit`` and its command need no nats-py."""
    found = {}
    for name, path in ALL.items():
        if name.startswith("cqrskit.relay") or name in ("cqrskit.cli._relay", "social.cli"):
            continue
        bad = {m for m in _imports(name, path) if m.split(".")[0] == "nats"}
        bad |= {m for m in _imports(name, path) if m.startswith("cqrskit.relay")}
        if bad:
            found[name] = bad
    assert found == {}


def test_importing_cqrskit_and_its_command_imports_no_nats() -> None:
    code = "import sys, cqrskit, cqrskit.cli, social.cli; print('nats' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in SOURCES.values())}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.strip() == "False", done.stderr


CRYPTO_MODULES = {"cqrskit._cipher"}
"""The modules that may import ``cryptography`` (the ``crypto`` extra): the cipher of
personal fields (issue 13), none other. The key stores need no cryptography package:
their keys are random bytes."""


def test_only_the_cipher_imports_cryptography() -> None:
    found = {}
    for name, path in ALL.items():
        if name in CRYPTO_MODULES:
            continue
        bad = {m for m in _imports(name, path) if m.split(".")[0] == "cryptography"}
        if bad:
            found[name] = bad
    assert found == {}


def test_importing_cqrskit_and_its_key_stores_imports_no_cryptography() -> None:
    code = (
        "import sys, cqrskit, cqrskit.keystore, cqrskit.backends.memory.keys,"
        " cqrskit.backends.sqlite.keys, cqrskit.backends.postgres.keys;"
        " print('cryptography' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in SOURCES.values())}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.strip() == "False", done.stderr


def test_the_core_imports_no_backend_and_no_driver() -> None:
    found = {}
    for name, path in ALL.items():
        if not name.startswith("cqrskit") or name.startswith("cqrskit.backends"):
            continue
        bad = {
            m
            for m in _imports(name, path)
            if m.startswith("cqrskit.backends") or m.split(".")[0] in DRIVERS
        }
        if bad:
            found[name] = bad
    assert found == {}


def test_a_backend_imports_no_other_backend() -> None:
    found = {}
    for name, path in ALL.items():
        if not name.startswith("cqrskit.backends."):
            continue
        own = name.split(".")[2]
        allowed = {f"cqrskit.backends.{own}"}
        if own == "memory":
            allowed.add("cqrskit.backends.sqlite.connection")
        bad = {
            m
            for m in _imports(name, path)
            if m.startswith("cqrskit.backends.")
            and not any(m == a or m.startswith(a + ".") for a in allowed)
        }
        if bad:
            found[name] = bad
    assert found == {}


def test_every_backend_has_the_same_port_modules() -> None:
    for backend in BACKENDS:
        package = SOURCES["cqrskit"] / "cqrskit" / "backends" / backend
        names = {p.stem for p in package.glob("*.py")}
        assert {"__init__", "store", "database", "lease", "keys"} <= names, backend
    for backend in ("sqlite", "postgres"):
        assert (SOURCES["cqrskit"] / "cqrskit" / "backends" / backend / "connection.py").exists()


def test_no_module_is_long_without_saying_why() -> None:
    long = {}
    for name, path in ALL.items():
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_LINES and LONG_MARKER not in (ast.get_docstring(ast.parse(text)) or ""):
            long[name] = lines
    assert long == {}


CQRSKIT_API = {
    "ANY", "NO_STREAM", "Aggregate", "App", "AppendResult", "Codec", "Command", "CommandBus",
    "CommandContext", "CommandResult", "ConcurrencyError", "ConfigurationError",
    "ConsistencyTimeout", "CqrsKitError", "DamagedDatabase", "Dispatch", "Event",
    "EventDecodeError",
    "EventStore", "ExpectedVersion", "HandlerNotFound", "InlineHandler", "IntegrityError",
    "Lease", "Metadata", "Middleware", "OperationalError", "PersistenceError",
    "PositionBeyondLog", "Projection",
    "ProjectionError", "ProjectionRunner", "ProjectionStatus", "Query", "QueryBus",
    "QueryResult", "ReadDatabase", "RebuildProgress", "RebuildResult", "RebuildTarget",
    "RecordedEvent", "Repository", "RetryPolicy", "Row", "SchemaError", "SerializationError",
    "Snapshot", "SqlTx", "StaleVersion", "StorageFull", "StoreClosed", "StreamNotFound",
    "StreamState", "UniqueViolation",
    "UnknownEventType", "UpcastError", "Upcaster", "backoff_delays", "command",
    "create_read_models", "current_context", "handles", "logging_middleware", "new_id",
    "projection_status", "query", "Options",
    "Action", "InvalidAction", "Operations", "ParkedEvent", "ProjectionFailure",
    "UnknownProjection", "PROJECTION_STATES",
    "IdempotencyKey", "IdempotencyKeyReused", "InvalidIdempotencyKey", "StreamAppend",
    "read_position", "rebuild", "retry_on_conflict_middleware", "retry_read",
    "subscribe", "timing_middleware", "wait_for_position",
    "RelayReport", "relay_reports",
    "FORGOTTEN", "KeyConflict", "KeyStore", "SubjectForgotten", "ReadDurability",
}  # fmt: skip

BACKEND_API = {
    "memory": {
        "LeaseRegistry",
        "MemoryDatabase",
        "MemoryEventStore",
        "MemoryKeyStore",
        "MemoryLease",
    },
    "sqlite": {"SqliteDatabase", "SqliteEventStore", "SqliteKeyStore", "SqliteLease", "StoreStats"},
    "postgres": {
        "PgAdvisoryLease",
        "PostgresDatabase",
        "PostgresEventStore",
        "PostgresKeyStore",
        "apply_migrations",
    },
}


EXTRA_API = {
    "cqrskit.fastapi": {
        "DEFAULT_ERRORS", "MAX_POSITION_DIGITS", "READ_RESPONSES", "WRITE_RESPONSES",
        "BadRequest", "Conflict", "Error", "ErrorHandler", "MinPosition", "NotCaughtUp",
        "application", "connect", "error_response", "min_position", "respond", "responses",
        "RequestObserver", "RequestTracing", "current_request_id", "trace_requests",
        "DEFAULT_ACTION_WAIT", "operations_router",
        "health_routes",
        "IDEMPOTENCY_HEADER", "REPLAYED_HEADER", "IdempotencyKeyHeader", "idempotency_key",
    },
    "cqrskit.cli": {
        "EXIT_CANNOT_LISTEN", "EXIT_DATABASE", "EXIT_ERROR", "EXIT_USAGE", "STATUS_FIELDS",
        "HeaderTimeout", "Host", "LogLevel", "MaxConnections", "Port", "Workers",
        "AppSpec", "Failure", "ServeOptions", "Served", "Target", "cli", "configure_logging",
        "existing", "exit_status", "main", "protocol_with_header_timeout",
        "rebuild_with_progress", "report", "run", "run_async", "serve", "show_status", "work",
        "AccessLog", "JsonFormatter", "LogFormat", "RequestIdFilter", "TextFormatter",
        "projections_commands",
        "NatsUrl", "relay_events", "show_relay_status",
    },
    "cqrskit.relay": {
        "BrokerRefused", "BrokerUnavailable", "JetStreamPublisher", "MemoryPublisher",
        "Publisher", "Relay", "RelayError", "RelayMessage", "RelayStatus", "StreamEnd",
        "StreamMoved", "check_nats_url", "check_stream_name", "check_subject_prefix",
        "default_stream", "position_of", "prometheus_text", "relay_status", "serve_metrics",
        "subject_for", "to_message",
    },
    "cqrskit.testing": {
        "DEFAULT_STREAM", "AggregateScenario", "CommandScenario", "Outcome",
        "ProjectionScenario", "given",
    },
}  # fmt: skip
"""The packages beside the core that an app imports: the web integration, the command's
pieces, the test kit."""


@pytest.mark.parametrize(
    "package", ["cqrskit", *(f"cqrskit.backends.{b}" for b in BACKENDS), *EXTRA_API]
)
def test_the_public_api_is_pinned_and_resolves(package: str) -> None:
    module = importlib.import_module(package)
    if package in EXTRA_API:
        expected = EXTRA_API[package]
    elif package == "cqrskit":
        expected = CQRSKIT_API
    else:
        expected = BACKEND_API[package.rsplit(".", 1)[1]]
    assert set(module.__all__) == expected
    assert len(module.__all__) == len(expected)  # no name listed twice
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_the_app_imports_only_public_names() -> None:
    public = {"cqrskit", *(f"cqrskit.backends.{b}" for b in BACKENDS), *EXTRA_API}
    domain_primitives = {"cqrskit.aggregate", "cqrskit.messages"}
    found = {}
    for name, path in ALL.items():
        if not name.startswith("social"):
            continue
        allowed = domain_primitives if name.startswith("social.domain") else public
        bad = {m for m in _imports(name, path) if m.startswith("cqrskit") and m not in allowed}
        if bad:
            found[name] = bad
    assert found == {}
