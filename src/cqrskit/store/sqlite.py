"""The event store on one SQLite file, with group commit.

One writer thread owns the write connection. ``append`` encodes its events on the
caller's side, queues a request and awaits a future; the writer takes every request
waiting, runs them in ONE transaction (each inside its own SAVEPOINT, so a failing
request fails alone) and commits once: one fsync for the whole group. Under load the
queue fills while the previous group is being fsynced, so throughput grows with the
number of concurrent writers instead of being capped at one fsync per append.

Reads run on a small pool of read-only connections (WAL: readers never block the writer
nor each other), so the event loop never waits on SQLite.

Durability: with ``synchronous="FULL"`` (the default) and WAL, an append is on disk when
it returns; it survives SIGKILL and power loss. ``synchronous="NORMAL"`` skips the fsync
of the WAL at each commit (it syncs at checkpoints): appends survive a crash of the
process, but the last commits before a power loss or OS crash may be lost. Choose it
knowingly, for data you can afford to lose, in exchange for commits that cost no fsync.

Cancelling an ``append`` while it waits does not withdraw it: the request may still
commit (as with any database whose client disconnects after sending COMMIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..codec import Codec
from ..errors import ConfigurationError, OperationalError, SchemaError, StoreClosed
from ..messages import Event, Metadata, RecordedEvent, new_id
from ..projection import Projection
from ..sql import SqlTx
from ..sqlite import SqliteTx, connect, convert_error, translate_errors
from ..workers import Workers
from .base import (
    ANY,
    AppendResult,
    EventStore,
    ExpectedVersion,
    InlineHandler,
    Snapshot,
    check_expected,
)

__all__ = ["SCHEMA_VERSION", "SqliteEventStore", "StoreStats"]

T = TypeVar("T")

SCHEMA_VERSION = 2
"""Version of the tables below, kept in ``cqrskit_schema_version`` (name 'event_store').

v2 dropped v1's ``streams`` table (one row per stream with its version): the version is
the last entry of the ``(stream_id, stream_version)`` index, which every append writes
anyway, and the table cost each append a fourth B-tree page (~20% of one-client append
throughput, measured). Opening a v1 file upgrades it in place (drops the table)."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cqrskit_schema_version (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    )""",
    # position is the rowid: assigned by the single writer inside BEGIN IMMEDIATE, so
    # position order is commit order (log order) and a reader never sees a gap fill later.
    """CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY,
        stream_id TEXT NOT NULL,
        stream_version INTEGER NOT NULL,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        payload BLOB NOT NULL,
        metadata BLOB NOT NULL,
        recorded_at REAL NOT NULL,
        UNIQUE (stream_id, stream_version)
    )""",
    """CREATE TABLE IF NOT EXISTS snapshots (
        stream_id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        state BLOB NOT NULL
    ) WITHOUT ROWID""",
)

_COLUMNS = (
    "position, stream_id, stream_version, event_id, type, schema_version, payload, metadata,"
    " recorded_at"
)
_SELECT_ALL = f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
_SELECT_STREAM = (
    f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND stream_version > ?"
    " ORDER BY stream_version"
)
_INSERT_EVENT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_HEAD = "SELECT coalesce(max(position), 0) FROM events"
_STREAM_VERSION = "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = ?"
"""The last entry of the (stream_id, stream_version) index: one B-tree descent."""

_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_MAX_GROUP = 512
"""Requests per transaction at most: bounds a group's latency and memory."""
_READER_CACHE_KIB = 256
"""Page cache of each reader connection, in KiB."""
_POLL_INTERVAL = 0.05
"""How often ``wait_for_new_events`` looks for commits made by other processes."""


@dataclass(slots=True)
class StoreStats:
    """Counters for monitoring group commit (written by the writer thread only)."""

    groups: int = 0
    """Transactions committed (each is one fsync with synchronous=FULL)."""
    appends: int = 0
    """Append requests committed."""
    events: int = 0
    """Events committed."""
    failed: int = 0
    """Requests that failed (conflicts, constraint violations, failed commits)."""
    largest_group: int = 0
    """Most requests taken into one transaction."""


