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

A handler is ``def handler(self, tx, event, record) -> None``, called with those three
positional arguments. Under a type checker, ``@handles(A, B)`` accepts only a method of a
``Projection`` with that signature whose ``event`` parameter takes ``A | B`` (or a
supertype, such as ``Event``). Without one, defining the class raises
:class:`~cqrskit.errors.ConfigurationError` when a handler cannot take the three
arguments, or is ``async def`` (the runner would never await it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, TypeVar, overload

from .codec import Codec
from .errors import ConfigurationError
from .messages import Event, RecordedEvent
from .sql import SqlTx

__all__ = ["Projection", "handles"]

E = TypeVar("E", bound=Event)
E1 = TypeVar("E1", bound=Event)
E2 = TypeVar("E2", bound=Event)
E3 = TypeVar("E3", bound=Event)
E4 = TypeVar("E4", bound=Event)
P = TypeVar("P", bound="Projection")

_HANDLES_ATTR = "__cqrskit_handles__"

Handler = Callable[[SqlTx, Any, RecordedEvent], None]
"""A bound handler, as :meth:`Projection.handlers` gives it."""

_HandlerMethod = Callable[[P, SqlTx, E, RecordedEvent], None]
"""A handler as written in its class: ``(self, tx, event, record) -> None``."""


@overload
def handles(t1: type[E1], /) -> Callable[[_HandlerMethod[P, E1]], _HandlerMethod[P, E1]]: ...
@overload
def handles(
    t1: type[E1], t2: type[E2], /
) -> Callable[[_HandlerMethod[P, E1 | E2]], _HandlerMethod[P, E1 | E2]]: ...
@overload
def handles(
    t1: type[E1], t2: type[E2], t3: type[E3], /
) -> Callable[[_HandlerMethod[P, E1 | E2 | E3]], _HandlerMethod[P, E1 | E2 | E3]]: ...
@overload
def handles(
    t1: type[E1], t2: type[E2], t3: type[E3], t4: type[E4], /
) -> Callable[[_HandlerMethod[P, E1 | E2 | E3 | E4]], _HandlerMethod[P, E1 | E2 | E3 | E4]]: ...
@overload
def handles(
    *event_types: type[Event],
) -> Callable[[_HandlerMethod[P, Any]], _HandlerMethod[P, Any]]: ...
def handles(*event_types: type[Event]) -> Callable[[Any], Any]:
    """Mark a projection method as the handler of these event types.

    Typed for one to four types: the method's ``event`` parameter must take any of them
    (their union, or a supertype). With five or more, only the rest of the signature is
    checked."""

    def mark(fn: Any) -> Any:
        setattr(fn, _HANDLES_ATTR, tuple(t.event_type() for t in event_types))
        return fn

    return mark


def _check_handler(cls: type, attr: str, value: Any) -> None:
    """Raise unless the runner's call, ``getattr(projection, attr)(tx, event, record)``,
    fits the handler's signature."""
    fn = value.__func__ if isinstance(value, staticmethod | classmethod) else value
    # a function or a class method is bound (self, cls) when looked up on an instance
    bound = inspect.isfunction(value) or isinstance(value, classmethod)
    where = f"{cls.__qualname__}.{attr}"
    if inspect.iscoroutinefunction(fn):
        raise ConfigurationError(
            f"{where}: a projection handler must be a plain def, not async def"
            " (it runs inside the batch's transaction and is never awaited)"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): trust it
        return
    try:
        signature.bind(*([None] * (4 if bound else 3)))
    except TypeError:
        bare = signature.replace(  # the names only: annotations may be strings
            parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
            return_annotation=signature.empty,
        )
        raise ConfigurationError(
            f"{where}{bare}: a projection handler takes three positional arguments"
            " after self: (self, tx, event, record)"
        ) from None


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
    on_failure: ClassVar[Literal["stop", "park"]] = "stop"
    """What the runner does with an event whose handler keeps failing (after the retries):
    "stop" the projection in "error" at that event, for every stream, until an operator
    restarts it; or "park" the event with its error and hold its stream (its later events
    are parked behind it, in order) while every other stream goes on. Parked events are
    retried or skipped by an operator (:class:`~cqrskit.Operations`). "park" adds one table,
    ``cqrskit_parked_<name>``, which a rebuild rebuilds with the projection's own."""
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
        for attr in sorted(set(found.values())):
            # what getattr(instance, attr) finds: an override without the mark included
            owner = next(k for k in cls.__mro__ if attr in vars(k))
            _check_handler(cls, attr, vars(owner)[attr])
        cls._handler_names = found
        if cls.on_failure not in ("stop", "park"):
            raise ConfigurationError(
                f"{cls.__qualname__}.on_failure must be 'stop' or 'park', not {cls.on_failure!r}"
            )

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
