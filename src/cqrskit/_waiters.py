"""Subscribers waiting for commits, woken from any thread.

An event store's writer commits on a thread of its own (SQLite's writer, PostgreSQL's
pool and listener threads) while subscribers wait on event loops. A waiter registers a
future *before* it looks at the head, so a commit between the look and the wait still
wakes it; a wake-up is a hint that the waiter checks, never the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

__all__ = ["Waiters"]


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class Waiters:
    """A thread-safe set of futures, each on its own loop, resolved together on a commit."""

    __slots__ = ("_lock", "_waiting")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def add(self) -> asyncio.Future[None]:
        """A future of the running loop, resolved at the next :meth:`wake`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiting.append((loop, future))
        return future

    def discard(self, future: asyncio.Future[None]) -> None:
        """Forget ``future`` (its wait ended) and cancel it if unresolved."""
        with self._lock:
            self._waiting = [(lp, f) for lp, f in self._waiting if f is not future]
        future.cancel()

    def wake(self) -> None:
        """Resolve every registered future, one ``call_soon_threadsafe`` per loop."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for loop, future in waiting:
            by_loop.setdefault(loop, []).append(future)
        for loop, futures in by_loop.items():
            # RuntimeError: that loop is closed, nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, futures)
