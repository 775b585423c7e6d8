"""The read database on PostgreSQL, and its blue/green rebuild target (a fresh schema).

Durability: by default (``durability="relaxed"``) each write transaction of the read
database runs ``SET LOCAL synchronous_commit = off`` (sent with its ``BEGIN``, or
pipelined): its commit returns without waiting for the WAL flush, which the server's WAL
writer does within ``3 * wal_writer_delay`` (600 ms by default), and any later synchronous
commit on the server (an append of the event store, when it shares the server) flushes
it too. A crash of the application loses nothing; a crash of the server (power loss,
``pg_ctl stop -m immediate``, an OOM kill of a backend) may lose the read database's last
commits. PostgreSQL's recovery replays its WAL up to the last record flushed: what is lost
is a tail of whole transactions, and a projection's batch commits its rows and its
checkpoint in one transaction, so they are lost together. The projection finds its older
checkpoint (its next batch's compare-and-set sees it, in a process that kept running) and
re-applies the events from there: nothing is applied twice, nothing skipped, and nothing
it applied can be missing from the log, whose commits are synchronous and precede the
reads of them.

A rebuild's batches into its fresh schema never wait (whatever the durability), its
swap always does (see :class:`PgRebuildTarget`).

``SET LOCAL``, not a setting of the session: it ends with its transaction, so a pooled
connection never carries it anywhere else (not through PgBouncer in transaction mode,
not to the event store's transactions when both share a database: the event store has
its own pool and stays synchronous). ``durability="strict"`` sets nothing: every commit
waits as the server's ``synchronous_commit`` says (``on`` unless configured otherwise).
See :data:`cqrskit.connect.ReadDurability` and ``docs/consistency.md``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql as pgsql

from ...checkpoints import lock_position
from ...connect import ReadDurability, check_read_durability
from ...errors import ConfigurationError
from ...projection import Projection
from ...readside import RebuildTarget, SwapDeclined, tables_to_rebuild
from ...sql import SqlTx
from ._pool import DEFAULT_POOL_TIMEOUT, PgPool
from .connection import PgTx, write_transaction

__all__ = ["SCHEMA_LOCK", "PgRebuildTarget", "PostgresDatabase"]

T = TypeVar("T")


SCHEMA_LOCK = 0x637172736B736368  # "cqrsksch"
"""The transaction advisory lock that read-side schema changes take (``write_schema``)."""

ASYNC_COMMIT = pgsql.SQL("SET LOCAL synchronous_commit = off")
"""What each write transaction of a relaxed read database runs first (module docstring)."""


class PostgresDatabase:
    """A PostgreSQL database used from asyncio (the read side): same shape as
    :class:`cqrskit.backends.sqlite.SqliteDatabase`, and a :class:`~cqrskit.readside.ReadDatabase`.

    ``write(fn)`` runs ``fn(tx)`` in a READ COMMITTED read-write transaction; ``read(fn)``
    in a ``REPEATABLE READ READ ONLY`` one (one consistent snapshot). Any exception rolls
    back; psycopg errors come out converted. The read database may be another database,
    or another server, than the event store's.

    Exactly-once on PostgreSQL: a projection batch must lock its checkpoint row before it
    compares it (:func:`cqrskit.checkpoints.lock_position`), so that a second runner's batch
    waits, then sees the moved checkpoint and discards itself.

    Connections: at most ``pool_max`` to the server (:attr:`max_connections`). A call
    that finds none free within ``pool_timeout`` seconds raises
    :class:`~cqrskit.errors.OperationalError` (the pool is exhausted). A blue/green
    rebuild's swap holds one connection while its final catch-up writes through another:
    give a database that rebuilds at least two.

    ``durability``: ``"relaxed"`` (the default: the write transactions' commits do not
    wait for the WAL flush) or ``"strict"`` (they do): see the module docstring.
    """

    def __init__(
        self,
        url: str,
        *,
        durability: ReadDurability = "relaxed",
        pool_min: int = 1,
        pool_max: int = 8,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        self.url = url
        self.durability = check_read_durability(durability)
        self.setup: tuple[pgsql.SQL | pgsql.Composed, ...] = (
            (ASYNC_COMMIT,) if durability == "relaxed" else ()
        )
        """The statements each write transaction runs first."""
        self._pool = PgPool(
            url, min_size=pool_min, max_size=pool_max, name="cqrskit-read", timeout=pool_timeout
        )

    @property
    def max_connections(self) -> int:
        """The most connections this object opens to the server at once: its pool's."""
        return self._pool.max_size

    def write_sync(self, fn: Callable[[PgTx], T], pipeline: bool = False) -> T:
        with self._pool.connection() as conn:
            return write_transaction(conn, fn, pipeline, self.setup)

    def read_sync(self, fn: Callable[[PgTx], T]) -> T:
        return self._pool.read_sync(fn)

    def connection(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        """A pooled autocommit connection (blocking; errors come out converted)."""
        return self._pool.connection()

    async def write(self, fn: Callable[[PgTx], T], *, pipeline: bool = False) -> T:
        return await self._pool.run(lambda: self.write_sync(fn, pipeline))

    async def write_schema(self, fn: Callable[[PgTx], T]) -> T:
        """See :meth:`cqrskit.readside.ReadDatabase.write_schema`: under a transaction
        advisory lock of this database (``SCHEMA_LOCK``)."""

        def locked(tx: PgTx) -> T:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            return fn(tx)

        return await self.write(locked)

    async def read(self, fn: Callable[[PgTx], T]) -> T:
        return await self._pool.run(lambda: self._pool.read_sync(fn))

    async def run(self, fn: Callable[[], T]) -> T:
        """Run a blocking function on this database's threads."""
        return await self._pool.run(fn)

    async def set_aside(self) -> str | None:
        """Never: PostgreSQL detects and reports damage to its own storage (data
        checksums, WAL); repairing a cluster is its operator's work, not a service's."""
        return None

    async def scrub(self) -> None:
        """Nothing to do in a transaction: a deleted row is gone from every dump at once,
        and its dead tuple stays in the table's pages until VACUUM (docs/personal-data.md)."""
        return

    async def open_rebuild(self, projection: Projection) -> RebuildTarget:
        """A fresh schema where ``projection``'s tables are rebuilt under their plain names;
        its swap moves them into the live schema in one transaction (see
        :class:`PgRebuildTarget`)."""
        target = PgRebuildTarget(self, projection)
        await self._pool.run(target.create)
        return target

    async def close(self) -> None:
        await self._pool.close()


class PgRebuildTarget:
    """:class:`~cqrskit.readside.RebuildTarget` in a fresh schema of the live database.

    ``write`` runs with ``SET LOCAL search_path TO <fresh schema>, <live schema>``: the
    projection's unqualified SQL creates and fills its tables in the fresh schema (and still
    finds other tables in the live one). ``swap``, in ONE transaction: lock the checkpoint
    row (live batches lock it first too, so they wait, and no deadlock is possible), let
    ``decide`` compare and move it, then ``DROP`` each live table and ``ALTER TABLE ... SET
    SCHEMA`` the fresh one (indexes, constraints and owned sequences move with it) into the
    live schema. The catalog change commits atomically: every API process, every
    connection, sees the old tables and checkpoint or the new ones.

    A caveat of DDL under MVCC: a REPEATABLE READ transaction that took its snapshot before
    the swap and first touches the table after it reads the new table through its old
    snapshot. Query handlers keep that harmless by reading the checkpoint *after* their
    rows (the reported position is then never ahead of the rows).
    """

    def __init__(self, live: PostgresDatabase, projection: Projection) -> None:
        self._live = live
        self._name = projection.name
        self._tables = tables_to_rebuild(projection)
        self.schema = f"cqrskit_rebuild_{uuid.uuid4().hex[:12]}"
        self._live_schema = "public"
        self._discarded = False

    def create(self) -> None:
        with self._live.connection() as conn:
            row = conn.execute("SELECT current_schema()").fetchone()
            self._live_schema = str(row[0]) if row and row[0] else "public"
            conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(self.schema)))

    def _write_sync(self, fn: Callable[[SqlTx], T], pipeline: bool) -> T:
        search_path = pgsql.SQL("SET LOCAL search_path TO {}, {}").format(
            pgsql.Identifier(self.schema), pgsql.Identifier(self._live_schema)
        )
        # Never waits for the WAL flush, whatever the live database's durability (as a
        # SQLite rebuild file runs with synchronous=OFF): after a crash before the swap
        # the fresh schema is never used again (a rebuild starts in a new one), and the
        # swap's commit, which waits for its flush, flushes the WAL up to it, these
        # batches included.
        with self._live.connection() as conn:
            return write_transaction(conn, fn, pipeline, (ASYNC_COMMIT, search_path))

    async def write(self, fn: Callable[[SqlTx], T], *, pipeline: bool = False) -> T:
        return await self._live.run(lambda: self._write_sync(fn, pipeline))

    def _swap_sync(self, decide: Callable[[SqlTx], bool]) -> bool:
        live, fresh = pgsql.Identifier(self._live_schema), pgsql.Identifier(self.schema)
        # A plain transaction, whatever the durability: the swap (rare) waits for its
        # flush, which makes the rebuilt tables durable with it.
        with self._live.connection() as conn, conn.transaction():
            tx = PgTx(conn)
            # Taken first, as live batches do: no batch commits between decide's compare
            # and the replacement, and the two orders of locking cannot deadlock.
            lock_position(tx, self._name)
            if not decide(tx):
                raise SwapDeclined  # rolls back; the fresh tables stay
            for table in self._tables:
                name = pgsql.Identifier(table)
                found = conn.execute(
                    "SELECT to_regclass(%s)", (f'"{self.schema}"."{table}"',)
                ).fetchone()
                if found is None or found[0] is None:
                    raise ConfigurationError(
                        f"table {table!r} is declared by projection {self._name!r} but its"
                        " schema did not create it"
                    )
                conn.execute(pgsql.SQL("DROP TABLE IF EXISTS {}.{}").format(live, name))
                conn.execute(pgsql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(fresh, name, live))
        return True

    async def swap(self, decide: Callable[[SqlTx], bool]) -> bool:
        def run() -> bool:
            try:
                return self._swap_sync(decide)
            except SwapDeclined:
                return False

        return await self._live.run(run)

    async def discard(self) -> None:
        if self._discarded:
            return
        self._discarded = True

        def drop() -> None:
            with self._live.connection() as conn:
                conn.execute(
                    pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        pgsql.Identifier(self.schema)
                    )
                )

        await self._live.run(drop)
