"""Command bus and query bus: one handler per message type, middleware around both.

Register every handler explicitly in one place (the app's bootstrap)::

    commands = CommandBus()
    commands.register(RegisterUser, register_user)
    commands.register(UpdateProfile, update_profile, retry_on_conflict=False)
    commands.use(logging_middleware(), timing_middleware(observe))

    result = await commands.dispatch(RegisterUser(...))
    result.value, result.position          # the handler's answer, the consistency token

A command handler is ``async def handler(command) -> value``. The bus opens a
:class:`~cqrskit.context.CommandContext` around it; the repository records the positions
the command read and appended, which become ``result.position``.

Typing: a command declares what its handler returns, ``class RegisterUser(Command[UserId])``
(a bare ``Command`` subclass returns ``Any``). Then ``dispatch(RegisterUser(...))`` is a
``CommandResult[UserId]``, and ``register(RegisterUser, handler)`` is a type error unless
``handler`` accepts a ``RegisterUser`` and returns an awaitable of a ``UserId``. Likewise
``class GetUser(Query[UserView])`` makes ``ask(GetUser(...))`` a ``QueryResult[UserView]``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from ._telemetry import span
from ._tracing import current_request_id
from .backoff import backoff_delays
from .context import CommandContext, _reset, _set
from .errors import ConcurrencyError, ConfigurationError, HandlerNotFound, StaleVersion
from .messages import Command, Query

__all__ = [
    "CommandBus",
    "CommandResult",
    "CommandType",
    "Dispatch",
    "Middleware",
    "QueryBus",
    "QueryResult",
    "logging_middleware",
    "retry_on_conflict_middleware",
    "timing_middleware",
]

T = TypeVar("T")
M = TypeVar("M")
C = TypeVar("C")
C_co = TypeVar("C_co", covariant=True)
R_contra = TypeVar("R_contra", contravariant=True)

log = logging.getLogger("cqrskit.bus")


@dataclass(frozen=True, slots=True)
class CommandResult(Generic[T]):
    value: T
    position: int
    """Global position the command reached: pass it as ``X-Min-Position`` to read your write."""
    replayed: bool = False
    """True when answered from an idempotency key's stored answer, without running."""


@dataclass(frozen=True, slots=True)
class QueryResult(Generic[T]):
    value: T
    position: int
    """Position the read model had processed when it answered (read in the same transaction)."""


