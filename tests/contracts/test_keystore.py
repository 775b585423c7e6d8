"""The key store contract on every backend: memory, SQLite, PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from cqrskit import Codec, Event
from cqrskit.backends.memory.keys import MemoryKeyStore
from cqrskit.backends.postgres.keys import PostgresKeyStore
from cqrskit.backends.sqlite import SqliteEventStore
from cqrskit.backends.sqlite.keys import SqliteKeyStore
from cqrskit.keystore import KeyStore
from tests.contracts.keystore import KeyStoreContract, PersistentKeyStoreContract


@dataclass(frozen=True)
class Noted(Event):
    text: str


class TestMemoryKeyStore(KeyStoreContract):
    def make_store(self) -> KeyStore:
        return MemoryKeyStore()

    def open(self) -> KeyStore:
        """One store per test: the memory backend shares nothing between instances."""
        if not self._made:
            return super().open()
        return self._made[0]


class TestSqliteKeyStore(PersistentKeyStoreContract):
    @pytest.fixture(autouse=True)
    def _where(self, tmp_path: Path) -> None:
        self.path = tmp_path / "write.db"

    def make_store(self) -> KeyStore:
        return SqliteKeyStore(self.path)

    def _files(self) -> bytes:
        return b"".join(
            path.read_bytes()
            for path in (self.path, self.path.with_name("write.db-wal"))
            if path.exists()
        )

    async def test_the_keys_are_in_the_write_database(self) -> None:
        key = await self.open().get_or_create("user-1")
        assert key in self._files()

    async def test_a_destroyed_key_is_in_neither_file(self) -> None:
        store = self.open()
        keys = {n: await store.get_or_create(f"user-{n}") for n in range(50)}
        for n in range(0, 50, 2):
            assert await store.forget(f"user-{n}")
        on_disk = self._files()
        for n, key in keys.items():
            assert (key in on_disk) == (n % 2 == 1), n
        assert await store.get("user-1") == keys[1]
        assert isinstance(store, SqliteKeyStore)
        assert store._conn is not None  # zeroing freed space, whatever the build's default
        assert store._conn.execute("PRAGMA secure_delete").fetchone() == (1,)

    async def test_beside_an_open_event_store(self) -> None:
        events = await SqliteEventStore.open(self.path, Codec([Noted]))
        try:
            store = self.open()
            key = await store.get_or_create("user-1")
            await events.append("s-1", [Noted("before")])
            other = await store.get_or_create("user-2")
            assert await store.forget("user-1")
            await events.append("s-1", [Noted("after")])
            assert [e.stream_version for e in await events.read_stream("s-1")] == [1, 2]
            on_disk = self._files()
            assert key not in on_disk
            assert other in on_disk
        finally:
            await events.close()

    async def test_a_destroyed_key_is_gone_while_the_file_stays_open(self) -> None:
        store = self.open()
        key = await store.get_or_create("user-1")
        await store.get_or_create("user-2")
        await store.forget("user-1")
        assert key not in self._files()
        assert not self.path.with_name("write.db-wal").exists() or (
            self.path.with_name("write.db-wal").stat().st_size == 0
        )


@pytest.mark.postgres
class TestPostgresKeyStore(PersistentKeyStoreContract):
    @pytest.fixture(autouse=True)
    def _where(self, pg_url: str) -> None:
        self.url = pg_url

    def make_store(self) -> KeyStore:
        return PostgresKeyStore(self.url)

    async def test_the_migration_made_the_table(self) -> None:
        store = self.open()
        await store.get_or_create("user-1")
        with psycopg.connect(self.url) as conn:
            rows = conn.execute("SELECT version, name FROM cqrskit_migrations").fetchall()
            assert (6, "keys") in rows
            live = conn.execute("SELECT subject, key IS NULL FROM cqrskit_keys").fetchall()
            assert live == [("user-1", False)]
