"""Keys per data subject in the event store's SQLite file: :class:`SqliteKeyStore`.

The keys are rows of ``cqrskit_keys`` in ``write.db`` (the file of the events, never in
the events). The event store writes them in its appends' own transactions
(:func:`key_writes`) and reads them on its readers (:func:`lookup_keys`);
:class:`SqliteKeyStore` is the port on a connection of its own, on one thread (forgetting
outside an event, inspection). Forgetting follows :mod:`cqrskit.keystore`: the row stays
as a tombstone, its key set to NULL.

**Nothing of a destroyed key left in the files.** Every writing connection runs with
``PRAGMA secure_delete = ON`` (:func:`.connection.connect`): when the key's bytes leave
their page, SQLite overwrites the space they took with zeros instead of leaving it as
free space that still holds them. But in WAL mode the page is rewritten in
``write.db-wal`` first, and the WAL still holds the older frames (with the key) until a
checkpoint copies the new page into ``write.db`` and the WAL is reset. So every ``forget`` ends with
``PRAGMA wal_checkpoint(TRUNCATE)`` (as does the event store after an append that
forgot someone): the page without the key goes to ``write.db`` and
the WAL file is cut to zero bytes. A checkpoint waits (busy timeout) for readers of an
older snapshot to finish; if one still holds it back, the forget is done (the key is
gone from the database) and a warning says the old frames wait for a later checkpoint.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from ..._sealing import destroyed_count
from ..._workers import Workers
from ...errors import StoreClosed
from ...keystore import SubjectForgotten, new_key
from ...personal import KeyConflict
from ...sql import SqlTx
from ._schema import KEYS_DDL
from .connection import SqliteTx, connect, converted, write_transaction

__all__ = ["SqliteKeyStore", "destroyed", "key_writes", "lookup_keys"]

T = TypeVar("T")

log = logging.getLogger("cqrskit.keystore")

_SELECT = "SELECT key, forgotten_at FROM cqrskit_keys WHERE subject = ?"
# DO NOTHING: of two processes creating the key at once, the first insert wins and both
# read its key back (BEGIN IMMEDIATE serialises them; the SELECT sees the winner's row).
_INSERT = (
    "INSERT INTO cqrskit_keys (subject, key, created_at) VALUES (?, ?, ?)"
    " ON CONFLICT (subject) DO NOTHING"
)
_TOMBSTONE = (
    "INSERT INTO cqrskit_keys (subject, key, created_at, forgotten_at) VALUES (?, NULL, ?, ?)"
    " ON CONFLICT (subject) DO UPDATE SET key = NULL,"
    " forgotten_at = coalesce(cqrskit_keys.forgotten_at, excluded.forgotten_at)"
)
_NEW = "INSERT INTO cqrskit_keys (subject, key, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
_BATCH = 500
"""Subjects per query of ``get_many`` (SQLite bounds the parameters of a statement)."""


def lookup_keys(tx: SqlTx, subjects: Iterable[str]) -> dict[str, bytes | None]:
    """The rows of ``subjects`` that exist: their key, or None for a tombstone; a subject
    never keyed is absent. Runs on the event store's reader, in the read's own snapshot."""
    wanted = list(subjects)
    found: dict[str, bytes | None] = {}
    for start in range(0, len(wanted), _BATCH):
        chunk = wanted[start : start + _BATCH]
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT subject, key FROM cqrskit_keys WHERE subject IN ({marks})"
        found.update((str(s), k) for s, k in tx.fetchall(sql, chunk))
    return found


def destroyed(conn: sqlite3.Connection) -> int:
    """How many keys were ever destroyed (counted by triggers: ``._schema.KEYS_DDL``); -1 when
    the count's row is gone (deleted by hand): then no read keeps keys."""
    row = conn.execute("SELECT count FROM cqrskit_keys_destroyed").fetchone()
    return destroyed_count(None if row is None else row[0])


