"""A command with an idempotency key, run once (see :mod:`cqrskit.idempotency`).

The handler runs with its appends held back in its :class:`~cqrskit.context.CommandContext`;
when it returns, :func:`_commit` appends them, to every stream, with the key and the
answer, in one transaction (``EventStore.append_streams``). The commit runs inside the
command bus's middleware chain, so a conflict there is retried like one in the handler
(``retry_on_conflict``), handler included.

The key is not looked up before the handler runs: a first request (nearly every one)
would pay a read for nothing. A repeat runs the handler, whose effects are never stored:
its commit fails on the key (the key's row is the primary key), or the handler fails
(the first request changed what it checks: a version, an existence). Either way the key
is then looked up and its answer given instead. Only a stored key makes a repeat: a
failure with no stored key is the request's own, and is raised.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from .bus import CommandBus, CommandResult
from .context import CommandContext
from .errors import IdempotencyKeyReused, StoreClosed, UniqueViolation
from .eventstore import AppendResult, EventStore
from .idempotency import (
    IdempotencyKey,
    KeyTaken,
    StoredAnswer,
    find_answer,
    is_key_taken,
    purge_expired,
    store_answer,
)
from .messages import Command
from .sql import SqlTx

__all__ = ["PURGE_BATCH", "PURGE_INTERVAL", "dispatch_once", "purge_forever", "purge_keys"]

T = TypeVar("T")

log = logging.getLogger("cqrskit.idempotency")


async def dispatch_once(
    bus: CommandBus,
    store: EventStore,
    command: Command[T],
    key: IdempotencyKey,
    *,
    ttl: float,
    correlation_id: str | None = None,
    extra: dict[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> CommandResult[T]:
    """Run ``command`` unless its key has an answer; then answer from it (``replayed``)."""
    ctx = CommandContext(correlation_id=correlation_id, extra=dict(extra or {}), held=[])

    async def commit(value: Any) -> None:
        await _commit(store, key, ttl, clock, ctx, value)

    ctx.commit = commit
    try:
        return await bus.dispatch(command, context=ctx)
    except KeyTaken:
        # The key is stored (a repeat, or the same key committed first by another
        # request at the same time): its answer is this one's.
        stored = await _stored(store, key, clock())
        if stored is None:  # it expired in between: vanishingly rare, and safe to refuse
            raise IdempotencyKeyReused(key.key) from None
        return _replay(command, stored)
    except Exception:
        stored = await _stored(store, key, clock())  # raises IdempotencyKeyReused
        if stored is None:
            raise  # the request's own failure: nothing stored, the key stays free
        return _replay(command, stored)


async def _stored(store: EventStore, key: IdempotencyKey, now: float) -> StoredAnswer | None:
    stored = await store.query(lambda tx: find_answer(tx, key, now))
    if stored is not None and stored.fingerprint != key.fingerprint:
        raise IdempotencyKeyReused(key.key)
    return stored


async def _commit(
    store: EventStore,
    key: IdempotencyKey,
    ttl: float,
    clock: Callable[[], float],
    ctx: CommandContext,
    value: Any,
) -> None:
    """The held appends, the key and the answer, in one transaction."""
    answer = msgspec.json.encode(value).decode()
    held, ctx.held = ctx.held or [], []  # a retry of the handler holds its own
    now = clock()

    def within(tx: SqlTx, results: list[AppendResult]) -> None:
        position = max([ctx.position, *(r.position for r in results)])
        store_answer(tx, key, answer, position, now, ttl)

    try:
        results = await store.append_streams(held, ctx.metadata(), within=within)
    except UniqueViolation as exc:
        if is_key_taken(exc):
            raise KeyTaken(key.key) from None
        raise
    for result in results:
        ctx.saw(result.position)


def _replay(command: Command[T], stored: StoredAnswer) -> CommandResult[T]:
    value: T = msgspec.json.decode(stored.answer, type=_result_type(type(command)))
    return CommandResult(value, stored.position, replayed=True)


def _result_type(command_type: type) -> Any:
    """``R`` of a ``Command[R]`` subclass, to decode a stored answer into (Any when the
    class does not say)."""
    for klass in command_type.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(base) is Command:
                (result,) = typing.get_args(base)
                return Any if isinstance(result, TypeVar) else result
    return Any


PURGE_INTERVAL = 300.0
"""Seconds between two purges of expired keys by an open app."""
PURGE_BATCH = 500
"""Keys deleted per transaction: a purge never holds the log's writer for long."""


async def purge_keys(
    store: EventStore, *, limit: int = PURGE_BATCH, clock: Callable[[], float] = time.time
) -> int:
    """Delete expired keys, ``limit`` per transaction, until none is left; how many."""
    total = 0
    while True:
        deleted: list[int] = []
        purge = functools.partial(_purge, deleted=deleted, now=clock(), limit=limit)
        await store.append_streams([], within=purge)
        total += deleted[0]
        if deleted[0] < limit:
            return total


def _purge(
    tx: SqlTx, results: list[AppendResult], *, deleted: list[int], now: float, limit: int
) -> None:
    deleted.append(purge_expired(tx, now, limit))


async def purge_forever(store: EventStore, interval: float = PURGE_INTERVAL) -> None:
    """:func:`purge_keys` every ``interval`` seconds, until cancelled (an app's close)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await purge_keys(store)
        except StoreClosed:
            return
        except Exception:  # the database is down: the next round tries again
            log.warning("could not purge expired idempotency keys", exc_info=True)
