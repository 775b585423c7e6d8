"""Given/when/then for command handlers, against an event store the test hands over."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

from ..bus import CommandBus
from ..codec import Codec
from ..eventstore import ANY, AppendResult, EventStore
from ..messages import Command, Event, RecordedEvent
from ._compare import check_raised, describe, mismatch, show_error

__all__ = ["CommandScenario", "Outcome"]

C = TypeVar("C", bound=Command)
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

_UNSET: Any = object()


class Outcome(Generic[T]):
    """What :meth:`CommandScenario.when` returns: the handler's answer, or its error."""

    def __init__(self, command: Command, value: T, position: int, error: Exception | None) -> None:
        self.command = command
        self._value = value
        self._position = position
        self.error = error
        """The exception the handler raised, or None."""

    @property
    def value(self) -> T:
        """The handler's answer; an :class:`AssertionError` when it raised."""
        __tracebackhide__ = True
        self._check()
        return self._value

    @property
    def position(self) -> int:
        """The position the command reached (the bus's ``CommandResult.position``)."""
        __tracebackhide__ = True
        self._check()
        return self._position

    def _check(self) -> None:
        __tracebackhide__ = True
        if self.error is not None:
            raise AssertionError(
                f"{type(self.command).__qualname__} raised {show_error(self.error)}"
            ) from self.error


class CommandScenario:
    """Command handlers run against ``store`` (a ``MemoryEventStore`` in unit tests).

    Build the handlers on :attr:`store`; append the history with :meth:`given`; run one
    command with :meth:`when`; check what it appended (or raised) with :meth:`then`,
    :meth:`then_nothing` or :meth:`then_raises`. Each ``then`` looks at the last ``when``
    only. :meth:`close` (or ``async with``) closes the store.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._outcome: Outcome[Any] | None = None
        self._new: list[RecordedEvent] = []

    @property
    def codec(self) -> Codec:
        return self.store.codec

    async def given(self, stream_id: str, *events: Event) -> AppendResult:
        """Append ``events`` to ``stream_id`` (inline projections see them, as ever)."""
        return await self.store.append(stream_id, events, ANY)

    @overload
    async def when(self, handler: CommandBus, command: Command[T]) -> Outcome[T]: ...

    @overload
    async def when(self, handler: Callable[[C], Awaitable[T]], command: C) -> Outcome[T]: ...

    async def when(self, handler: Any, command: Command) -> Outcome[Any]:
        """Dispatch ``command`` to ``handler`` (an ``async`` handler, through a bus of its
        own, or a :class:`CommandBus` with everything registered); never raises what the
        handler raised: the outcome and the ``then`` methods hold it."""
        bus = handler
        if not isinstance(bus, CommandBus):
            bus = CommandBus()
            bus.register(type(command), handler)
        before = await self.store.head_position()
        try:
            result = await bus.dispatch(command)
            outcome = Outcome(command, result.value, result.position, None)
        except Exception as exc:
            outcome = Outcome(command, _UNSET, 0, exc)
        self._outcome = outcome
        self._new = await self._read_after(before)
        return outcome

    async def _read_after(self, position: int) -> list[RecordedEvent]:
        found: list[RecordedEvent] = []
        while batch := await self.store.read_all(position, 1000):
            found += batch
            position = batch[-1].position
        return found

    @property
    def new_records(self) -> list[RecordedEvent]:
        """The events the last ``when`` appended, as stored, in log order."""
        return list(self._new)

    @property
    def new_events(self) -> list[Event]:
        """The events the last ``when`` appended, decoded, in log order."""
        return [self.codec.decode(r) for r in self._new]

    def then(self, *events: Event, stream: str | None = None) -> None:
        """Assert the last command succeeded and appended exactly ``events``, in order
        (to ``stream`` when given: other streams are then not looked at)."""
        __tracebackhide__ = True
        outcome = self._last("then")
        name = type(outcome.command).__qualname__
        if outcome.error is not None:
            raise AssertionError(
                f"expected events:\n{describe(events)}\nbut {name} raised"
                f" {show_error(outcome.error)}"
            ) from outcome.error
        records = [r for r in self._new if stream is None or r.stream_id == stream]
        where = "" if stream is None else f" to {stream}"
        problem = mismatch(
            f"events {name} appended{where}",
            events,
            [self.codec.decode(r) for r in records],
            [r.stream_id for r in records],
        )
        if problem is not None:
            raise AssertionError(problem)

    def then_nothing(self) -> None:
        """Assert the last command succeeded and appended no event."""
        __tracebackhide__ = True
        self.then()

    def then_raises(self, kind: type[E], match: str | None = None) -> E:
        """Assert the last command raised ``kind`` (its message matching the regular
        expression ``match``, if given) and appended nothing; return the exception."""
        __tracebackhide__ = True
        outcome = self._last("then_raises")
        name = type(outcome.command).__qualname__
        error = check_raised(outcome.error, kind, match, name)
        if self._new:
            labels = [r.stream_id for r in self._new]
            raise AssertionError(
                f"{name} raised {kind.__qualname__} as expected, but appended events:\n"
                f"{describe(self.new_events, labels)}"
            )
        return error

    def _last(self, method: str) -> Outcome[Any]:
        if self._outcome is None:
            raise AssertionError(f"{method}() before any when(): no command ran")
        return self._outcome

    async def close(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> CommandScenario:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
