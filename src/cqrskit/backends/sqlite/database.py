"""The read database on a SQLite file, and its blue/green rebuild target.

:class:`SqliteDatabase` runs write transactions on one writer thread and reads on a small
pool of reader threads (WAL: readers never block the writer).

Rebuild: the projection's tables are built from position 0 in a fresh database file next
to the live one, under their plain names, so the projection's SQL is unchanged and the
live tables keep serving meanwhile. The swap attaches that file to the live writer
connection and, in one ``BEGIN IMMEDIATE`` transaction, drops the live tables and
recreates them (with their indexes) from the fresh file's schema, copying the rows.
Readers in WAL mode keep their snapshot: they see the old tables and checkpoint or the new
ones, never a mix.

Durability: by default (``durability="relaxed"``) the file runs with
``synchronous=NORMAL`` in WAL mode: a commit is safe from a process crash (SIGKILL, an
exception) but not from a power loss or an operating-system crash, which may lose the
last commits (those since the WAL was last synced, at most about one WAL checkpoint's
worth). A read model may lose them: it is derived from the log, and a projection commits
each batch's rows with its checkpoint in one transaction. SQLite's WAL recovery keeps a
prefix of the commits (a frame counts only if its checksum, chained to every frame before
it, holds, and a transaction only with its commit frame), so what is lost is a tail of
whole transactions, rows and checkpoint together: the projection finds its older
checkpoint and re-applies the events from there; nothing is applied twice. The event
store (``write.db``) is not concerned: it stays ``synchronous=FULL``.
``durability="strict"`` gives ``synchronous=FULL`` here too (every commit fsynced: a read
model never steps back); see :data:`cqrskit.connect.ReadDurability` and
``docs/consistency.md``.

Damage: the first connection runs ``PRAGMA quick_check`` (every page read once: about
0.2 s for a 150 MB file with a warm cache), so a damaged file is found at open, as
:class:`~cqrskit.errors.DamagedDatabase` naming it, not mid-batch. The read side is
derived from the log: :meth:`SqliteDatabase.set_aside` moves such a file out of the way
and starts afresh (``create_read_models`` does it), and the projections replay the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..._workers import Workers
from ...connect import ReadDurability, check_read_durability
from ...errors import DamagedDatabase, StoreClosed
from ...projection import Projection
from ...readside import RebuildTarget, SwapDeclined, tables_to_rebuild
from ...sql import SqlTx
from .connection import (
    ReaderConnections,
    SqliteTx,
    connect,
    converted,
    quote,
    read_transaction,
    table_schema,
    write_transaction,
)

__all__ = ["SqliteDatabase", "SqliteRebuildTarget"]

T = TypeVar("T")

log = logging.getLogger("cqrskit.personal")

_SCHEMA = "cqrskit_rebuild"
_SWAP_CACHE_KIB = 64
"""Page cache, in KiB, of the live and the fresh file while the swap copies the tables:
the copy reads and writes each page once (the time of a 300,000-row swap is the same
with 64 KiB as with SQLite's default 2 MB)."""


def _release_cache(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA shrink_memory")


class SqliteDatabase:
    """A SQLite file used from asyncio: one writer thread, a small pool of reader threads.

    ``write(fn)`` runs ``fn(tx)`` in ``BEGIN IMMEDIATE ... COMMIT`` on the writer thread;
    ``read(fn)`` runs it in a read transaction (a consistent snapshot) on a reader thread.
    Any exception rolls the transaction back; sqlite3 errors come out converted.

    ``durability``: ``"relaxed"`` (the default, ``synchronous=NORMAL``) or ``"strict"``
    (``synchronous=FULL``): see the module docstring. ``synchronous``, when given, is the
    ``PRAGMA synchronous`` itself and wins over ``durability`` (``"OFF"`` for a file that
    is thrown away after a crash anyway, such as a rebuild's).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        durability: ReadDurability = "relaxed",
        synchronous: str | None = None,
        readers: int = 4,
        check: bool = True,
    ) -> None:
        self.path = Path(path)
        self.durability = check_read_durability(durability)
        if synchronous is None:
            synchronous = "NORMAL" if durability == "relaxed" else "FULL"
        self._synchronous = synchronous
        self._check = check
        closed = functools.partial(StoreClosed, f"database {self.path} is closed")
        convert = functools.partial(converted, path=self.path)
        self._writer_pool = Workers(1, f"sqlite-w-{self.path.name}", closed, convert)
        self._reader_pool = Workers(readers, f"sqlite-r-{self.path.name}", closed, convert)
        self._writer: sqlite3.Connection | None = None
        # The writer connection first: it creates the file and turns WAL on.
        self._readers = ReaderConnections(self.path, synchronous, self.writer_connection)
        self._closed = False

    # -- on the pools' threads (their calls' sqlite3 errors come out converted) -----------

    def writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = connect(self.path, synchronous=self._synchronous)
            if self._check:
                self._quick_check(conn)
            self._writer = conn
        return self._writer

    def _quick_check(self, conn: sqlite3.Connection) -> None:
        """Raise :class:`~cqrskit.errors.DamagedDatabase` unless every page reads well."""
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        except BaseException:
            conn.close()
            raise
        if problems != ["ok"]:
            conn.close()
            found = "; ".join(str(p) for p in problems)
            raise DamagedDatabase(f"{self.path}: the database file is damaged ({found})")

    def _set_aside_sync(self) -> Path:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._readers.close()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{uuid.uuid4().hex[:6]}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{moved}{suffix}")
        return moved

    def _write_sync(self, fn: Callable[[SqliteTx], T]) -> T:
        return write_transaction(self.writer_connection(), fn)

    def _read_sync(self, fn: Callable[[SqlTx], T]) -> T:
        return read_transaction(self._readers.get(), fn)

    # -- async API ----------------------------------------------------------------------------

    async def write(self, fn: Callable[[SqliteTx], T], *, pipeline: bool = False) -> T:
        """``fn`` in one write transaction. ``pipeline`` is accepted for every backend's
        sake and changes nothing here: SQLite runs in-process, there is no round trip."""
        self._check_open()
        return await self._writer_pool.run(self._write_sync, fn)

    async def write_schema(self, fn: Callable[[SqliteTx], T]) -> T:
        """See :meth:`cqrskit.readside.ReadDatabase.write_schema`: a plain write here,
        ``BEGIN IMMEDIATE`` already excludes every other writer of the file."""
        return await self.write(fn)

    async def read(self, fn: Callable[[SqliteTx], T]) -> T:
        self._check_open()
        return await self._reader_pool.run(self._read_sync, fn)

    async def run_on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer thread with the writer connection, outside any
        transaction (for what SQLite refuses inside one, such as ``ATTACH``)."""
        self._check_open()
        return await self._writer_pool.run(lambda: fn(self.writer_connection()))

    async def set_aside(self) -> str | None:
        """Move the file (with its ``-wal`` and ``-shm``) aside as
        ``NAME.damaged-<UTC time>-<tag>`` and start on a fresh, empty file; return the
        name it was moved to. On the writer thread: no write runs meanwhile. For a damaged
        file at start-up (see the module docstring); reads in flight would fail."""
        self._check_open()
        return str(await self._writer_pool.run(self._set_aside_sync))

    async def scrub(self) -> None:
        """Checkpoint the WAL and truncate it: the old page images of the rows a forget
        deleted (zeroed in their pages by ``secure_delete``) leave ``-wal`` too."""
        busy = await self.run_on_writer(_truncate_wal)
        if busy:
            log.warning(
                "%s: a reader held back the WAL checkpoint after a forget; deleted rows stay"
                " in old WAL frames until the next complete checkpoint",
                self.path,
            )

    async def open_rebuild(self, projection: Projection) -> RebuildTarget:
        """A fresh database file beside this one where ``projection`` is rebuilt; its swap
        copies the tables into this file in one transaction (see
        :class:`SqliteRebuildTarget`)."""
        self._check_open()
        return SqliteRebuildTarget(self, projection)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"database {self.path} is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._writer_pool.shutdown()
        self._reader_pool.shutdown()
        self._readers.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class SqliteRebuildTarget:
    """:class:`~cqrskit.readside.RebuildTarget` in a file beside the live database."""

    def __init__(self, live: SqliteDatabase, projection: Projection) -> None:
        self._live = live
        self._name = projection.name
        self._tables = tables_to_rebuild(projection)
        suffix = f"{projection.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = live.path.with_name(f"{live.path.name}.rebuild-{suffix}")
        # A crash loses the rebuild file anyway (it is rebuilt from scratch), so its
        # commits need not wait for the disk. SQLite's default page cache (2 MB) is most of
        # a rebuild's memory growth, but a 256 KiB one measured 13 to 25% slower on
        # `make bench`'s read model, whose rows a rebuild updates anywhere in the table.
        self._db = SqliteDatabase(self.path, synchronous="OFF", readers=1, check=False)
        self._discarded = False

    async def write(self, fn: Callable[[SqlTx], T], *, pipeline: bool = False) -> T:
        return await self._db.write(fn)

    async def swap(self, decide: Callable[[SqlTx], bool]) -> bool:
        # The copy reads the fresh file through the live writer's connection: the page
        # cache the batches filled on the fresh file's own connection (up to SQLite's
        # default 2 MB, all clean once committed) is of no use to it, so it is given
        # back first rather than held beside the copy's. A final catch-up (or another
        # attempt) refills it as it goes.
        await self._db.run_on_writer(_release_cache)
        return await self._live.run_on_writer(lambda conn: self._swap(conn, decide))

    def _swap(self, conn: sqlite3.Connection, decide: Callable[[SqlTx], bool]) -> bool:
        conn.execute(f"ATTACH DATABASE ? AS {_SCHEMA}", (str(self.path),))
        (live_cache,) = conn.execute("PRAGMA main.cache_size").fetchone()
        try:
            # The copy reads each page of the fresh file once and writes each page of
            # the new live tables once: small page caches for both keep the swap from
            # growing the live writer's memory by up to a full cache (SQLite spills
            # the copy's dirty pages to the WAL as it goes). The live cache size is
            # restored below (lowering it freed what the live writer had cached
            # beyond the small size; that refills with use).
            conn.execute(f"PRAGMA {_SCHEMA}.cache_size = -{_SWAP_CACHE_KIB}")
            conn.execute(f"PRAGMA main.cache_size = -{_SWAP_CACHE_KIB}")
            # BEGIN IMMEDIATE takes the write lock first: no live batch can commit between
            # the checkpoint compare in decide() and the table replacement.
            return write_transaction(conn, lambda tx: self._replace_all(tx, decide))
        except SwapDeclined:
            return False
        finally:
            conn.execute(f"PRAGMA main.cache_size = {int(live_cache)}")
            conn.execute(f"DETACH DATABASE {_SCHEMA}")

    def _replace_all(self, tx: SqliteTx, decide: Callable[[SqlTx], bool]) -> bool:
        if not decide(tx):
            raise SwapDeclined  # rolls back; the fresh tables stay
        conn = tx.conn
        for table in self._tables:
            statements = table_schema(conn, table, self._name, _SCHEMA)
            quoted = quote(table)
            conn.execute(f"DROP TABLE IF EXISTS main.{quoted}")  # drops its indexes too
            for sql in statements:
                conn.execute(sql)  # unqualified CREATE statements create in main
            conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM {_SCHEMA}.{quoted}")
        return True

    async def discard(self) -> None:
        if self._discarded:
            return
        self._discarded = True
        await self._db.close()
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _truncate_wal(conn: sqlite3.Connection) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)``; True when a reader kept it from completing."""
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return bool(busy)
