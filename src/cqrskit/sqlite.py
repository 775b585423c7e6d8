"""SQLite plumbing shared by the event store and the read side.

Settings: WAL journal (readers never block the writer), ``synchronous=FULL`` (a commit
is on disk when it returns, so it survives SIGKILL and power loss; ``NORMAL`` survives a
process crash but may lose the last commits on power loss: pass ``synchronous="NORMAL"``
knowingly), a busy timeout so separate processes (``social rebuild`` beside ``serve``)
wait for each other instead of failing. Driver errors are converted to
:mod:`cqrskit.errors` at the transaction boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import IntegrityError, OperationalError, PersistenceError, StoreClosed, UniqueViolation
from .sql import Row
from .workers import Workers

if TYPE_CHECKING:
    from .projection import Projection
    from .readside import RebuildTarget

__all__ = ["SqliteDatabase", "SqliteTx", "connect", "convert_error", "translate_errors"]

T = TypeVar("T")


def connect(
    path: str | Path, *, synchronous: str = "FULL", readonly: bool = False
) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        _enable_wal(conn)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    return conn


def _enable_wal(conn: sqlite3.Connection, attempts: int = 200) -> None:
    """Switch a new file to WAL. The switch takes an exclusive lock and SQLite does not
    call the busy handler for it, so two processes opening a brand-new file at the same
    moment (``serve`` and ``rebuild`` on an empty data dir) can see "database is locked"
    at once: retry for a while instead of failing."""
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 + 0.0005 * attempt)


def convert_error(exc: sqlite3.Error) -> PersistenceError:
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        for prefix in ("UNIQUE constraint failed: ", "PRIMARY KEY constraint failed: "):
            if message.startswith(prefix):
                return UniqueViolation(message, message[len(prefix) :])
        return IntegrityError(message)
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        return OperationalError(message)
    return PersistenceError(message)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise convert_error(exc) from exc


class SqliteTx:
    """:class:`~cqrskit.sql.SqlTx` over a sqlite3 connection already inside a transaction.

    ``execute`` runs on one cursor kept for the transaction: a projection batch makes
    thousands of calls, and ``conn.execute`` would create (and free) a cursor for each.
    """

    __slots__ = ("_cursor", "_execute", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._cursor = conn.cursor()
        self._execute = self._cursor.execute

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._execute(sql, params).rowcount

    def close(self) -> None:
        """Finish the kept cursor's last statement (as freeing a cursor per call did), so
        that none is still in progress when the transaction ends."""
        self._cursor.close()

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, params)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def flush(self) -> None:
        """Statements run one by one on SQLite: nothing is ever pending."""

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()


class SqliteDatabase:
    """A SQLite file used from asyncio: one writer thread, a small pool of reader threads.

    ``write(fn)`` runs ``fn(tx)`` in ``BEGIN IMMEDIATE ... COMMIT`` on the writer thread;
    ``read(fn)`` runs it in a read transaction (a consistent snapshot) on a reader thread.
    Any exception rolls the transaction back; sqlite3 errors come out converted.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", readers: int = 4) -> None:
        self.path = Path(path)
        self._synchronous = synchronous
        closed = functools.partial(StoreClosed, f"database {self.path} is closed")
        self._writer_pool = Workers(1, f"sqlite-w-{self.path.name}", closed)
        self._reader_pool = Workers(readers, f"sqlite-r-{self.path.name}", closed)
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- sync API (usable from any thread; the async API wraps it) ----------------------------

    def writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = connect(self.path, synchronous=self._synchronous)
        return self._writer

    def write_sync(self, fn: Callable[[SqliteTx], T]) -> T:
        conn = self.writer_connection()
        with translate_errors():
            conn.execute("BEGIN IMMEDIATE")
            tx = SqliteTx(conn)
            try:
                result = fn(tx)
                tx.close()
            except BaseException:
                tx.close()
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return result

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.writer_connection()  # creates the file and turns WAL on first
            conn = connect(self.path, synchronous=self._synchronous, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def read_sync(self, fn: Callable[[SqliteTx], T]) -> T:
        conn = self._reader()
        with translate_errors():
            conn.execute("BEGIN")
            try:
                return fn(SqliteTx(conn))
            finally:
                conn.execute("ROLLBACK")

    # -- async API ----------------------------------------------------------------------------

    async def write(self, fn: Callable[[SqliteTx], T], *, pipeline: bool = False) -> T:
        """``fn`` in one write transaction. ``pipeline`` is accepted for every backend's
        sake and changes nothing here: SQLite runs in-process, there is no round trip."""
        self._check_open()
        return await self._writer_pool.run(self.write_sync, fn)

    async def write_schema(self, fn: Callable[[SqliteTx], T]) -> T:
        """See :meth:`cqrskit.readside.ReadDatabase.write_schema`: a plain write here,
        ``BEGIN IMMEDIATE`` already excludes every other writer of the file."""
        return await self.write(fn)

    async def read(self, fn: Callable[[SqliteTx], T]) -> T:
        self._check_open()
        return await self._reader_pool.run(self.read_sync, fn)

    async def run_on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer thread with the writer connection, outside any
        transaction (for what SQLite refuses inside one, such as ``ATTACH``)."""
        self._check_open()
        return await self._writer_pool.run(lambda: fn(self.writer_connection()))

    async def open_rebuild(self, projection: Projection) -> RebuildTarget:
        """A fresh database file beside this one where ``projection`` is rebuilt; its swap
        copies the tables into this file in one transaction (see
        :mod:`cqrskit.sqlite_rebuild`)."""
        from .sqlite_rebuild import SqliteRebuildTarget

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
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
