"""The snapshot contract on every backend: memory, SQLite, PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.contracts.snapshots")

from cqrskit import Codec, EventStore  # noqa: E402
from cqrskit.backends.memory import MemoryEventStore  # noqa: E402
from cqrskit.backends.postgres import PostgresEventStore  # noqa: E402
from cqrskit.backends.sqlite import SqliteEventStore  # noqa: E402
from tests.contracts.snapshots import SnapshotContract  # noqa: E402


class TestMemorySnapshots(SnapshotContract):
    async def make_store(self, codec: Codec) -> EventStore:
        return MemoryEventStore(codec)


class TestSqliteSnapshots(SnapshotContract):
    @pytest.fixture(autouse=True)
    def _where(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    async def make_store(self, codec: Codec) -> EventStore:
        return await SqliteEventStore.open(self.path, codec)


@pytest.mark.postgres
class TestPostgresSnapshots(SnapshotContract):
    @pytest.fixture(autouse=True)
    def _where(self, pg_url: str) -> None:
        self.url = pg_url

    async def make_store(self, codec: Codec) -> EventStore:
        return await PostgresEventStore.open(self.url, codec, pool_max=8)