Outcome = Any  # a result, or the exception the caller will see


class _Request(ABC):
    """A write the writer thread runs inside the group's transaction, in a SAVEPOINT."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()

    @abstractmethod
    def run(self, conn: sqlite3.Connection, head: int, now: float) -> tuple[Any, int]:
        """Do the write; return (result, new head position)."""


class _Append(_Request):
    __slots__ = ("encoded", "events", "expected", "inline", "metadata", "stream_id")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        inline: tuple[InlineHandler, ...],
        stream_id: str,
        expected: ExpectedVersion,
        encoded: list[tuple[str, str, int, bytes]],
        metadata: bytes,
        events: Sequence[Event],
    ) -> None:
        super().__init__(loop)
        self.inline = inline
        self.stream_id = stream_id
        self.expected = expected
        self.encoded = encoded
        self.metadata = metadata
        self.events = events

    def run(self, conn: sqlite3.Connection, head: int, now: float) -> tuple[Any, int]:
        stream_id = self.stream_id
        encoded = self.encoded
        # The writer holds the write lock (BEGIN IMMEDIATE): nobody else moves the version
        # before this request ends.
        ((actual,),) = conn.execute(_STREAM_VERSION, (stream_id,)).fetchall()
        check_expected(stream_id, self.expected, actual)
        meta = self.metadata
        rows = [
            (head + i, stream_id, actual + i, event_id, type_name, schema, payload, meta, now)
            for i, (event_id, type_name, schema, payload) in enumerate(encoded, 1)
        ]
        if len(rows) == 1:
            conn.execute(_INSERT_EVENT, rows[0])
        else:
            conn.executemany(_INSERT_EVENT, rows)
        inline = self.inline
        if inline:
            records = [RecordedEvent(*r) for r in rows]
            tx = SqliteTx(conn)
            for handler in inline:
                handler(tx, records, self.events)
        last = head + len(rows)
        return AppendResult(last, actual + len(rows)), last


class _SaveSnapshot(_Request):
    __slots__ = ("snapshot",)

    def __init__(self, loop: asyncio.AbstractEventLoop, snapshot: Snapshot) -> None:
        super().__init__(loop)
        self.snapshot = snapshot

    def run(self, conn: sqlite3.Connection, head: int, now: float) -> tuple[Any, int]:
        s = self.snapshot
        # Never replace a snapshot by an older one (two savers racing).
        conn.execute(
            "INSERT INTO snapshots (stream_id, version, state) VALUES (?, ?, ?)"
            " ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,"
            " state = excluded.state WHERE excluded.version >= snapshots.version",
            (s.stream_id, s.version, s.state),
        )
        return None, head


_STOP = object()


def _settle(outcomes: list[tuple[asyncio.Future[Any], Outcome]]) -> None:
    """Resolve futures on their loop (the caller may have cancelled and gone)."""
    for future, outcome in outcomes:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class SqliteEventStore(EventStore):
    """:class:`~cqrskit.store.base.EventStore` on a SQLite file (see the module docstring).

    ``inline`` projections run inside each append's transaction on this database (their
    tables are created at open); if one raises, that append fails whole. They receive the
    event objects as appended, beside their envelopes.
    """

    def __init__(
        self,
        path: str | Path,
        codec: Codec,
        *,
        inline: Sequence[Projection] = (),
        synchronous: str = "FULL",
        readers: int = 4,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        if readers < 1:
            raise ConfigurationError("readers must be at least 1")
        self.path = Path(path)
        self.codec = codec
        self.stats = StoreStats()
        self._synchronous = synchronous.upper()
        self._inline = tuple(inline)
        self._inline_handlers: tuple[InlineHandler, ...] = tuple(
            p.as_inline_handler(codec) for p in self._inline
        )
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._head = 0
        """Last position committed by this process's writer (a lower bound of the head)."""
        self._ready = threading.Event()
        self._setup_error: BaseException | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        # Every read runs on one of these threads, each with its own connection.
        self._readers = Workers(
            readers,
            f"cqrskit-r-{self.path.name}",
            lambda: StoreClosed(f"event store {self.path} is closed"),
        )
        self._writer = threading.Thread(
            target=self._writer_main, name=f"cqrskit-w-{self.path.name}", daemon=True
        )
        self._writer.start()

    @classmethod
    async def open(
        cls,
        path: str | Path,
        codec: Codec,
        *,
        inline: Sequence[Projection] = (),
        synchronous: str = "FULL",
        readers: int = 4,
    ) -> SqliteEventStore:
        """Construct and wait until the schema is in place (raising what opening raised)."""
        store = cls(path, codec, inline=inline, synchronous=synchronous, readers=readers)
        try:
            await store.ready()
        except BaseException:
            await store.close()
            raise
        return store

    async def ready(self) -> None:
        """Wait for the writer to have opened the file and created the schema."""
        if not self._ready.is_set():
            await asyncio.to_thread(self._ready.wait)
        if self._setup_error is not None:
            raise self._open_failed()

    @property
    def pending_requests(self) -> int:
        """Writes queued and not yet taken by the writer (the group-commit queue depth)."""
        return self._queue.qsize()

    # -- writes ---------------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        expected_version: ExpectedVersion = ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        self._check_open()
        # Encoded here, on the caller's side: the writer thread only does SQL, and an
        # unregistered event fails before anything is queued.
        encoded, meta = self._encode(events, metadata)
        request = _Append(
            asyncio.get_running_loop(),
            self._inline_handlers,
            stream_id,
            expected_version,
            [(new_id(), *e) for e in encoded],
            meta,
            tuple(events),
        )
        self._queue.put(request)
        result: AppendResult = await request.future
        return result

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        self._check_open()
        request = _SaveSnapshot(asyncio.get_running_loop(), snapshot)
        self._queue.put(request)
        await request.future

    # -- the writer thread ----------------------------------------------------------------------

    def _writer_main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._setup()
        except BaseException as exc:
            self._setup_error = convert_error(exc) if isinstance(exc, sqlite3.Error) else exc
            if isinstance(exc, sqlite3.Error):
                self._setup_error.__cause__ = exc
        finally:
            self._ready.set()
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < _MAX_GROUP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                cut = batch.index(_STOP)
                self._refuse(batch[cut + 1 :])
                batch = batch[:cut]
            if not batch:
                continue
            if conn is None:
                self._fail(batch, self._open_failed)
                continue
            try:
                self._run_group(conn, batch)
            except Exception as exc:  # a bug must not kill the writer and hang every append
                self._abort(conn, batch, exc)
        while True:  # anything queued by a racing append after the stop
            try:
                self._refuse([self._queue.get_nowait()])
            except queue.Empty:
                break
        if conn is not None:
            conn.close()

    def _setup(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path, synchronous=self._synchronous)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO cqrskit_schema_version (name, version)"
                    " VALUES ('event_store', ?)",
                    (SCHEMA_VERSION,),
                )
                (stored,) = conn.execute(
                    "SELECT version FROM cqrskit_schema_version WHERE name = 'event_store'"
                ).fetchone()
                if stored == 1:  # v1 -> v2: the stream versions live in the events index
                    conn.execute("DROP TABLE IF EXISTS streams")
                    conn.execute(
                        "UPDATE cqrskit_schema_version SET version = 2 WHERE name = 'event_store'"
                    )
                    stored = 2
                if stored != SCHEMA_VERSION:
                    raise SchemaError(
                        f"{self.path}: event store schema v{stored}, this code knows"
                        f" v{SCHEMA_VERSION}"
                    )
                tx = SqliteTx(conn)
                for projection in self._inline:
                    projection.create_schema(tx)
                (self._head,) = conn.execute(_HEAD).fetchone()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _run_group(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        self.stats.largest_group = max(self.stats.largest_group, len(batch))
        try:
            conn.execute("BEGIN IMMEDIATE")
            (head,) = conn.execute(_HEAD).fetchone()
        except sqlite3.Error as exc:
            self._abort(conn, batch, exc)
            return
        now = time.time()
        outcomes: list[Outcome] = []
        succeeded = appends = events = 0
        # A group of one needs no SAVEPOINT (two statements fewer on the one-client path):
        # the transaction is that request's alone, so rolling it back undoes exactly it.
        savepoints = len(batch) > 1
        for request in batch:
            if savepoints:
                try:
                    conn.execute("SAVEPOINT request")
                except sqlite3.Error as exc:
                    self._abort(conn, batch, exc)
                    return
            try:
                result, new_head = request.run(conn, head, now)
                if savepoints:
                    conn.execute("RELEASE request")
            except Exception as exc:
                # Alone in its group, or SQLite rolled the whole transaction back.
                if not savepoints or not conn.in_transaction:
                    self._abort(conn, batch, exc)
                    return
                # Undo this request alone; its neighbours in the group are unaffected.
                try:
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                except sqlite3.Error as undo_exc:
                    self._abort(conn, batch, undo_exc)
                    return
                outcomes.append(_caller_error(exc))
            else:
                # head advances only past requests that stay: the next request reuses a
                # failed one's positions, so the log has no gaps (lag = head - checkpoint).
                events += new_head - head
                head = new_head
                succeeded += 1
                appends += isinstance(request, _Append)
                outcomes.append(result)
        try:
            conn.execute("COMMIT")  # the group's one fsync
        except sqlite3.Error as exc:
            self._abort(conn, batch, exc)
            return
        stats = self.stats
        stats.groups += 1
        stats.appends += appends
        stats.events += events
        stats.failed += len(batch) - succeeded
        self._head = max(self._head, head)
        if events:
            # Before the appenders hear back: a waiter that registers after its append
            # returned is not woken by that append.
            self._wake_waiters()
        self._resolve([(r, o) for r, o in zip(batch, outcomes, strict=True)])

    def _abort(self, conn: sqlite3.Connection, batch: list[_Request], exc: Exception) -> None:
        """The group's transaction failed as a whole: roll back, fail every request."""
        if conn.in_transaction:
            # If even this fails the connection is unusable; the next BEGIN reports it.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        self._fail(batch, lambda: _caller_error(exc))

    def _fail(self, batch: list[_Request], error: Callable[[], BaseException]) -> None:
        self.stats.failed += len(batch)
        # One exception object per caller: raising shares tracebacks otherwise.
        self._resolve([(r, error()) for r in batch])

    def _open_failed(self) -> BaseException:
        """A fresh error for one caller, saying why the store could not be opened."""
        cause = self._setup_error
        error: BaseException
        if isinstance(cause, SchemaError | OperationalError):
            error = type(cause)(str(cause))
        else:
            error = OperationalError(f"event store {self.path} could not be opened: {cause!r}")
        error.__cause__ = cause
        return error

    def _refuse(self, batch: list[Any]) -> None:
        self._fail(batch, lambda: StoreClosed(f"event store {self.path} is closed"))

    @staticmethod
    def _resolve(outcomes: list[tuple[_Request, Outcome]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]] = {}
        for request, outcome in outcomes:
            by_loop.setdefault(request.loop, []).append((request.future, outcome))
        for loop, items in by_loop.items():
            # RuntimeError: the caller's loop is closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)

    def _wake_waiters(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for loop, future in waiters:
            by_loop.setdefault(loop, []).append(future)
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, futures)

    # -- reads ----------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self._ready.wait()  # the writer creates the file, WAL mode and the schema
            if self._setup_error is not None:
                raise self._open_failed()
            conn = connect(self.path, synchronous=self._synchronous, readonly=True)
            # Every reader thread keeps a connection, and each would grow SQLite's default
            # 2 MB page cache; reads are index lookups and sequential scans of a WAL file
            # that the OS page cache already holds, so a small private cache is enough.
            conn.execute(f"PRAGMA cache_size = -{_READER_CACHE_KIB}")
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read on a reader thread; the event loop never waits on SQLite. The
        command path comes here once per command (``Repository.load``), the projection
        path once per batch."""
        self._check_open()
        return await self._readers.run(fn, *args)

    def _read_all_sync(self, from_position: int, limit: int) -> list[RecordedEvent]:
        with translate_errors():
            rows = self._reader().execute(_SELECT_ALL, (from_position, limit)).fetchall()
        # The projection hot path: build envelopes straight from the row tuples.
        return list(itertools.starmap(RecordedEvent, rows))

    def _read_stream_sync(self, stream_id: str, from_version: int) -> list[RecordedEvent]:
        with translate_errors():
            rows = self._reader().execute(_SELECT_STREAM, (stream_id, from_version)).fetchall()
        return list(itertools.starmap(RecordedEvent, rows))

    def _scalar_sync(self, sql: str, params: Sequence[Any]) -> Any:
        with translate_errors():
            row = self._reader().execute(sql, params).fetchone()
        return None if row is None else row[0]

    def _snapshot_sync(self, stream_id: str) -> Snapshot | None:
        with translate_errors():
            row = (
                self._reader()
                .execute("SELECT version, state FROM snapshots WHERE stream_id = ?", (stream_id,))
                .fetchone()
            )
        return None if row is None else Snapshot(stream_id, row[0], row[1])

    def _query_sync(self, fn: Callable[[SqlTx], T]) -> T:
        conn = self._reader()
        with translate_errors():
            conn.execute("BEGIN")  # one snapshot for every statement fn runs
            try:
                return fn(SqliteTx(conn))
            finally:
                conn.execute("ROLLBACK")

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return await self._read(self._read_all_sync, from_position, limit)

    async def read_stream(self, stream_id: str, from_version: int = 0) -> list[RecordedEvent]:
        return await self._read(self._read_stream_sync, stream_id, from_version)

    async def head_position(self) -> int:
        head: int = await self._read(self._scalar_sync, _HEAD, ())
        return head

    async def stream_version(self, stream_id: str) -> int:
        version: int = await self._read(self._scalar_sync, _STREAM_VERSION, (stream_id,))
        return version

    async def recorded_at(self, position: int) -> float | None:
        at: float | None = await self._read(
            self._scalar_sync,
            "SELECT recorded_at FROM events WHERE position > ? ORDER BY position LIMIT 1",
            (position,),
        )
        return at

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return await self._read(self._snapshot_sync, stream_id)

    async def query(self, fn: Callable[[SqlTx], T]) -> T:
        return await self._read(self._query_sync, fn)

    async def wait_for_new_events(self, after_position: int, timeout: float) -> bool:
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            entry = (loop, waiter)
            # Registered before looking at the head, so a commit in between still wakes us.
            with self._lock:
                self._waiters.append(entry)
            try:
                # The writer sets _head before waking: a wake-up is checked, not trusted.
                if self._closed or self._head > after_position:
                    return True  # (when closed, the caller's next read says why)
                # Commits of other processes on the same file wake nobody here: poll the head.
                try:
                    if await self.head_position() > after_position:
                        return True
                except StoreClosed:
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                await asyncio.wait({waiter}, timeout=min(_POLL_INTERVAL, remaining))
            finally:
                with self._lock:
                    if entry in self._waiters:
                        self._waiters.remove(entry)
                waiter.cancel()

    # -- lifecycle ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"event store {self.path} is closed")

    async def close(self) -> None:
        """Stop accepting writes, commit those already queued, close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._shutdown)
        self._wake_waiters()

    def _shutdown(self) -> None:
        self._writer.join()
        self._readers.shutdown()
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()


def _caller_error(exc: BaseException) -> BaseException:
    """The exception an append's caller sees: sqlite3 errors become cqrskit errors."""
    if isinstance(exc, sqlite3.Error):
        converted = convert_error(exc)
        converted.__cause__ = exc
        return converted
    return exc
