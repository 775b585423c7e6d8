"""Given/when/then for one aggregate: pure and synchronous, no store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ..aggregate import Aggregate
from ..messages import Event
from ._compare import check_raised, describe, mismatch, show_error

__all__ = ["AggregateScenario", "given"]

A = TypeVar("A", bound=Aggregate)
E = TypeVar("E", bound=BaseException)


def given(aggregate: type[A] | A, *events: Event, id: str = "test") -> AggregateScenario[A]:
    """An aggregate that has lived through ``events``: replayed, as a repository loads it.

    ``aggregate`` is its class (made with ``id``) or an instance (e.g. one whose id must be
    built, ``Follow(Follow.pair_id("a", "b"))``).
    """
    subject = aggregate(id) if isinstance(aggregate, type) else aggregate
    for event in events:
        subject.replay(event)
    return AggregateScenario(subject)


class AggregateScenario(Generic[A]):
    """What :func:`given` returns: call :meth:`when`, then one of the ``then`` methods."""

    def __init__(self, aggregate: A) -> None:
        self._aggregate = aggregate
        self._start = len(aggregate.pending_events)
        self._error: Exception | None = None

    @property
    def aggregate(self) -> A:
        """The aggregate under test (the one a ``when`` created, if it returned one)."""
        return self._aggregate

    @property
    def recorded(self) -> list[Event]:
        """The events the ``when`` calls recorded, in order."""
        return self._aggregate.pending_events[self._start :]

    def when(self, decide: Callable[[A], object]) -> AggregateScenario[A]:
        """Run a decision on the aggregate, e.g. ``lambda account: account.deposit(5)``.

        Its exception, if any, is kept for :meth:`then_raises`. A decision that returns an
        aggregate of the same class (a factory: ``lambda _: Post.create(...)``) makes that
        one the aggregate under test. Call ``when`` again for decisions made in turn.
        """
        __tracebackhide__ = True
        if self._error is not None:
            raise AssertionError(
                f"an earlier when raised {show_error(self._error)}: nothing more can happen"
            ) from self._error
        try:
            result = decide(self._aggregate)
        except Exception as exc:
            self._error = exc
            return self
        if isinstance(result, Aggregate) and result is not self._aggregate:
            if not isinstance(result, type(self._aggregate)):
                raise TypeError(
                    f"when returned {type(result).__qualname__}, which is not an instance of"
                    f" {type(self._aggregate).__qualname__}"
                )
            self._aggregate = result
            self._start = 0
        return self

    def then(self, *events: Event) -> A:
        """Assert the decisions recorded exactly ``events``, in order; return the aggregate."""
        __tracebackhide__ = True
        self._raise_if_failed(f"expected events:\n{describe(events)}\nbut")
        problem = mismatch("recorded events", events, self.recorded)
        if problem is not None:
            raise AssertionError(problem)
        return self._aggregate

    def then_nothing(self) -> A:
        """Assert the decisions succeeded and recorded no event; return the aggregate."""
        __tracebackhide__ = True
        return self.then()

    def then_raises(self, kind: type[E], match: str | None = None) -> E:
        """Assert a decision raised ``kind`` (its message matching the regular expression
        ``match``, if given) and recorded nothing; return the exception."""
        __tracebackhide__ = True
        error = check_raised(self._error, kind, match, "the decision")
        if self.recorded:
            raise AssertionError(
                f"the decision raised {kind.__qualname__} as expected, but recorded events"
                f" before it:\n{describe(self.recorded)}"
            )
        return error

    def then_state(self, check: Callable[[A], object]) -> A:
        """Assert the decisions succeeded and ``check(aggregate)`` is true; return it."""
        __tracebackhide__ = True
        self._raise_if_failed("expected a state check to run, but")
        if not check(self._aggregate):
            state = {k: v for k, v in vars(self._aggregate).items() if k != "_pending"}
            raise AssertionError(f"the state check is false; the aggregate's state: {state!r}")
        return self._aggregate

    def _raise_if_failed(self, expectation: str) -> None:
        __tracebackhide__ = True
        if self._error is not None:
            raise AssertionError(
                f"{expectation} the decision raised {show_error(self._error)}"
            ) from self._error
