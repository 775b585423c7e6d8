"""The read database contract (with its rebuild target) on every backend: memory, SQLite,
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.contracts.read_database")

from cqrskit import ReadDatabase  # noqa: E402
from cqrskit.backends.memory import MemoryDatabase  # noqa: E402
from cqrskit.backends.postgres import PostgresDatabase  # noqa: E402
from cqrskit.backends.sqlite import SqliteDatabase  # noqa: E402
from tests.contracts.read_database import ReadDatabaseContract  # noqa: E402


class TestMemoryDatabase(ReadDatabaseContract):
    writes_commit_during_reads = False  # one thread runs reads and writes in turn

    async def make_database(self) -> ReadDatabase:
        return MemoryDatabase()


class TestSqliteDatabase(ReadDatabaseContract):
    @pytest.fixture(autouse=True)
    def _where(self, tmp_path: Path) -> None:
        self.path = tmp_path / "read.db"

    async def make_database(self) -> ReadDatabase:
        return SqliteDatabase(self.path)


@pytest.mark.postgres
class TestPostgresDatabase(ReadDatabaseContract):
    @pytest.fixture(autouse=True)
    def _where(self, pg_url: str) -> None:
        self.url = pg_url

    async def make_database(self) -> ReadDatabase:
        return PostgresDatabase(self.url)
