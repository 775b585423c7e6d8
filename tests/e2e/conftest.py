"""Fixtures for the end-to-end suite: real `social serve` processes on fresh storage.

The suite is backend-agnostic. A *storage* is the set of CLI options naming where the data
lives (`--data-dir DIR`, or `--write-url/--read-url` for PostgreSQL); every server, rebuild
and status command of a test receives the same options. Backends to run the whole suite on
come from `SOCIAL_E2E_BACKENDS` (comma-separated, default `sqlite,postgres`: the
`postgres` run uses two fresh PostgreSQL databases per storage, and skips with a reason
where no server answers, or fails when CQRSKIT_REQUIRE_POSTGRES=1, as in CI), and
`SOCIAL_E2E_SERVER_ARGS` adds extra options to every `serve` (shell syntax)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.conftest import _url_for, create_pg_database, drop_pg_database
from tests.e2e._support import REPORT, Server, ServerFactory, ServerPool, Storage


def _backend_params() -> list[object]:
    names = [n.strip() for n in os.environ.get("SOCIAL_E2E_BACKENDS", "sqlite,postgres").split(",")]
    params: list[object] = []
    for name in filter(None, names):
        marks = [pytest.mark.postgres] if name == "postgres" else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(scope="session", params=_backend_params())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name not in ("sqlite", "postgres"):
        pytest.fail(f"unknown SOCIAL_E2E_BACKENDS entry {name!r}")
    if name == "postgres":
        request.getfixturevalue("pg_server")  # skips (or fails in CI) without a server
    return name


@pytest.fixture(scope="session")
def new_storage(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], Storage]]:
    """A factory of fresh, empty storages for the selected backend; all dropped at the end."""
    databases: list[str] = []

    def make() -> Storage:
        if backend == "sqlite":
            data_dir = tmp_path_factory.mktemp("social-data")
            return Storage("sqlite", ("--data-dir", str(data_dir)))
        write_db, read_db = create_pg_database(), create_pg_database()
        databases.extend([write_db, read_db])
        return Storage(
            "postgres", ("--write-url", _url_for(write_db), "--read-url", _url_for(read_db))
        )

    yield make
    for name in databases:
        drop_pg_database(name)


@pytest.fixture(scope="session")
def server_extra_args() -> tuple[str, ...]:
    """Options added to every `social serve` of the suite."""
    return tuple(shlex.split(os.environ.get("SOCIAL_E2E_SERVER_ARGS", "")))


@pytest.fixture
def server_factory(
    new_storage: Callable[[], Storage],
    server_extra_args: tuple[str, ...],
    tmp_path: Path,
) -> Iterator[ServerFactory]:
    """Start servers for one test (fresh storage unless one is given, e.g. to restart on the
    same data); every one of them is killed at teardown, whatever the test's outcome."""
    pool = ServerPool(new_storage, tmp_path / "logs")

    def start(storage: Storage | None = None, extra_args: Sequence[str] = ()) -> Server:
        return pool.start(storage, (*server_extra_args, *extra_args))

    try:
        yield start
    finally:
        pool.close()


@pytest.fixture(scope="module")
def server(
    new_storage: Callable[[], Storage],
    server_extra_args: tuple[str, ...],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """One server shared by a module's tests, on its own fresh storage. Tests that share it
    create their own users, so they never depend on each other's data."""
    pool = ServerPool(new_storage, tmp_path_factory.mktemp("logs"))
    try:
        yield pool.start(None, server_extra_args)
    finally:
        pool.close()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the measured figures (consistency window) even without `-s`."""
    for name, value in REPORT.items():
        terminalreporter.write_line(f"e2e {name}: {value}")
