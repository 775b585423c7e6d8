"""Keys per data subject in the event store's PostgreSQL database: :class:`PostgresKeyStore`.

The keys are rows of ``cqrskit_keys`` (migration 0006), in the write database beside the
events, never inside them. Forgetting follows :mod:`cqrskit.keystore`: the row stays as a
tombstone, its key set to NULL.

**What a forget leaves on disk.** PostgreSQL never overwrites a row in place: the UPDATE
that nulls the key writes a new row version, and the old one (with the key) stays in the
table's page as a dead tuple until VACUUM (or autovacuum, or page pruning by a later
access) reclaims its space; the WAL segments and any base backup or archive taken before
keep it too. A ``pg_dump`` shows live rows only, so the key is gone from dumps at once;
operators who must also clear the pages can ``VACUUM cqrskit_keys`` after forgetting, and
must expire the backups and archived WAL that predate it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import psycopg

from ..._sealing import destroyed_count
from ...keystore import SubjectForgotten, new_key
from ...sql import SqlTx
from ._pool import DEFAULT_POOL_TIMEOUT, PgPool
from .connection import PgTx
from .migrate import apply_on

__all__ = ["KEY_CONSTRAINT", "KeyWrites", "PostgresKeyStore", "destroyed", "lookup_keys"]

T = TypeVar("T")

_SELECT = "SELECT key FROM cqrskit_keys WHERE subject = ?"
# DO NOTHING: of concurrent first calls (in any process) the first insert wins; the others
# wait for its commit, insert nothing, and the SELECT (a new snapshot under READ
# COMMITTED) reads the winner's key.
_INSERT = "INSERT INTO cqrskit_keys (subject, key) VALUES (?, ?) ON CONFLICT (subject) DO NOTHING"
# FOR UPDATE: a concurrent get_or_create's insert waits for this forget to commit.
_LOCK = "SELECT key IS NOT NULL FROM cqrskit_keys WHERE subject = ? FOR UPDATE"
# An upsert, not UPDATE then INSERT ... DO NOTHING: a key inserted between the two by a
# concurrent get_or_create would survive the forget.
_TOMBSTONE = (
    "INSERT INTO cqrskit_keys (subject, key, forgotten_at) VALUES (?, NULL, now())"
    " ON CONFLICT (subject) DO UPDATE SET key = NULL,"
    " forgotten_at = coalesce(cqrskit_keys.forgotten_at, excluded.forgotten_at)"
)
_SELECT_MANY = "SELECT subject, key FROM cqrskit_keys WHERE subject = ANY(?)"
# A plain INSERT: it travels with the append's COMMIT (pipelined, no answer awaited); a
# subject keyed meanwhile fails the transaction on the primary key, which the store
# reports as a KeyConflict (KEY_CONSTRAINT) and seals again.
_NEW = "INSERT INTO cqrskit_keys (subject, key) VALUES (?, ?)"
KEY_CONSTRAINT = "cqrskit_keys_pkey"


def lookup_keys(tx: SqlTx, subjects: Iterable[str]) -> dict[str, bytes | None]:
    """The rows of ``subjects`` that exist: their key, or None for a tombstone; a subject
    never keyed is absent."""
    wanted = list(subjects)
    if not wanted:
        return {}
    return {
        str(s): None if k is None else bytes(k) for s, k in tx.fetchall(_SELECT_MANY, (wanted,))
    }


class KeyWrites:
    """The key rows an append writes in its own transaction (a ``Within``): the keys it
    made (a subject keyed meanwhile by another append violates :data:`KEY_CONSTRAINT`) and
    the tombstones of the subjects it forgets.

    The appender folds the first kind into the append statement itself when that is all
    there is (``forgotten`` empty, one stream): see ``_statements._KEY_ONE``. Otherwise it
    runs as a ``Within`` in the append's explicit transaction."""

    __slots__ = ("created", "forgotten")

    def __init__(self, created: dict[str, bytes], forgotten: Iterable[str]) -> None:
        self.created = created
        self.forgotten = tuple(forgotten)

    def __call__(self, tx: SqlTx, _results: object) -> None:
        for subject, key in self.created.items():
            tx.execute(_NEW, (subject, key))
        for subject in self.forgotten:
            tx.execute(_TOMBSTONE, (subject,))


def destroyed(conn: psycopg.Connection[Any]) -> int:
    """How many keys were ever destroyed (counted by triggers: migration 0007); -1 when
    the count's row is gone (deleted by hand): then no read keeps keys."""
    row = conn.execute("SELECT count FROM cqrskit_keys_destroyed").fetchone()
    return destroyed_count(None if row is None else row[0])


class PostgresKeyStore:
    """:class:`~cqrskit.keystore.KeyStore` in the PostgreSQL database at ``url`` (the
    event store's). Migrations are applied on first use; a small pool of its own (at most
    ``pool_max`` connections) runs the calls in threads, as the event store's does."""

    def __init__(
        self,
        url: str,
        *,
        pool_min: int = 1,
        pool_max: int = 4,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        pool: PgPool | None = None,
    ) -> None:
        self.url = url
        self._owns_pool = pool is None
        """An event store's key store runs on the store's pool (``pool``), and leaves it
        open when it closes: the store closes it."""
        self._pool = pool or PgPool(
            url,
            min_size=pool_min,
            max_size=pool_max,
            name="cqrskit-keys",
            on_open=_migrate,
            timeout=pool_timeout,
        )

    async def _run(self, fn: Callable[[], T]) -> T:
        return await self._pool.run(fn)

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._pool.connection() as conn:
            return PgTx(conn).fetchall(sql, params)

    def _get_or_create(self, subject: str) -> bytes:
        rows = self._read(_SELECT, (subject,))
        if not rows:

            def create(tx: PgTx) -> list[Any]:
                tx.execute(_INSERT, (subject, new_key()))
                return tx.fetchall(_SELECT, (subject,))

            rows = self._pool.write_sync(create)
        key: bytes | None = rows[0][0]
        if key is None:
            raise SubjectForgotten(subject)
        return key

    def _forget(self, tx: PgTx, subject: str) -> bool:
        row = tx.fetchone(_LOCK, (subject,))
        tx.execute(_TOMBSTONE, (subject,))
        return row is not None and bool(row[0])

    async def get_or_create(self, subject: str) -> bytes:
        return await self._run(lambda: self._get_or_create(subject))

    async def get(self, subject: str) -> bytes | None:
        rows = await self._run(lambda: self._read(_SELECT, (subject,)))
        return rows[0][0] if rows else None

    async def get_many(self, subjects: Iterable[str]) -> dict[str, bytes | None]:
        wanted = list(dict.fromkeys(subjects))
        found: dict[str, bytes | None] = dict.fromkeys(wanted)
        if wanted:
            rows = await self._run(lambda: self._read(_SELECT_MANY, (wanted,)))
            found.update((subject, key) for subject, key in rows)
        return found

    async def forget(self, subject: str) -> bool:
        return await self._run(lambda: self._pool.write_sync(lambda tx: self._forget(tx, subject)))

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()


def _migrate(conn: psycopg.Connection[Any]) -> None:
    apply_on(conn)
