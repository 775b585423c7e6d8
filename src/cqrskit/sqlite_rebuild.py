"""Blue/green rebuild on SQLite: build in a separate file, swap in with one transaction.

The projection's tables are built from position 0 in a fresh database file next to the
live one, under their plain names, so the projection's SQL is unchanged and the live
tables keep serving meanwhile. The swap attaches that file to the live writer connection
and, in one ``BEGIN IMMEDIATE`` transaction, drops the live tables and recreates them
(with their indexes) from the fresh file's schema, copying the rows. Readers in WAL mode
keep their snapshot: they see the old tables and checkpoint or the new ones, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import ConfigurationError
from .projection import Projection
from .sql import SqlTx
from .sqlite import SqliteDatabase, SqliteTx, translate_errors

__all__ = ["SqliteRebuildTarget"]

T = TypeVar("T")

_SCHEMA = "cqrskit_rebuild"
_SWAP_CACHE_KIB = 64
"""Page cache, in KiB, of the live and the fresh file while the swap copies the tables:
the copy reads and writes each page once (the time of a 300,000-row swap is the same
with 64 KiB as with SQLite's default 2 MB)."""


def _release_cache(conn: sqlite3.Connection) -> None:
    with translate_errors():
        conn.execute("PRAGMA shrink_memory")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteRebuildTarget:
    """:class:`~cqrskit.readside.RebuildTarget` in a file beside the live database."""

    def __init__(self, live: SqliteDatabase, projection: Projection) -> None:
        if not projection.tables:
            raise ConfigurationError(
                f"projection {projection.name!r} declares no tables: nothing to rebuild into"
            )
        self._live = live
        self._tables = projection.tables
        suffix = f"{projection.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = live.path.with_name(f"{live.path.name}.rebuild-{suffix}")
        # A crash loses the rebuild file anyway (it is rebuilt from scratch), so its
        # commits need not wait for the disk.
        self._db = SqliteDatabase(self.path, synchronous="OFF", readers=1)
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
        with translate_errors():
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
                # IMMEDIATE takes the write lock first: no live batch can commit between
                # the checkpoint compare in decide() and the table replacement.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if not decide(SqliteTx(conn)):
                        conn.execute("ROLLBACK")
                        return False
                    for table in self._tables:
                        self._replace(conn, table)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return True
            finally:
                conn.execute(f"PRAGMA main.cache_size = {int(live_cache)}")
                conn.execute(f"DETACH DATABASE {_SCHEMA}")

    def _replace(self, conn: sqlite3.Connection, table: str) -> None:
        objects = conn.execute(
            f"SELECT type, sql FROM {_SCHEMA}.sqlite_master WHERE tbl_name = ?"
            " AND sql IS NOT NULL ORDER BY type = 'table' DESC, rowid",
            (table,),
        ).fetchall()
        if not objects or objects[0][0] != "table":
            raise ConfigurationError(
                f"table {table!r} is declared by the projection but its schema did not create it"
            )
        quoted = _quote(table)
        conn.execute(f"DROP TABLE IF EXISTS main.{quoted}")  # drops its indexes too
        for _, sql in objects:
            conn.execute(sql)  # unqualified CREATE statements create in main
        conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM {_SCHEMA}.{quoted}")

    async def discard(self) -> None:
        if self._discarded:
            return
        self._discarded = True
        await self._db.close()
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
