"""In-memory event store: the contract without durability, for unit tests and examples."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..codec import Codec
from ..errors import ConfigurationError, StoreClosed
from ..messages import Event, Metadata, RecordedEvent, new_id
from ..sql import SqlTx
from .base import ANY, AppendResult, EventStore, ExpectedVersion, Snapshot, check_expected

__all__ = ["MemoryEventStore"]

T = TypeVar("T")


class MemoryEventStore(EventStore):
    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._appended = asyncio.Event()
        self._closed = False

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        expected_version: ExpectedVersion = ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        self._check_open()
        encoded, meta = self._encode(events, metadata)
        stream = self._streams.get(stream_id, [])
        check_expected(stream_id, expected_version, len(stream))
        now = time.time()
        records = [
            RecordedEvent(
                position=len(self._log) + i + 1,
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
        self._log.extend(records)
        self._streams[stream_id] = stream + records
        self._appended.set()
        self._appended = asyncio.Event()
        return AppendResult(records[-1].position, records[-1].stream_version)

    async def read_stream(self, stream_id: str, from_version: int = 0) -> list[RecordedEvent]:
        self._check_open()
        return self._streams.get(stream_id, [])[from_version:]

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        self._check_open()
        return self._log[from_position : from_position + limit]

    async def head_position(self) -> int:
        self._check_open()
        return len(self._log)

    async def stream_version(self, stream_id: str) -> int:
        self._check_open()
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
        self._snapshots[snapshot.stream_id] = snapshot

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        self._check_open()
        return self._snapshots.get(stream_id)

    async def query(self, fn: Callable[[SqlTx], T]) -> T:
        self._check_open()
        raise ConfigurationError("the in-memory store has no write-model tables")

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")
