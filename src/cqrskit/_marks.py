"""The marks that make an :class:`~cqrskit.App` method a command or query handler."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigurationError
from .messages import Command, Query
from .projection import Projection

__all__ = ["CommandMark", "QueryMark", "command", "query"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class CommandMark:
    message_type: type
    retry_on_conflict: bool


@dataclass(frozen=True)
class QueryMark:
    message_type: type
    reads: tuple[str, ...]


def command(command_type: type[Command], *, retry_on_conflict: bool = False) -> Callable[[F], F]:
    """Mark an ``async`` method of an :class:`App` subclass as the handler of
    ``command_type``; ``retry_on_conflict=True`` declares it safe to run again from a
    fresh load when its append meets a version conflict."""

    def mark(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"command handler {fn.__qualname__} must be async def")
        fn.__cqrskit_handles__ = CommandMark(command_type, retry_on_conflict)  # type: ignore[attr-defined]
        return fn

    return mark


def query(
    query_type: type[Query[Any]], *, reads: Sequence[str | type[Projection] | Projection] = ()
) -> Callable[[F], F]:
    """Mark a method of an :class:`App` subclass as the handler of ``query_type``.

    With ``reads`` (the read models it reads, by name, class or instance) the method may be
    synchronous, ``def handler(self, query, tx) -> value``: it runs in one read transaction
    and the answer's position is the lowest of those read models' checkpoints, read in the
    same transaction; ``ask(query, min_position=p)`` waits for them to reach ``p`` first.
    A coroutine method, ``async def handler(self, query)``, returns a value or a
    :class:`~cqrskit.bus.QueryResult` of its own making.
    """
    names = tuple(r if isinstance(r, str) else r.name for r in reads)

    def mark(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn) and not names:
            raise ConfigurationError(
                f"query handler {fn.__qualname__}: a synchronous handler names the read"
                " models it reads (reads=[...])"
            )
        fn.__cqrskit_handles__ = QueryMark(query_type, names)  # type: ignore[attr-defined]
        return fn

    return mark
