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

Personal data (:mod:`cqrskit.personal`): the keys are rows of ``cqrskit_keys`` in this
file; an append writes the keys it made and destroys those it forgets in its own
transaction, and reads look keys up on their own reader connection. Every writing
connection runs with ``secure_delete``; after an append that forgot someone the WAL is
checkpointed and truncated, so the old page images (a destroyed key, a deleted row of an
inline table) leave ``write.db-wal`` too.

Cancelling an ``append`` while it waits does not withdraw it: the request may still
commit (as with any database whose client disconnects after sending COMMIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sqlite3
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..._sealing import ReadKeys
from ..._waiters import Waiters
from ..._workers import Workers
from ...codec import Codec
from ...errors import ConfigurationError, StoreClosed
from ...eventstore import (
    ANY,
    AppendResult,
    EventStore,
    ExpectedVersion,
    InlineHandler,
    Snapshot,
    StreamAppend,
    Within,
)
from ...messages import Event, Metadata, RecordedEvent, new_id
from ...projection import Projection
from ...sql import SqlTx
from . import keys as _keys
from ._append import COLUMNS, STREAM_VERSION, AppendRequest, AppendStreamsRequest, SaveSnapshot
from ._groupcommit import GroupCommitWriter, StoreStats
from ._inline import ROWS, InlineReader
from ._schema import SCHEMA_VERSION, open_log
from .connection import ReaderConnections, SqliteTx, converted, read_transaction

__all__ = ["SCHEMA_VERSION", "SqliteEventStore", "StoreStats"]

T = TypeVar("T")

_COLUMNS = COLUMNS
_SELECT_ALL = f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
_SELECT_STREAM = (
    f"SELECT {_COLUMNS}, (SELECT count FROM cqrskit_keys_destroyed) FROM events"
    " WHERE stream_id = ? AND stream_version > ? ORDER BY stream_version"
)
"""A stream's events, each row with the count of keys ever destroyed, read in the same
snapshot: the keys of its sealed events then come from :class:`ReadKeys` without another
query while that count stays (a command loads its aggregate's stream, then appends)."""
_HEAD = "SELECT coalesce(max(position), 0) FROM events"
_STREAM_VERSION = STREAM_VERSION

_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_READER_CACHE_KIB = 256
"""Page cache of each reader connection, in KiB."""
_POLL_INTERVAL = 0.05
"""How often ``wait_for_new_events`` looks for commits made by other processes."""


class SqliteEventStore(EventStore):
    """:class:`~cqrskit.EventStore` on a SQLite file (see the module docstring).

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
        self._synchronous = synchronous.upper()
        self._inline = tuple(inline)
        self._inline_handlers: tuple[InlineHandler, ...] = tuple(
            p.as_inline_handler(codec) for p in self._inline
        )
        self._closed = False
        self._waiters = Waiters()
        self._lock = threading.Lock()
        # Every read runs on one of these threads, each with its own connection.
        self._readers = Workers(
            readers,
            f"cqrskit-r-{self.path.name}",
            lambda: StoreClosed(f"event store {self.path} is closed"),
            functools.partial(converted, path=self.path),
        )
        self._writer = GroupCommitWriter(
            f"event store {self.path}",
            f"cqrskit-w-{self.path.name}",
            self._setup,
            _read_head,
            self._waiters.wake,
            functools.partial(converted, path=self.path),
        )
        self.stats = self._writer.stats
        # Every reader thread keeps a connection, and each would grow SQLite's default
        # 2 MB page cache; reads are index lookups and sequential scans of a WAL file
        # that the OS page cache already holds, so a small private cache is enough.
        self._reader_connections = ReaderConnections(
            self.path, self._synchronous, self._writer.wait_ready, _READER_CACHE_KIB
        )
        self._reader = self._reader_connections.get
        self._key_store: _keys.SqliteKeyStore | None = None
        self._short_reads = InlineReader(self.path, _SELECT_STREAM + " LIMIT ?", _READER_CACHE_KIB)

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
        await self._writer.ready()

    @property
    def pending_requests(self) -> int:
        """Writes queued and not yet taken by the writer (the group-commit queue depth)."""
        return self._writer.pending

    # -- writes ---------------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        expected_version: ExpectedVersion = ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        self._check_open()
        prepared = await self._prepare_sealed(events, metadata)
        if prepared is None:  # it writes key rows: in append_streams' transaction
            appended = [StreamAppend(stream_id, events, expected_version)]
            return (await self.append_streams(appended, metadata))[0]
        # Encoded (above) on the caller's side: the writer thread only does SQL, and an
        # unregistered event fails before anything is queued.
        encoded, meta = prepared
        request = AppendRequest(
            asyncio.get_running_loop(),
            self._inline_handlers,
            stream_id,
            expected_version,
            [(new_id(), *e) for e in encoded],
            meta,
            tuple(events),
        )
        self._writer.submit(request)
        result: AppendResult = await request.future
        self._short_reads.touched((stream_id,))
        return result

    async def _append_encoded(
        self,
        encoded: list[tuple[StreamAppend, list[tuple[str, int, bytes]]]],
        meta: bytes,
        within: Within | None,
    ) -> list[AppendResult]:
        parts = [(a, [(new_id(), *e) for e in events]) for a, events in encoded]
        loop = asyncio.get_running_loop()
        request = AppendStreamsRequest(loop, self._inline_handlers, parts, meta, within)
        self._writer.submit(request)
        results: list[AppendResult] = await request.future
        self._short_reads.touched(a.stream_id for a, _ in encoded)
        return results

    # -- keys -----------------------------------------------------------------------------------

    @property
    def keys(self) -> _keys.SqliteKeyStore:
        """The :class:`~cqrskit.KeyStore` in this file (its own connection, opened on
        first use: forgetting outside an event, inspection)."""
        if self._key_store is None:
            self._key_store = _keys.SqliteKeyStore(self.path, synchronous=self._synchronous)
        return self._key_store

    async def _lookup_keys(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        return await self._read(self._lookup_keys_sync, subjects)

    def _lookup_keys_sync(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        return _keys.lookup_keys(SqliteTx(self._reader()), subjects)

    def _kept_keys_sync(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        """For a batch of the log: keys kept while the count of destroyed keys, read first,
        stays (``ReadKeys``). A stream's rows hold that count: :meth:`_stream_opened`."""
        return self._kept(_keys.destroyed(self._reader()), self._lookup_keys_sync)(subjects)

    def _key_writes(self, created: dict[str, bytes], forgotten: Collection[str]) -> Within:
        return _keys.key_writes(created, forgotten)

    async def _scrub(self) -> None:
        await self.keys.truncate_wal()

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        self._check_open()
        request = SaveSnapshot(asyncio.get_running_loop(), snapshot)
        self._writer.submit(request)
        await request.future

    # -- the writer thread ----------------------------------------------------------------------

    def _setup(self) -> tuple[sqlite3.Connection, int]:
        """On the writer thread: open the file, create or upgrade the schema."""
        conn, head = open_log(self.path, self._synchronous, self._inline, _read_head)
        # Keys this store makes are kept for its reads from now on (see ``ReadKeys``).
        self._read_keys = ReadKeys(_keys.destroyed(conn))
        return conn, head

    # -- reads ----------------------------------------------------------------------------------

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read on a reader thread; the event loop never waits on SQLite. The
        command path comes here once per command (``Repository.load``), the projection
        path once per batch."""
        self._check_open()
        return await self._readers.run(fn, *args)

    def _read_all_sync(self, from_position: int, limit: int, sealed: bool) -> list[RecordedEvent]:
        rows = self._reader().execute(_SELECT_ALL, (from_position, limit)).fetchall()
        # The projection hot path: build envelopes straight from the row tuples.
        records = list(itertools.starmap(RecordedEvent, rows))
        return records if sealed else self._opened(records, self._kept_keys_sync)

    def _read_stream_sync(self, stream_id: str, from_version: int) -> list[RecordedEvent]:
        rows = self._reader().execute(_SELECT_STREAM, (stream_id, from_version)).fetchall()
        return self._stream_opened(rows, self._lookup_keys_sync)

    def _scalar_sync(self, sql: str, params: Sequence[Any]) -> Any:
        row = self._reader().execute(sql, params).fetchone()
        return None if row is None else row[0]

    def _snapshot_sync(self, stream_id: str) -> Snapshot | None:
        row = (
            self._reader()
            .execute("SELECT version, state FROM snapshots WHERE stream_id = ?", (stream_id,))
            .fetchone()
        )
        return None if row is None else Snapshot(stream_id, row[0], row[1])

    def _query_sync(self, fn: Callable[[SqlTx], T]) -> T:
        return read_transaction(self._reader(), fn)

    async def read_all(
        self, from_position: int = 0, limit: int = 1000, *, sealed: bool = False
    ) -> list[RecordedEvent]:
        return await self._read(self._read_all_sync, from_position, limit, sealed)

    async def read_stream(self, stream_id: str, from_version: int = 0) -> list[RecordedEvent]:
        self._check_open()
        rows = self._short_reads.stream(stream_id, from_version)  # see ._inline
        if rows is not None:
            with contextlib.suppress(sqlite3.Error):  # keys that would wait: a reader thread
                records = self._stream_opened(rows[:ROWS], self._short_reads.keys)
                if len(rows) <= ROWS:
                    return records
                after = records[-1].stream_version  # a long stream: the rest from a thread
                return records + await self._read(self._read_stream_sync, stream_id, after)
        records = await self._read(self._read_stream_sync, stream_id, from_version)
        self._short_reads.touched((stream_id,))  # its pages are cached now
        return records

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
            # Registered before looking at the head, so a commit in between still wakes us.
            waiter = self._waiters.add()
            try:
                # The writer sets its head before waking: a wake-up is checked, not trusted.
                if self._closed or self._writer.head > after_position:
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
                self._waiters.discard(waiter)

    # -- lifecycle ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"event store {self.path} is closed")

    async def close(self) -> None:
        """Stop accepting writes, commit those already queued, close every connection."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._shutdown)
        if self._key_store is not None:
            await self._key_store.close()
        self._waiters.wake()

    def _shutdown(self) -> None:
        self._short_reads.close()
        self._writer.stop()
        self._readers.shutdown()
        self._reader_connections.close()


def _read_head(conn: sqlite3.Connection) -> int:
    (head,) = conn.execute(_HEAD).fetchone()
    return int(head)
