"""The next batch of one projection, read from the log while the current one commits."""

from __future__ import annotations

import asyncio

from .eventstore import EventStore
from .messages import RecordedEvent

__all__ = ["ReadAhead"]


class ReadAhead:
    """Reads batches of ``size`` events; :meth:`start` reads the next one early."""

    def __init__(self, store: EventStore, size: int) -> None:
        self._store = store
        self._size = size
        self._pending: tuple[int, asyncio.Task[list[RecordedEvent]]] | None = None

    def start(self, after: int, go: asyncio.Event) -> None:
        """Read the batch after ``after`` once ``go`` is set: when the current batch's
        handlers are done and its commit is on its way (see ``Worker._commit``)."""
        self._pending = (after, asyncio.ensure_future(self._read_when(go, after)))

    async def _read_when(self, go: asyncio.Event, after: int) -> list[RecordedEvent]:
        await go.wait()
        return await self._store.read_all(after, self._size)

    async def read(self, after: int) -> list[RecordedEvent]:
        """The batch after ``after``: the one read ahead when it was read from there."""
        pending, self._pending = self._pending, None
        if pending is not None:
            if pending[0] == after:
                return await pending[1]
            await _discard(pending[1])  # read from a checkpoint since moved
        return await self._store.read_all(after, self._size)

    async def discard(self) -> None:
        """Drop a read-ahead that will not be used."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await _discard(pending[1])


async def _discard(task: asyncio.Task[list[RecordedEvent]]) -> None:
    """Cancel ``task`` without leaving its outcome unretrieved."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()
