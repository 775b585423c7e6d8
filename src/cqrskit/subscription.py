"""Catch-up subscriptions: read the log from a position, then follow it live.

The log is the bus: a consumer (a process manager, an integration that sends e-mail, a
search indexer) reads the event store from its own checkpoint and is woken when new
events commit. There is no "save, then publish" path that a crash could cut in two.
Where the consumer keeps its checkpoint is its business: a projection keeps it in the
same transaction as its changes (:mod:`cqrskit.runner`); an at-least-once consumer
stores it after handling, and handles duplicates.

::

    async for record in subscribe(store, from_position=checkpoint):
        await handle(record)
        checkpoint = record.position
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .eventstore import EventStore
from .messages import RecordedEvent

__all__ = ["subscribe"]


async def subscribe(
    store: EventStore,
    from_position: int = 0,
    *,
    batch_size: int = 1000,
    idle_timeout: float = 1.0,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[RecordedEvent]:
    """Every event after ``from_position``, in log order, forever (or until ``stop`` is set).

    Catch-up reads pages of ``batch_size``; once caught up it waits for the store's
    wake-up (``wait_for_new_events``: in-process at commit, LISTEN/NOTIFY on PostgreSQL,
    a poll otherwise), at most ``idle_timeout`` at a time so that ``stop`` is noticed.
    """
    position = from_position
    while stop is None or not stop.is_set():
        page = await store.read_all(position, batch_size)
        for record in page:
            yield record
            position = record.position
            if stop is not None and stop.is_set():
                return
        if len(page) < batch_size:
            await store.wait_for_new_events(position, idle_timeout)
