"""Projections: one class per read model, one handler per event type it cares about.

::

    class UserProfiles(Projection):
        name = "user_profiles"
        tables = ("user_profiles",)

        def create_schema(self, tx: SqlTx) -> None:
            tx.execute("CREATE TABLE IF NOT EXISTS user_profiles (...)")

        @handles(UserRegistered)
        def on_registered(self, tx: SqlTx, event: UserRegistered, record: RecordedEvent) -> None:
            tx.execute("INSERT INTO user_profiles ...", (...))

The runner applies events in batches inside one transaction with the checkpoint, so a
handler must only touch the read database through ``tx``. Events whose type has no
handler are skipped without being decoded. The same class works inline on the write side
(see :meth:`Projection.as_inline_handler`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from .codec import Codec
from .errors import ConfigurationError
from .messages import Event, RecordedEvent
from .sql import SqlTx

__all__ = ["Projection", "handles"]

E = TypeVar("E", bound=Event)
F = TypeVar("F", bound=Callable[..., None])

_HANDLES_ATTR = "__cqrskit_handles__"

Handler = Callable[[SqlTx, Any, RecordedEvent], None]


def handles(*event_types: type[Event]) -> Callable[[F], F]:
    """Mark a projection method as the handler of these event types."""

    def mark(fn: F) -> F:
        setattr(fn, _HANDLES_ATTR, tuple(t.event_type() for t in event_types))
        return fn

    return mark


class Projection:
    name: ClassVar[str] = ""
    """Unique name: the key of its checkpoint."""
    tables: ClassVar[tuple[str, ...]] = ()
    """The tables this projection owns (a rebuild builds fresh copies and swaps them in)."""
    pipelined: ClassVar[bool] = False
    """Declare True when the handlers never look at what ``tx.execute`` returns (the row
    count) and do not read between writes: a backend with round trips (PostgreSQL) may
    then send a batch's statements without waiting for each answer, one round trip per
    batch instead of one per statement. Errors surface at the batch's end instead of at
    the statement, so the runner bisects the batch to find the failing event."""
    _handler_names: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for type_name in getattr(value, _HANDLES_ATTR, ()):
                    if type_name in found and found[type_name] != attr and klass is cls:
                        raise ConfigurationError(
                            f"{cls.__qualname__}: two handlers for event type {type_name!r}"
                        )
                    found[type_name] = attr
        cls._handler_names = found

    def create_schema(self, tx: SqlTx) -> None:
        """Create the projection's tables and indexes if they do not exist (idempotent)."""

    @property
    def handled_types(self) -> frozenset[str]:
        return frozenset(self._handler_names)

    def handlers(self) -> dict[str, Handler]:
        """Event type name -> bound handler."""
        return {t: getattr(self, attr) for t, attr in self._handler_names.items()}

    def as_inline_handler(
        self, codec: Codec
    ) -> Callable[[SqlTx, Sequence[RecordedEvent], Sequence[Event]], None]:
        """This projection as an inline write-model handler (same transaction as the append)."""
        table = self.handlers()

        def run(tx: SqlTx, records: Sequence[RecordedEvent], events: Sequence[Event]) -> None:
            for record, event in zip(records, events, strict=True):
                handler = table.get(record.type)
                if handler is not None:
                    handler(tx, event, record)

        return run
