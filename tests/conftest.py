"""Shared fixtures. PostgreSQL tests skip with a reason when the server is absent, unless
CQRSKIT_REQUIRE_POSTGRES=1 (set by .ci/run), where its absence fails them instead."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN_URL = os.environ.get(
    "CQRSKIT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("CQRSKIT_REQUIRE_POSTGRES") == "1"


def _pg_available() -> str | None:
    """None when the server answers, else the reason it does not."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}"
    return None


def _url_for(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


def create_pg_database() -> str:
    import psycopg

    name = f"cqrskit_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL server (skips, or fails in CI, otherwise)."""
    reason = _pg_available()
    if reason is not None:
        if REQUIRE_PG:
            pytest.fail(f"CQRSKIT_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = create_pg_database()
    try:
        yield _url_for(name)
    finally:
        drop_pg_database(name)


@pytest.fixture
def pg_url_pair(pg_server: str) -> Iterator[tuple[str, str]]:
    """Two fresh databases (write, read) for one test."""
    names = [create_pg_database(), create_pg_database()]
    try:
        yield _url_for(names[0]), _url_for(names[1])
    finally:
        for name in names:
            drop_pg_database(name)
