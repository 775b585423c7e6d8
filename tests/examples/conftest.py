"""The bank on each backend: memory, SQLite in the test's directory, and a fresh PostgreSQL
database (``pg_url`` of tests/conftest.py: skipped with the reason when the server is
absent, failed instead under CQRSKIT_REQUIRE_POSTGRES=1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from examples.bank.app import Bank


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bank'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def bank(url: str) -> AsyncIterator[Bank]:
    async with Bank(url) as bank:
        yield bank
