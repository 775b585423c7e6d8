"""In-memory event store: the contract without durability, for unit tests and examples.

The log is a Python list. ``inline`` projections keep their write-model tables in an
in-memory SQLite database (a :class:`~cqrskit.backends.memory.MemoryDatabase`, tables
created at construction): each append then runs on that database's thread, its handlers
inside one transaction, and if one raises the append fails whole (nothing of it is stored,
the log untouched). ``query`` reads that database in one read transaction.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

from ...codec import Codec
from ...errors import StoreClosed
from ...eventstore import (
    ANY,
    AppendResult,
    EventStore,
    ExpectedVersion,
    Snapshot,
    StreamAppend,
    Within,
    check_expected,
)
from ...idempotency import IDEMPOTENCY_DDL
from ...messages import Event, Metadata, RecordedEvent, new_id
from ...projection import Projection
from ...sql import SqlTx
from .database import MemoryDatabase
from .keys import MemoryKeyStore

__all__ = ["MemoryEventStore"]

T = TypeVar("T")


class MemoryEventStore(EventStore):
    """:class:`~cqrskit.EventStore` in memory (see the module docstring). ``inline``
    projections run as on :class:`~cqrskit.backends.sqlite.SqliteEventStore`."""

    def __init__(self, codec: Codec, *, inline: Sequence[Projection] = ()) -> None:
        self.codec = codec
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = threading.RLock()
        """Held from an append's version check to its change of the log: appends run on
        the loop, or (with inline handlers, or several streams) on the write model's
        thread."""
        self._appended = asyncio.Event()
        self._closed = False
        self._db = MemoryDatabase()
        self._keys = MemoryKeyStore()
        self._inline = tuple(p.as_inline_handler(codec) for p in inline)

        def create(tx: SqlTx) -> None:
            for statement in IDEMPOTENCY_DDL:
                tx.execute(statement)
            for projection in inline:
                projection.create_schema(tx)

        self._db.write_sync(create)

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
        encoded, meta = prepared
        append = functools.partial(
            self._append_sync, stream_id, expected_version, encoded, meta, tuple(events)
        )
        if not self._inline:
            # On the loop, without awaiting: appends never interleave.
            return append(self._wake)
        # On the write model's one thread: appends take turns there. Waiters are woken
        # before the caller hears back (the loop runs its callbacks in order).
        loop = asyncio.get_running_loop()
        return await self._db.run(lambda: append(lambda: loop.call_soon_threadsafe(self._wake)))

    def _append_sync(
        self,
        stream_id: str,
        expected_version: ExpectedVersion,
        encoded: list[tuple[str, int, bytes]],
        meta: bytes,
        events: Sequence[Event],
        wake: Callable[[], object],
    ) -> AppendResult:
        with self._lock:
            return self._append_locked(stream_id, expected_version, encoded, meta, events, wake)

    def _append_locked(
        self,
        stream_id: str,
        expected_version: ExpectedVersion,
        encoded: list[tuple[str, int, bytes]],
        meta: bytes,
        events: Sequence[Event],
        wake: Callable[[], object],
    ) -> AppendResult:
        stream = self._streams.get(stream_id, [])
        check_expected(stream_id, expected_version, len(stream))
        now = time.time()
        head = len(self._log)
        records = [
            RecordedEvent(
                position=head + i + 1,
                stream_id=stream_id,
                stream_version=len(stream) + i + 1,
                event_id=new_id(),
                type=name,
                schema_version=version,
                payload=payload,
                metadata=meta,
                recorded_at=now,
            )
            for i, (name, version, payload) in enumerate(encoded)
        ]
        if self._inline:
            self._db.write_sync(lambda tx: self._run_inline(tx, records, events))
        self._log.extend(records)
        self._streams[stream_id] = stream + records
        wake()
        return AppendResult(records[-1].position, records[-1].stream_version)

    async def _append_encoded(
        self,
        parts: list[tuple[StreamAppend, list[tuple[str, int, bytes]]]],
        meta: bytes,
        within: Within | None,
    ) -> list[AppendResult]:
        loop = asyncio.get_running_loop()
        wake = functools.partial(loop.call_soon_threadsafe, self._wake)
        return await self._db.run(lambda: self._append_streams_sync(parts, meta, within, wake))

    @property
    def keys(self) -> MemoryKeyStore:
        return self._keys

    async def _lookup_keys(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        return self._keys.lookup(subjects)

    def _key_writes(self, created: dict[str, bytes], forgotten: Collection[str]) -> Within:
        return self._keys.writes(created, forgotten)

    def _append_streams_sync(
        self,
        parts: list[tuple[StreamAppend, list[tuple[str, int, bytes]]]],
        meta: bytes,
        within: Within | None,
        wake: Callable[[], object],
    ) -> list[AppendResult]:
        with self._lock:
            now, head = time.time(), len(self._log)
            versions: dict[str, int] = {}
            batches: list[tuple[StreamAppend, list[RecordedEvent]]] = []
            for append, encoded in parts:
                stream_id = append.stream_id
                version = versions.get(stream_id, len(self._streams.get(stream_id, ())))
                check_expected(stream_id, append.expected_version, version)
                records = [
                    RecordedEvent(
                        head + i, stream_id, version + i, new_id(), name, schema, payload, meta, now
                    )
                    for i, (name, schema, payload) in enumerate(encoded, 1)
                ]
                head, versions[stream_id] = head + len(records), version + len(records)
                batches.append((append, records))
            results = [AppendResult(r[-1].position, r[-1].stream_version) for _, r in batches]

            def transaction(tx: SqlTx) -> None:
                for append, records in batches:
                    self._run_inline(tx, records, append.events)
                if within is not None:
                    within(tx, results)

            self._db.write_sync(transaction)  # raises: nothing is stored, the log untouched
            for _, records in batches:
                self._log.extend(records)
                stream_id = records[0].stream_id
                self._streams[stream_id] = self._streams.get(stream_id, []) + records
            if batches:
                wake()
            return results

    def _run_inline(
        self, tx: SqlTx, records: Sequence[RecordedEvent], events: Sequence[Event]
    ) -> None:
        for handler in self._inline:
            handler(tx, records, events)

    def _wake(self) -> None:
        self._appended.set()
        self._appended = asyncio.Event()

    async def read_stream(self, stream_id: str, from_version: int = 0) -> list[RecordedEvent]:
        self._check_open()
        with self._lock:
            records = self._streams.get(stream_id, [])[from_version:]
        return self._opened(records, self._keys.lookup)

    async def read_all(
        self, from_position: int = 0, limit: int = 1000, *, sealed: bool = False
    ) -> list[RecordedEvent]:
        self._check_open()
        with self._lock:
            records = self._log[from_position : from_position + limit]
        return records if sealed else self._opened(records, self._keys.lookup)

    async def head_position(self) -> int:
        self._check_open()
        return len(self._log)

    async def stream_version(self, stream_id: str) -> int:
        self._check_open()
        with self._lock:
            return len(self._streams.get(stream_id, ()))

    async def wait_for_new_events(self, after_position: int, timeout: float) -> bool:
        self._check_open()
        if len(self._log) > after_position:
            return True
        try:
            await asyncio.wait_for(self._appended.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        self._check_open()
        current = self._snapshots.get(snapshot.stream_id)
        # Never replace a snapshot by an older one (two savers racing); an equal one
        # replaces it (a re-save).
        if current is None or snapshot.version >= current.version:
            self._snapshots[snapshot.stream_id] = snapshot

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        self._check_open()
        return self._snapshots.get(stream_id)

    async def query(self, fn: Callable[[SqlTx], T]) -> T:
        """``fn`` in a read transaction of the write-model database (the tables of the
        inline projections)."""
        self._check_open()
        return await self._db.read(fn)

    async def close(self) -> None:
        self._closed = True
        await self._keys.close()
        await self._db.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")
