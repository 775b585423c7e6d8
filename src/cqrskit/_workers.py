"""Threads that run blocking database calls for asyncio, fed by a plain queue.

The event loop never waits on a database: every blocking call runs on one of these
threads. ``await workers.run(fn, *args)`` puts the call on a ``queue.SimpleQueue``; an
idle thread takes it, runs it and hands the outcome back with one
``call_soon_threadsafe``. That hop costs about a third of ``loop.run_in_executor`` (which
chains a ``concurrent.futures.Future`` to an asyncio one, with locks and callbacks on
both sides), and a command makes one or two of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Workers"]

T = TypeVar("T")

_STOP = object()


def _settle(future: asyncio.Future[Any], outcome: Any, failed: bool) -> None:
    if future.done():  # the caller was cancelled and has gone
        return
    if failed:
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class Workers:
    """Up to ``size`` threads named ``name-N``, started as calls need them: one at the
    first call, another only when a call finds every started thread busy. A sequential
    caller (a rebuild, one projection runner, one client) so keeps to one thread, and to
    what that thread holds: its database connection and page cache, its malloc arena.

    ``translate`` turns an exception a call raised into the one its caller sees: a
    backend converts its driver's errors here, once, at the boundary every blocking call
    of its crosses. Calls run in submission order as threads free up. ``shutdown()`` lets the calls
    already queued finish, then stops the threads; a call made after it raises
    ``closed_error()`` (a fresh exception per caller).
    """

    def __init__(
        self,
        size: int,
        name: str,
        closed_error: Callable[[], BaseException],
        translate: Callable[[Exception], Exception] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._name = name
        self._closed_error = closed_error
        self._translate = translate
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._idle = 0
        """Started threads free for a call that no ``run`` has counted on yet."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread; its result, or the exception it raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:  # no call slips in behind the shutdown's stop markers
            if self._closed:
                raise self._closed_error()
            if self._idle:
                self._idle -= 1  # a free thread takes this call
            elif len(self._threads) < self._size:  # every started thread is busy
                thread = threading.Thread(
                    target=self._main, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            self._queue.put((loop, future, fn, args))
        return await future

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            loop, future, fn, args = item
            try:
                outcome, failed = fn(*args), False
            except Exception as exc:
                translate = self._translate
                outcome, failed = (exc if translate is None else translate(exc)), True
            # Free before the caller hears back, so that the call it makes next (a
            # sequential caller's) finds this thread instead of starting another.
            with self._lock:
                self._idle += 1
            # RuntimeError: the caller's loop is closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, outcome, failed)
            # Waiting for the next call must not keep this one's result alive (a batch of
            # events): every idle thread would hold its last one.
            del item, future, fn, args, outcome

    def shutdown(self) -> None:
        """Blocking: finish the queued calls, stop the threads, refuse what comes later."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(_STOP)
        for thread in threads:
            thread.join()