class CommandType(Protocol[C_co, R_contra]):
    """A command class as :meth:`CommandBus.register` sees it: it makes ``C_co`` instances
    (a ``Command[R]`` subclass) whose handler must return ``R_contra``.

    Only for type checkers: ``register`` solves ``C`` from the class and the handler's
    parameter, and ``R`` from the handler's return (a lower bound) and from the command's
    declared result (an upper bound, through ``Command._cqrskit_result``), so a handler
    returning anything but a subtype of the declared result is an error at ``register``.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> C_co: ...

    def _cqrskit_result(self, value: R_contra, /) -> None: ...


@dataclass(frozen=True, slots=True)
class Registration:
    message_type: type
    handler: Callable[[Any], Awaitable[Any]]
    retry_on_conflict: bool = False


@dataclass(frozen=True, slots=True)
class Dispatch:
    """What a middleware sees of one dispatch."""

    kind: str  # "command" or "query"
    message: Any
    registration: Registration


Next = Callable[[], Awaitable[Any]]
Middleware = Callable[[Dispatch, Next], Awaitable[Any]]


class _Bus:
    kind = ""

    def __init__(self) -> None:
        self._handlers: dict[type, Registration] = {}
        self._middleware: list[Middleware] = []

    def use(self, *middleware: Middleware) -> None:
        """Add middleware; the first added is the outermost."""
        self._middleware.extend(middleware)

    def _register(self, registration: Registration) -> None:
        if registration.message_type in self._handlers:
            raise ConfigurationError(
                f"a {self.kind} handler for {registration.message_type.__qualname__}"
                " is already registered"
            )
        self._handlers[registration.message_type] = registration

    @property
    def registered(self) -> Sequence[type]:
        return tuple(self._handlers)

    async def _run(self, message: Any, ctx: CommandContext | None = None) -> Any:
        registration = self._handlers.get(type(message))
        if registration is None:
            raise HandlerNotFound(self.kind, type(message))
        dispatch = Dispatch(self.kind, message, registration)
        chain: Next = lambda: registration.handler(message)  # noqa: E731
        if ctx is not None and ctx.commit is not None:
            # Held appends are committed inside the middleware: a conflict there is retried
            # (retry_on_conflict) with the handler, which then holds its appends afresh.
            chain = functools.partial(_handle_then_commit, registration, message, ctx)
        for mw in reversed(self._middleware):
            chain = _bind(mw, dispatch, chain)
        return await chain()


async def _handle_then_commit(registration: Registration, message: Any, ctx: CommandContext) -> Any:
    assert ctx.commit is not None
    ctx.held = []
    value = await registration.handler(message)
    await ctx.commit(value)
    return value


def _bind(mw: Middleware, dispatch: Dispatch, nxt: Next) -> Next:
    return lambda: mw(dispatch, nxt)


class CommandBus(_Bus):
    kind = "command"

    def register(
        self,
        command_type: CommandType[C, T],
        handler: Callable[[C], Awaitable[T]],
        *,
        retry_on_conflict: bool = False,
    ) -> None:
        """Make ``handler`` the one handler of ``command_type`` (a ``Command[T]`` subclass):
        it takes the command and returns a ``T`` (type-checked, see :class:`CommandType`).

        ``retry_on_conflict=True`` declares the handler safe to re-run from a fresh load
        when its append meets a :class:`ConcurrencyError` (see
        :func:`retry_on_conflict_middleware`)."""
        cls = cast("type[Any]", command_type)
        if not issubclass(cls, Command):
            raise ConfigurationError(f"{cls.__qualname__} is not a Command")
        self._register(Registration(cls, handler, retry_on_conflict))

    async def dispatch(
        self,
        command: Command[T],
        *,
        correlation_id: str | None = None,
        extra: dict[str, str] | None = None,
        context: CommandContext | None = None,
    ) -> CommandResult[T]:
        """Run ``command``'s handler: its return value and the position the command reached
        (see :class:`CommandResult`). ``correlation_id`` defaults to the id of the HTTP
        request being served (cqrskit.fastapi), if any, else the command's own id.
        ``context``: one prepared by the caller (an idempotent command's, which holds its
        appends), used instead of a new one."""
        ctx = context or CommandContext(correlation_id=correlation_id, extra=dict(extra or {}))
        if ctx.correlation_id is None:
            ctx.correlation_id = current_request_id()
        token = _set(ctx)
        try:
            with span("cqrskit.dispatch", command=type(command).__qualname__):
                value = await self._run(command, ctx)
        finally:
            _reset(token)
        return CommandResult(value, ctx.position)


class QueryBus(_Bus):
    kind = "query"

    def register(
        self, query_type: type[M], handler: Callable[[M], Awaitable[QueryResult[Any]]]
    ) -> None:
        if not issubclass(query_type, Query):
            raise ConfigurationError(f"{query_type.__qualname__} is not a Query")
        self._register(Registration(query_type, handler))

    async def ask(self, query: Query[T]) -> QueryResult[T]:
        result = await self._run(query)
        if not isinstance(result, QueryResult):
            raise ConfigurationError(
                f"query handler for {type(query).__qualname__} must return a QueryResult"
            )
        return result


# -- middleware --------------------------------------------------------------------------------


def logging_middleware(logger: logging.Logger = log) -> Middleware:
    """Logs each dispatch's type and outcome (never its fields: they may hold secrets)."""

    async def mw(dispatch: Dispatch, nxt: Next) -> Any:
        name = type(dispatch.message).__qualname__
        try:
            result = await nxt()
        except Exception as exc:
            logger.info("%s %s failed: %s", dispatch.kind, name, type(exc).__qualname__)
            raise
        logger.debug("%s %s ok", dispatch.kind, name)
        return result

    return mw


def timing_middleware(observe: Callable[[str, str, float, bool], None]) -> Middleware:
    """Calls ``observe(kind, message type name, seconds, ok)`` after each dispatch."""

    async def mw(dispatch: Dispatch, nxt: Next) -> Any:
        start = time.perf_counter()
        ok = False
        try:
            result = await nxt()
            ok = True
            return result
        finally:
            observe(
                dispatch.kind, type(dispatch.message).__qualname__, time.perf_counter() - start, ok
            )

    return mw


def retry_on_conflict_middleware(
    attempts: int = 5, base_delay: float = 0.005, max_delay: float = 0.2
) -> Middleware:
    """Re-runs a command whose handler was registered ``retry_on_conflict=True`` when it
    meets a :class:`ConcurrencyError`, with exponential backoff and full jitter. Other
    handlers' conflicts, and a :class:`StaleVersion` (the client's own version: a fresh
    load cannot make it current), pass through untouched (their caller decides)."""

    async def mw(dispatch: Dispatch, nxt: Next) -> Any:
        if not dispatch.registration.retry_on_conflict:
            return await nxt()
        delays = backoff_delays(base_delay, max_delay, attempts=attempts)
        while True:
            try:
                return await nxt()
            except StaleVersion:
                raise
            except ConcurrencyError:
                delay = next(delays, None)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    return mw
