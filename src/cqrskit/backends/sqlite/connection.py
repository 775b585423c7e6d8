"""SQLite connections: settings, the SqlTx adapter, driver errors converted.

Settings: WAL journal (readers never block the writer), ``synchronous=FULL`` (a commit
is on disk when it returns, so it survives SIGKILL and power loss; ``NORMAL`` survives a
process crash but may lose the last commits on power loss: pass ``synchronous="NORMAL"``
knowingly), a busy timeout so separate processes (``social rebuild`` beside ``serve``)
wait for each other instead of failing, and ``secure_delete`` on every connection that
writes: what a statement deletes or overwrites (a forgotten user's rows, a destroyed key, an
old version of a changed row) is overwritten with zeros in its page, not left behind as free
space that still holds the bytes (see ``docs/personal-data.md``; its cost is in
``docs/benchmarks.md``). Driver errors are converted to :mod:`cqrskit.errors` at the
transaction boundary.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ...errors import (
    ConfigurationError,
    DamagedDatabase,
    IntegrityError,
    OperationalError,
    PersistenceError,
    StorageFull,
    UniqueViolation,
)
from ...sql import Row

T = TypeVar("T")

__all__ = [
    "ReaderConnections",
    "SqliteTx",
    "connect",
    "convert_error",
    "converted",
    "quote",
    "read_transaction",
    "table_schema",
    "translate_errors",
    "write_transaction",
]


def connect(
    path: str | Path, *, synchronous: str = "FULL", readonly: bool = False
) -> sqlite3.Connection:
    """A connection to the file at ``path``; a new file is created readable and writable
    by its owner only (0600: it holds whatever the events and read models hold, personal
    data included), and SQLite gives its -wal and -shm files the same mode."""
    if not readonly:
        _create_private(Path(path))
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        _enable_wal(conn)
        conn.execute("PRAGMA secure_delete = ON")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    return conn


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite takes an empty file
    for a new database)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


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


_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_FULL = frozenset({sqlite3.SQLITE_FULL})


def convert_error(exc: sqlite3.Error, path: Path | None = None) -> PersistenceError:
    """The :mod:`cqrskit.errors` error ``exc`` means; ``path``, the file it came from, is
    named in the message of a damaged or full database (an operator must know which)."""
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        for prefix in ("UNIQUE constraint failed: ", "PRIMARY KEY constraint failed: "):
            if message.startswith(prefix):
                return UniqueViolation(message, message[len(prefix) :])
        return IntegrityError(message)
    # The extended code's low byte is the primary code (SQLITE_CORRUPT_INDEX is CORRUPT).
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    where = "" if path is None else f"{path}: "
    if code in _DAMAGED:
        return DamagedDatabase(f"{where}the database file is damaged ({message})")
    if code in _FULL:
        return StorageFull(f"{where}{message} (no space left for the database)")
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        return OperationalError(message)
    return PersistenceError(message)


def converted(exc: Exception, path: Path | None = None) -> Exception:
    """``exc`` as its caller sees it: a sqlite3 error becomes the cqrskit error it means
    (with the driver's as its cause), anything else stays as it is. Every pool of threads
    of this backend applies it to what its calls raise (``Workers(translate=...)``, with
    the file's ``path``): the one boundary where this backend's errors are converted."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    error = convert_error(exc, path)
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Convert sqlite3 errors raised in the block, for code that runs on no pool."""
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

    @property
    def deferred(self) -> bool:
        return False

    def flush(self) -> None:
        """Statements run one by one on SQLite: nothing is ever pending."""

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()


def write_transaction(conn: sqlite3.Connection, fn: Callable[[SqliteTx], T]) -> T:
    """``fn`` in ``BEGIN IMMEDIATE ... COMMIT`` on ``conn``, rolled back when anything
    raises: a failed COMMIT too (a deferred constraint), which leaves the transaction open
    otherwise, and every later BEGIN would fail."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        tx = SqliteTx(conn)
        try:
            result = fn(tx)
        finally:
            tx.close()  # no statement of the kept cursor still running at COMMIT
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def quote(name: str) -> str:
    """``name`` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def table_schema(
    conn: sqlite3.Connection, table: str, owner: str, schema: str = "main"
) -> list[str]:
    """The CREATE statements of ``table`` in ``schema``, the table's first, then its
    indexes and triggers in creation order (what a rebuild's swap recreates); a
    :class:`~cqrskit.errors.ConfigurationError` when projection ``owner`` declared the
    table but its schema did not create it."""
    objects = conn.execute(
        f"SELECT type, sql FROM {schema}.sqlite_master WHERE tbl_name = ?"
        " AND sql IS NOT NULL ORDER BY type = 'table' DESC, rowid",
        (table,),
    ).fetchall()
    if not objects or objects[0][0] != "table":
        raise ConfigurationError(
            f"table {table!r} is declared by projection {owner!r} but its schema did not create it"
        )
    return [sql for _, sql in objects]


def read_transaction(conn: sqlite3.Connection, fn: Callable[[SqliteTx], T]) -> T:
    """``fn`` in a read transaction on ``conn``: one snapshot for every statement it runs."""
    conn.execute("BEGIN")
    try:
        return fn(SqliteTx(conn))
    finally:
        conn.execute("ROLLBACK")


class ReaderConnections:
    """One read-only connection per reader thread, opened on first use, closed together.

    ``before_first`` runs before a thread's connection is opened: the writer must have
    created the file and switched it to WAL (a read-only connection cannot). With
    ``cache_kib`` each connection gets that small a page cache instead of SQLite's 2 MB.
    """

    def __init__(
        self,
        path: Path,
        synchronous: str,
        before_first: Callable[[], object],
        cache_kib: int | None = None,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._before_first = before_first
        self._cache_kib = cache_kib
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[sqlite3.Connection] = []
        self._generation = 0
        """Bumped by ``close``: a thread's connection of an older generation is closed."""

    def get(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.generation != self._generation:
            self._before_first()
            conn = connect(self._path, synchronous=self._synchronous, readonly=True)
            if self._cache_kib is not None:
                conn.execute(f"PRAGMA cache_size = -{self._cache_kib}")
            self._local.conn = conn
            self._local.generation = self._generation
            with self._lock:
                self._opened.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection (their threads have stopped, or are idle: the next
        ``get`` on each opens a new one)."""
        with self._lock:
            opened, self._opened = self._opened, []
            self._generation += 1
        for conn in opened:
            conn.close()
