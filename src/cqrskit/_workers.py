"""Threads that run blocking database calls for asyncio, fed by a plain queue.

The event loop never waits on a database: every blocking call runs on one of these
threads. ``await workers.run(fn, *args)`` puts the call on a ``queue.SimpleQueue``; an
idle thread takes it, runs it and hands the outcome back to the loop. That hop costs
about a third of ``loop.run_in_executor`` (which chains a ``concurrent.futures.Future``
to an asyncio one, with locks and callbacks on both sides), and a command makes one or
two of them.

Outcomes go back through one outbox per loop: a thread adds its outcome and wakes the
loop (``call_soon_threadsafe``: a write to the loop's socket, a system call) only when no
wake-up is on its way already; the loop then settles every outcome waiting. Under load,
when calls end faster than the loop comes round, several share one wake-up.
"""

from __future__ import annotations

import asyncio
import collections
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


class _Outbox:
    """Outcomes on their way to one loop (see the module docstring).

    Why no outcome is left behind: a thread appends its outcome *before* it reads
    ``woken``; the loop clears ``woken`` *before* it empties the deque. An outcome appended
    after the loop's last look therefore finds ``woken`` cleared and wakes the loop again
    (two threads may both wake it: a wake-up too many, harmless). The GIL makes each
    deque operation and attribute access atomic.
    """

    __slots__ = ("loop", "outcomes", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.outcomes: collections.deque[tuple[asyncio.Future[Any], Any, bool]] = (
            collections.deque()
        )
        self.woken = False

    def put(self, future: asyncio.Future[Any], outcome: Any, failed: bool) -> None:
        """On a worker thread. RuntimeError: the loop is closed."""
        self.outcomes.append((future, outcome, failed))
        if not self.woken:
            self.woken = True
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        self.woken = False
        outcomes = self.outcomes
        while outcomes:
            _settle(*outcomes.popleft())


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
        self._waiting = 0
        """Calls queued while every thread was busy, that no thread has counted on yet:
        a thread that finishes a call takes one of them instead of becoming idle."""
        self._outbox: _Outbox | None = None
        """The outbox of the loop that submitted last (a pool serves one loop, as a rule)."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread; its result, or the exception it raised."""
        future, _ = self.submit(fn, *args)
        return await future

    def submit(self, fn: Callable[..., T], *args: Any) -> tuple[asyncio.Future[T], bool]:
        """Queue ``fn(*args)`` (from a running loop): the future of its outcome, and
        whether it waits for a thread (every thread was busy with a call)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        outbox = self._outbox
        if outbox is None or outbox.loop is not loop:
            # Calls queued for an earlier loop keep their outbox.
            outbox = self._outbox = _Outbox(loop)
        with self._lock:  # no call slips in behind the shutdown's stop markers
            if self._closed:
                raise self._closed_error()
            waits = False
            if self._idle:
                self._idle -= 1  # a free thread takes this call
            elif len(self._threads) < self._size:  # every started thread is busy
                thread = threading.Thread(
                    target=self._main, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            else:
                self._waiting += 1  # the next thread to finish a call takes one
                waits = True
            self._queue.put((outbox, future, fn, args))
        return future, waits

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            outbox, future, fn, args = item
            try:
                outcome, failed = fn(*args), False
            except Exception as exc:
                translate = self._translate
                outcome, failed = (exc if translate is None else translate(exc)), True
            # Free before the caller hears back, so that the call it makes next (a
            # sequential caller's) finds this thread instead of starting another.
            with self._lock:
                if self._waiting:
                    # It takes a call queued while every thread was busy: not idle (counted
                    # idle, a later call would count on it, and skip its deadline's timer).
                    self._waiting -= 1
                else:
                    self._idle += 1
            # RuntimeError: the caller's loop is closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                outbox.put(future, outcome, failed)
            # Waiting for the next call must not keep this one's result alive (a batch of
            # events): every idle thread would hold its last one.
            del item, outbox, future, fn, args, outcome

    def shutdown(self) -> None:
        """Blocking: finish the queued calls, stop the threads, refuse what comes later."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(_STOP)
        for thread in threads:
            thread.join()
