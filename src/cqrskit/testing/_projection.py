"""Given/then for one projection, on a read database the test hands over."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from .._applier import Applier, HandlerFailed
from ..checkpoints import write_position
from ..codec import Codec
from ..messages import Event, RecordedEvent, new_id
from ..projection import Projection
from ..readside import ReadDatabase, create_read_models
from ..sql import Row, SqlTx
from ._compare import mismatch

__all__ = ["DEFAULT_STREAM", "ProjectionScenario"]

T = TypeVar("T")

DEFAULT_STREAM = "test-1"
"""The stream of events given without one: named as an aggregate's are, so that a handler
keyed on ``record.aggregate_id`` sees ``"1"`` (``stream_type`` ``"test"``), not ``""``."""


class ProjectionScenario:
    """``projection`` fed with events the test gives, on ``db`` (a ``MemoryDatabase`` in
    unit tests); then its rows, or a query handler's answers, are checked.

    The schema is created as the runner creates it (checkpoint table included). Each
    :meth:`given` is one batch: the events are encoded with ``codec`` into
    :class:`~cqrskit.RecordedEvent` envelopes (positions, stream versions and ids
    assigned here), then applied in one write transaction by the runner's own loop
    (decoding, upcasting, unhandled types skipped), with the checkpoint moved to the last
    one, so a query handler answers ``position`` as it would live.
    :meth:`close` (or ``async with``) closes the database.
    """

    def __init__(self, projection: Projection, codec: Codec, db: ReadDatabase) -> None:
        self.projection = projection
        self.codec = codec
        self.db = db
        self.position = 0
        """The position of the last event given (the projection's checkpoint)."""
        self._applier = Applier(projection, codec)
        self._versions: dict[str, int] = {}
        self._ready = False

    async def setup(self) -> None:
        """Create the schema (done by the first call that needs it)."""
        if not self._ready:
            await create_read_models(self.db, [self.projection])
            self._ready = True

    async def given(self, *events: Event, stream: str = DEFAULT_STREAM) -> int:
        """Apply ``events``, appended in turn to ``stream``; return the last position."""
        # As a read gives them: personal fields opened (cqrskit.personal).
        encoded = [self.codec.encode_opened(event) for event in events]
        return await self._apply([(stream, *e) for e in encoded])

    async def given_stored(
        self,
        type_name: str,
        payload: Mapping[str, Any] | bytes,
        *,
        schema_version: int,
        stream: str = DEFAULT_STREAM,
    ) -> int:
        """Apply one event as an older release stored it (the codec's upcasters bring
        it up to date); return its position."""
        raw = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        return await self._apply([(stream, type_name, schema_version, raw)])

    async def _apply(self, events: Sequence[tuple[str, str, int, bytes]]) -> int:
        __tracebackhide__ = True
        if not events:
            return self.position
        await self.setup()
        now = time.time()
        versions = dict(self._versions)
        metadata = self.codec.encode_metadata(None)
        records = []
        for i, (stream, type_name, schema_version, payload) in enumerate(events, 1):
            versions[stream] = versions.get(stream, 0) + 1
            records.append(
                RecordedEvent(
                    position=self.position + i,
                    stream_id=stream,
                    stream_version=versions[stream],
                    event_id=new_id(),
                    type=type_name,
                    schema_version=schema_version,
                    payload=payload,
                    metadata=metadata,
                    recorded_at=now,
                )
            )
        last = records[-1]

        def batch(tx: SqlTx) -> None:
            self._applier.apply(tx, records, pipelined=False)
            Applier.flush(tx)
            write_position(
                tx, self.projection.name, last.position, "running", now, 0.0, last.event_id
            )

        try:
            await self.db.write(batch)
        except HandlerFailed as failed:  # nothing of this batch was applied
            cause, record = failed.cause, failed.record
            if record is not None:
                cause.add_note(
                    f"while {self.projection.name} applied {record.type} (position"
                    f" {record.position}, stream {record.stream_id!r} version"
                    f" {record.stream_version})"
                )
            raise cause from None
        self._versions = versions
        self.position = last.position
        return self.position

    async def read(self, fn: Callable[[SqlTx], T]) -> T:
        """``fn(tx)`` in one read transaction of the database."""
        await self.setup()
        return await self.db.read(fn)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """The rows a query answers, as tuples."""
        found = await self.read(lambda tx: tx.fetchall(sql, params))
        return [tuple(row) for row in found]

    async def then_rows(self, sql: str, *rows: Sequence[Any], params: Sequence[Any] = ()) -> None:
        """Assert ``sql`` answers exactly ``rows``, in order (give it an ``ORDER BY``)."""
        __tracebackhide__ = True
        problem = mismatch(
            f"rows of {sql!r}", [tuple(r) for r in rows], await self.rows(sql, params)
        )
        if problem is not None:
            raise AssertionError(problem)

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> ProjectionScenario:
        await self.setup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
