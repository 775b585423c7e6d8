"""Applying a batch of recorded events to one projection: the loop the runner and the
rebuild share.

Inside one transaction, for each event: look its handler up, skip it without decoding when
there is none, else decode and call. The loop has no awaits and no per-event allocation
beyond the decoded event: a catch-up applies hundreds of thousands of events a second
through it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .codec import Codec
from .messages import RecordedEvent
from .projection import Handler, Projection
from .sql import SqlTx

__all__ = ["Applier", "HandlerFailed"]


class HandlerFailed(Exception):
    """A handler (or decoding, or a deferred statement) failed on ``record``.

    ``record`` is None when the failing event is unknown: in a pipelined transaction a
    statement's error surfaces later, at a sync point, so no event can be blamed and the
    caller bisects the batch (runner) or runs it again unpipelined (rebuild).
    """

    def __init__(self, record: RecordedEvent | None, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.record = record
        self.cause = cause


class Applier:
    """The handlers of one projection, applied to batches of events."""

    __slots__ = ("_decode", "_handlers", "name", "pipelined")

    def __init__(self, projection: Projection, codec: Codec) -> None:
        self.name = projection.name
        self.pipelined = projection.pipelined
        self._handlers: dict[str, Handler] = projection.handlers()
        self._decode = codec.decode_payload

    def apply(self, tx: SqlTx, events: Sequence[RecordedEvent], *, pipelined: bool) -> None:
        """Run the handlers of ``events`` in ``tx``, in order; raise :class:`HandlerFailed`.

        ``pipelined`` says whether ``tx`` defers statement errors (then none is blamed).
        """
        handler_for = self._handlers.get
        decode = self._decode
        record = None
        try:
            for record in events:
                handler = handler_for(record.type)
                if handler is not None:  # unhandled types are skipped without decoding
                    handler(tx, decode(record.type, record.schema_version, record.payload), record)
        except Exception as exc:
            raise HandlerFailed(None if pipelined else record, exc) from exc

    @staticmethod
    def flush(tx: SqlTx) -> None:
        """Wait for every statement sent so far; a deferred error blames no event."""
        try:
            tx.flush()
        except Exception as exc:
            raise HandlerFailed(None, exc) from exc
