"""The marks that make an :class:`~cqrskit.App` method a command or query handler."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast, overload

from .bus import CommandType, QueryResult
from .errors import ConfigurationError
from .messages import Command, Query
from .projection import Projection
from .sql import SqlTx

__all__ = ["CommandMark", "QueryMark", "command", "query"]

S = TypeVar("S")
C = TypeVar("C", bound=Command[Any])
R = TypeVar("R")


@dataclass(frozen=True)
class CommandMark:
    message_type: type
    retry_on_conflict: bool


@dataclass(frozen=True)
class QueryMark:
    message_type: type
    reads: tuple[str, ...]


def command(
    command_type: CommandType[C, R], *, retry_on_conflict: bool = False
) -> Callable[[Callable[[S, C], Awaitable[R]]], Callable[[S, C], Awaitable[R]]]:
    """Mark an ``async`` method of an :class:`App` subclass as the handler of
    ``command_type``; ``retry_on_conflict=True`` declares it safe to run again from a
    fresh load when its append meets a version conflict. Type-checked: the method takes
    that command and returns the command's declared result (``Command[R]``)."""

    def mark(fn: Callable[[S, C], Awaitable[R]]) -> Callable[[S, C], Awaitable[R]]:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"command handler {fn.__qualname__} must be async def")
        fn.__cqrskit_handles__ = CommandMark(cast(type, command_type), retry_on_conflict)  # type: ignore[attr-defined]
        return fn

    return mark


class QueryDecorator(Protocol[R]):
    """What ``@query(...)`` applies to a method: type-checked against the query's result."""

    @overload
    def __call__(self, fn: Callable[[S, Any, SqlTx], R]) -> Callable[[S, Any, SqlTx], R]: ...

    @overload
    def __call__(
        self, fn: Callable[[S, Any], Awaitable[R]]
    ) -> Callable[[S, Any], Awaitable[R]]: ...

    @overload
    def __call__(
        self, fn: Callable[[S, Any], Awaitable[QueryResult[R]]]
    ) -> Callable[[S, Any], Awaitable[QueryResult[R]]]: ...


def query(
    query_type: type[Query[R]], *, reads: Sequence[str | type[Projection] | Projection] = ()
) -> QueryDecorator[R]:
    """Mark a method of an :class:`App` subclass as the handler of ``query_type``.

    With ``reads`` (the read models it reads, by name, class or instance) the method may be
    synchronous, ``def handler(self, query, tx) -> value``: it runs in one read transaction
    and the answer's position is the lowest of those read models' checkpoints, read in the
    same transaction; ``ask(query, min_position=p)`` waits for them to reach ``p`` first.
    A coroutine method, ``async def handler(self, query)``, returns a value or a
    :class:`~cqrskit.bus.QueryResult` of its own making.
    """
    names = tuple(r if isinstance(r, str) else r.name for r in reads)

    def mark(fn: Any) -> Any:
        if not inspect.iscoroutinefunction(fn) and not names:
            raise ConfigurationError(
                f"query handler {fn.__qualname__}: a synchronous handler names the read"
                " models it reads (reads=[...])"
            )
        fn.__cqrskit_handles__ = QueryMark(query_type, names)
        return fn

    return cast(QueryDecorator[R], mark)