def key_writes(
    created: dict[str, bytes], forgotten: Iterable[str]
) -> Callable[[SqlTx, object], None]:
    """The key rows an append writes in its own transaction: the keys it made (a subject
    keyed meanwhile by another append is a :class:`KeyConflict`, and the store seals again)
    and the tombstones of the subjects it forgets (after the new keys: an append that
    seals and forgets one subject leaves it forgotten)."""
    forget = tuple(forgotten)

    def write(tx: SqlTx, _results: object) -> None:
        now = time.time()
        for subject, key in created.items():
            if tx.execute(_NEW, (subject, key, now)) == 0:
                raise KeyConflict(subject)
        for subject in forget:
            tx.execute(_TOMBSTONE, (subject, now, now))

    return write


class SqliteKeyStore:
    """:class:`~cqrskit.keystore.KeyStore` in a table of the SQLite file at ``path``
    (the event store's ``write.db``; see the module docstring). The table is created on
    first use; ``close()`` closes the connection."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._worker = Workers(
            1,
            f"cqrskit-keys-{self.path.name}",
            lambda: StoreClosed(f"key store {self.path} is closed"),
            functools.partial(converted, path=self.path),
        )

    # -- on the worker thread -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = connect(self.path, synchronous=self._synchronous)
            try:
                write_transaction(conn, lambda tx: [tx.execute(ddl) for ddl in KEYS_DDL])
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return conn

    def _write(self, fn: Callable[[SqliteTx], T]) -> T:
        return write_transaction(self._connection(), fn)

    def _get(self, subject: str) -> bytes | None:
        row = self._connection().execute(_SELECT, (subject,)).fetchone()
        return None if row is None else row[0]

    def _get_or_create(self, subject: str) -> bytes:
        row = self._connection().execute(_SELECT, (subject,)).fetchone()
        if row is None:  # first use: insert unless another writer just did, read back

            def create(tx: SqliteTx) -> tuple[bytes | None, float | None]:
                tx.execute(_INSERT, (subject, new_key(), time.time()))
                found = tx.fetchone(_SELECT, (subject,))
                assert found is not None
                return found[0], found[1]

            row = self._write(create)
        key: bytes | None = row[0]
        if key is None:
            raise SubjectForgotten(subject)
        return key

    def _get_many(self, subjects: list[str]) -> dict[str, bytes | None]:
        found: dict[str, bytes | None] = dict.fromkeys(subjects)
        found.update(lookup_keys(SqliteTx(self._connection()), subjects))
        return found

    def _forget(self, subject: str) -> bool:
        def destroy(tx: SqliteTx) -> bool:
            row = tx.fetchone(_SELECT, (subject,))
            now = time.time()
            tx.execute(_TOMBSTONE, (subject, now, now))
            return row is not None and row[0] is not None

        destroyed = self._write(destroy)
        self._truncate_wal()
        return destroyed

    def _truncate_wal(self) -> None:
        busy, _, _ = self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning(
                "%s: a reader held back the WAL checkpoint after a forget; what was deleted"
                " stays in old WAL frames until the next complete checkpoint",
                self.path,
            )

    def _shutdown(self) -> None:
        self._worker.shutdown()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the port -------------------------------------------------------------------------

    async def get_or_create(self, subject: str) -> bytes:
        return await self._worker.run(self._get_or_create, subject)

    async def get(self, subject: str) -> bytes | None:
        return await self._worker.run(self._get, subject)

    async def get_many(self, subjects: Iterable[str]) -> dict[str, bytes | None]:
        return await self._worker.run(self._get_many, list(dict.fromkeys(subjects)))

    async def forget(self, subject: str) -> bool:
        return await self._worker.run(self._forget, subject)

    async def truncate_wal(self) -> None:
        """Checkpoint the file's WAL and truncate it to zero bytes (see the module
        docstring); the event store calls it after an append that forgot someone."""
        await self._worker.run(self._truncate_wal)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown)
