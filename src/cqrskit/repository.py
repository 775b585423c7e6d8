"""Load and save event-sourced aggregates, with optional snapshots every N events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

from ._telemetry import span
from .aggregate import Aggregate
from .context import current_context
from .errors import StaleVersion, StreamNotFound
from .eventstore import NO_STREAM, AppendResult, EventStore, Snapshot, StreamAppend

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)


class Repository(Generic[A]):
    def __init__(
        self,
        store: EventStore,
        factory: Callable[[str], A],
        stream_id: Callable[[str], str],
        snapshot_every: int | None = None,
    ) -> None:
        """``factory(id)`` makes an empty aggregate; ``stream_id(id)`` names its stream.

        With ``snapshot_every=N`` a snapshot is stored (after the append, best effort)
        whenever a save crosses a multiple of N; loading starts from the latest one.
        """
        self._store = store
        self._factory = factory
        self._stream_id = stream_id
        self._snapshot_every = snapshot_every

    @classmethod
    def for_type(
        cls, store: EventStore, aggregate: type[A], snapshot_every: int | None = None
    ) -> Repository[A]:
        return cls(store, aggregate, aggregate.stream_id, snapshot_every)

    async def get(self, id: str, expected_version: int | None = None) -> A:
        """The aggregate; raises :class:`StreamNotFound` when it has no events, and
        :class:`StaleVersion` when ``expected_version`` (a client's, say from a PATCH body)
        is not its version. Saving it then appends expecting that version: a change made
        in between is a conflict too."""
        aggregate = await self.load(id)
        if not aggregate.exists:
            raise StreamNotFound(self._stream_id(id))
        if expected_version is not None and aggregate.version != expected_version:
            raise StaleVersion(self._stream_id(id), expected_version, aggregate.version)
        return aggregate

    async def load(self, id: str) -> A:
        """The aggregate as stored (version 0 when its stream does not exist)."""
        stream = self._stream_id(id)
        aggregate = self._factory(id)
        from_version = 0
        if self._snapshot_every:
            snapshot = await self._store.load_snapshot(stream)
            if snapshot is not None:
                aggregate.restore_state(msgspec.json.decode(snapshot.state))
                aggregate.version = from_version = snapshot.version
        records = await self._store.read_stream(stream, from_version)
        decode = self._store.codec.decode
        for record in records:
            aggregate.replay(decode(record))
        ctx = current_context()
        if ctx is not None and records:
            ctx.saw(records[-1].position)
        return aggregate

    async def save(self, aggregate: A) -> AppendResult | None:
        """Append the aggregate's pending events, expecting the version it was loaded at.

        Returns None when there was nothing to save.

        In a command run once per idempotency key the append is held until the handler
        returns (then made with the key, in one transaction): the result's ``position`` is
        0 until then, and a load of the same stream does not see the events yet.
        """
        events = aggregate.pending_events
        if not events:
            return None
        expected = aggregate.committed_version
        ctx = current_context()
        stream = self._stream_id(aggregate.id)
        if ctx is not None and ctx.held is not None:
            wanted = expected if expected else NO_STREAM
            ctx.held.append(StreamAppend(stream, list(events), wanted))
            aggregate.mark_saved()
            return AppendResult(0, expected + len(events))
        with span("cqrskit.append", stream_id=stream, events=len(events)):
            result = await self._store.append(
                stream,
                events,
                expected if expected else NO_STREAM,
                ctx.metadata() if ctx is not None else None,
            )
        aggregate.mark_saved()
        if ctx is not None:
            ctx.saw(result.position)
        every = self._snapshot_every
        if every and result.version // every > expected // every:
            state = aggregate.snapshot_state()
            if state is not None:
                await self._store.save_snapshot(
                    Snapshot(
                        self._stream_id(aggregate.id), result.version, msgspec.json.encode(state)
                    )
                )
        return result
