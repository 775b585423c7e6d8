"""Living with the eventual-consistency window between the write side and the read models.

**The window.** A command is durable when its append returns, at position ``P`` (the
``X-Position`` of the write response). Each projection applies the log in batches, each
batch committed with its checkpoint; a read model shows ``P`` once its projection's
checkpoint has reached ``P``. In between (typically one batch: well under 10 ms on an idle
SQLite runner, longer while a projection catches up or after it stopped in error) a read
may not show the write yet. Read-your-writes has two tools here:

* server side, :func:`wait_for_position` (and ``ProjectionRunner.wait_for``): wait until
  the projection has processed ``P`` (the ``X-Min-Position`` header), or fail with
  :class:`~cqrskit.errors.ConsistencyTimeout` (HTTP 503 with ``Retry-After``);
* client side, :func:`retry_read`: retry a read that is not there yet with exponential
  backoff and full jitter, a bounded number of times.

Reads are never stale beyond the checkpoint they report: a query handler reads the
position in the same transaction as its rows (:func:`cqrskit.checkpoints.read_position`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .backoff import backoff_delays
from .checkpoints import read_position
from .errors import ConsistencyTimeout, OperationalError, PersistenceError, PositionBeyondLog
from .eventstore import EventStore
from .readside import ReadDatabase

__all__ = ["DEFAULT_RETRY_ON", "retry_read", "wait_for_position"]

T = TypeVar("T")

DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (
    ConsistencyTimeout,
    OperationalError,
    LookupError,
)
"""What :func:`retry_read` retries by default: the read side not caught up yet (a timeout,
or a lookup that found nothing) and a database busy for a moment."""


async def retry_read(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base_delay: float = 0.05,
    max_delay: float = 2.0,
    retry_on: tuple[type[BaseException], ...] = DEFAULT_RETRY_ON,
    jitter: bool = True,
    retry_if: Callable[[T], bool] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn`` until it succeeds, at most ``attempts`` times, backing off in between.

    A call is retried when it raises one of ``retry_on`` or when ``retry_if(result)`` is
    true (e.g. ``lambda user: user is None``: not projected yet). After the last attempt
    the last exception propagates, or the last result is returned. Prefer sending the
    write's position as ``X-Min-Position`` when the server supports it: one round trip
    and no guessing; this helper is for reads that cannot carry a position.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    delays = backoff_delays(base_delay, max_delay, attempts=attempts, jitter=jitter, rng=rng)
    while True:
        try:
            result = await fn()
        except retry_on:
            delay = next(delays, None)
            if delay is None:
                raise
        else:
            if retry_if is None or not retry_if(result):
                return result
            delay = next(delays, None)
            if delay is None:
                return result
        await sleep(delay)


async def wait_for_position(
    store: EventStore,
    db: ReadDatabase,
    name: str,
    position: int,
    timeout: float,
    *,
    local: Callable[[], tuple[int, asyncio.Event] | None] | None = None,
    min_poll: float = 0.001,
    max_poll: float = 0.05,
) -> int:
    """Wait until projection ``name`` has processed ``position``; return its checkpoint.

    Polls the checkpoint table with a backoff from ``min_poll`` to ``max_poll``, so it works
    whichever process runs the projection. ``local``, when given, returns the in-process
    runner's checkpoint and an event set when it commits its next batch: then the wait
    ends as soon as the batch commits, without waiting for the next poll. Raises
    :class:`~cqrskit.errors.ConsistencyTimeout` after ``timeout`` seconds, or
    :class:`~cqrskit.errors.PositionBeyondLog` when by then the log does not even reach
    ``position`` (no write produced it: retrying cannot help).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = min_poll
    reached = 0
    while True:
        committed: asyncio.Event | None = None
        if local is not None:
            view = local()
            if view is not None:
                # The event is taken before the check: a commit right after it still wakes us.
                checkpoint, committed = view
                if await store.position_reached(checkpoint, position):
                    return checkpoint
                reached = checkpoint
        try:
            stored = await db.read(lambda tx: read_position(tx, name))
        except PersistenceError:
            stored = 0  # the checkpoint table does not exist yet
        if await store.position_reached(stored, position):
            return stored
        reached = max(reached, stored)
        remaining = deadline - loop.time()
        if remaining <= 0:
            head = await store.head_position()
            if not await store.position_reached(head, position):
                raise PositionBeyondLog(name, position, reached, timeout, head)
            raise ConsistencyTimeout(name, position, reached, timeout)
        pause = min(delay, remaining)
        if committed is None:
            await asyncio.sleep(pause)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(committed.wait(), pause)
        delay = min(delay * 2, max_poll)
