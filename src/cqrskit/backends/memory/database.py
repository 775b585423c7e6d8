"""The read database in memory, and its blue/green rebuild target: for unit tests and examples.

:class:`MemoryDatabase` is an in-memory SQLite database (stdlib ``sqlite3``), so the
projections' SQL is the same as on the other backends. One thread runs its transactions in
turn, off the event loop: a read is one consistent snapshot since nothing commits while it
runs. Reads are read-only (``PRAGMA query_only``), as on the other backends. Driver errors
come out converted, as on SQLite (same plumbing).

Rebuild: the projection's tables are built in a second in-memory database (with its own
thread, so that ``decide`` can catch up into it during the swap). The swap, in ONE
transaction on the live database: ``decide(tx)`` under the write lock, then each live
table is dropped (its indexes with it) and recreated from the fresh database's
``sqlite_master`` SQL, its rows copied, then its indexes and triggers created.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..._workers import Workers
from ...errors import StoreClosed
from ...projection import Projection
from ...readside import RebuildTarget, SwapDeclined, tables_to_rebuild
from ...sql import SqlTx
from ..sqlite.connection import (
    SqliteTx,
    quote,
    read_transaction,
    table_schema,
    translate_errors,
    write_transaction,
)

__all__ = ["MemoryDatabase", "MemoryRebuildTarget"]

T = TypeVar("T")

_numbers = itertools.count(1)


class MemoryDatabase:
    """A :class:`~cqrskit.readside.ReadDatabase` in memory (see the module docstring).

    The sync API (``write_sync``, ``read_sync``, ``connection``) may be used from any
    thread: a lock gives the connection to one caller at a time. The async API runs it on
    the database's one thread.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"memory-{next(_numbers)}"
        self._workers = Workers(1, f"cqrskit-{self.name}", self._closed_error)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._closed = False
        """No more calls accepted (close() was called)."""
        self._gone = False
        """The connection is closed: the database and its rows no longer exist."""

    def _closed_error(self) -> StoreClosed:
        return StoreClosed(f"database {self.name} is closed")

    # -- sync API ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, this caller's alone until the block ends; sqlite3 errors
        raised in the block come out converted."""
        with self._lock, translate_errors():
            if self._gone:
                raise self._closed_error()
            if self._conn is None:
                self._conn = sqlite3.connect(
                    ":memory:", isolation_level=None, check_same_thread=False
                )
                self._conn.execute("PRAGMA foreign_keys = ON")
            yield self._conn

    def write_sync(self, fn: Callable[[SqliteTx], T]) -> T:
        with self.connection() as conn:
            return write_transaction(conn, fn)

    def read_sync(self, fn: Callable[[SqliteTx], T]) -> T:
        with self.connection() as conn:
            conn.execute("PRAGMA query_only = ON")
            try:
                return read_transaction(conn, fn)
            finally:
                conn.execute("PRAGMA query_only = OFF")

    # -- async API -----------------------------------------------------------------------------

    async def run(self, fn: Callable[[], T]) -> T:
        """Run a blocking function on this database's thread (after the calls queued)."""
        self._check_open()
        return await self._workers.run(fn)

    async def write(self, fn: Callable[[SqliteTx], T], *, pipeline: bool = False) -> T:
        """``fn`` in one write transaction. ``pipeline`` changes nothing: no round trips."""
        return await self.run(lambda: self.write_sync(fn))

    async def write_schema(self, fn: Callable[[SqliteTx], T]) -> T:
        """A plain write: every transaction here already takes its turn on one thread."""
        return await self.write(fn)

    async def read(self, fn: Callable[[SqliteTx], T]) -> T:
        return await self.run(lambda: self.read_sync(fn))

    async def scrub(self) -> None:
        return  # nothing on disk

    async def open_rebuild(self, projection: Projection) -> RebuildTarget:
        """A second in-memory database where ``projection`` is rebuilt (see
        :class:`MemoryRebuildTarget`)."""
        self._check_open()
        return MemoryRebuildTarget(self, projection)

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    async def set_aside(self) -> str | None:
        """An in-memory database has no file to damage: nothing to set aside."""
        return None

    async def close(self) -> None:
        """Finish the calls queued, then drop the database (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._workers.shutdown()
        with self._lock:
            self._gone = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class MemoryRebuildTarget:
    """:class:`~cqrskit.readside.RebuildTarget` in a second in-memory database."""

    def __init__(self, live: MemoryDatabase, projection: Projection) -> None:
        self._live = live
        self._name = projection.name
        self._tables = tables_to_rebuild(projection)
        self._fresh = MemoryDatabase(f"{live.name}-rebuild-{projection.name}")

    async def write(self, fn: Callable[[SqlTx], T], *, pipeline: bool = False) -> T:
        return await self._fresh.write(fn)

    async def swap(self, decide: Callable[[SqlTx], bool]) -> bool:
        def swap() -> bool:
            try:
                return self._live.write_sync(lambda tx: self._replace_all(tx, decide))
            except SwapDeclined:
                return False

        return await self._live.run(swap)

    def _replace_all(self, tx: SqliteTx, decide: Callable[[SqlTx], bool]) -> bool:
        # On the live thread, holding the live write transaction: no other write of the
        # live database runs until it ends. decide() may still write to the fresh database
        # (a final catch-up, on the fresh database's own thread), so that one is taken only
        # afterwards.
        if not decide(tx):
            raise SwapDeclined  # rolls back; the fresh tables stay
        with self._fresh.connection() as fresh:
            for table in self._tables:
                self._replace(fresh, tx.conn, table)
        return True

    def _replace(self, fresh: sqlite3.Connection, live: sqlite3.Connection, table: str) -> None:
        create_table, *others = table_schema(fresh, table, self._name)
        quoted = quote(table)
        live.execute(f"DROP TABLE IF EXISTS {quoted}")  # drops its indexes and triggers too
        live.execute(create_table)
        rows = fresh.execute(f"SELECT * FROM {quoted}")
        marks = ", ".join("?" * len(rows.description))
        live.executemany(f"INSERT INTO {quoted} VALUES ({marks})", rows)
        # Indexes after the rows (one sort instead of one insert each); triggers after
        # them too, so that copying the rows fires none.
        for sql in others:
            live.execute(sql)

    async def discard(self) -> None:
        """Drop the fresh database (idempotent)."""
        await self._fresh.close()
