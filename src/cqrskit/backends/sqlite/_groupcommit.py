"""Group commit on SQLite: one writer thread, every waiting write in one transaction.

Callers queue a :class:`Request` and await its future; the writer takes every request
waiting (up to ``MAX_GROUP``), runs them in ONE ``BEGIN IMMEDIATE`` transaction, each
inside its own SAVEPOINT so that a failing request fails alone, and commits once: one
fsync for the whole group. Under load the queue fills while the previous group is being
fsynced, so throughput grows with the number of concurrent writers instead of being
capped at one fsync per write. A group of one runs without a savepoint.

Cancelling a caller while it waits does not withdraw its request: it may still commit
(as with any database whose client disconnects after sending COMMIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import DamagedDatabase, OperationalError, SchemaError, StoreClosed
from .connection import converted

__all__ = ["MAX_GROUP", "GroupCommitWriter", "Request", "StoreStats"]

MAX_GROUP = 512
"""Requests per transaction at most: bounds a group's latency and memory."""


@dataclass(slots=True)
class StoreStats:
    """Counters for monitoring group commit (written by the writer thread only)."""

    groups: int = 0
    """Transactions committed (each is one fsync with synchronous=FULL)."""
    appends: int = 0
    """Append requests committed."""
    events: int = 0
    """Events committed."""
    failed: int = 0
    """Requests that failed (conflicts, constraint violations, failed commits)."""
    largest_group: int = 0
    """Most requests taken into one transaction."""


Outcome = Any  # a result, or the exception the caller will see


class Request(ABC):
    """A write the writer thread runs inside the group's transaction, in a SAVEPOINT."""

    __slots__ = ("future", "loop")

    appends: ClassVar[bool] = False
    """Counted in :attr:`StoreStats.appends` when it commits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()

    @abstractmethod
    def run(self, conn: sqlite3.Connection, head: int, now: float) -> tuple[Any, int]:
        """Do the write; return (result, new head position)."""


_STOP = object()
"""Queued by :meth:`GroupCommitWriter.stop`: the writer ends after the requests before it."""


def _settle(outcomes: list[tuple[asyncio.Future[Any], Outcome]]) -> None:
    """Resolve futures on their loop (the caller may have cancelled and gone)."""
    for future, outcome in outcomes:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class GroupCommitWriter:
    """The writer thread of one SQLite file (see the module docstring).

    ``open`` runs first on the writer thread and returns the write connection and the
    log's head; ``read_head`` reads the head inside each group's transaction;
    ``on_commit`` runs after each commit that stored events, before the callers hear back;
    ``convert`` turns what the driver raised into what the callers see (see
    :func:`~cqrskit.backends.sqlite.connection.converted`).
    """

    def __init__(
        self,
        label: str,
        thread_name: str,
        open: Callable[[], tuple[sqlite3.Connection, int]],
        read_head: Callable[[sqlite3.Connection], int],
        on_commit: Callable[[], None],
        convert: Callable[[Exception], Exception] = converted,
    ) -> None:
        self._label = label
        self._convert = convert
        self._open = open
        self._read_head = read_head
        self._on_commit = on_commit
        self.stats = StoreStats()
        self.head = 0
        """Last position committed by this writer (a lower bound of the log's head)."""
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._setup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._writer_main, name=thread_name, daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> None:
        self._queue.put(request)

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken (the group-commit queue depth)."""
        return self._queue.qsize()

    def wait_ready(self) -> None:
        """Block until the writer has opened the file; raise what opening raised."""
        self._ready.wait()
        if self._setup_error is not None:
            raise self.open_failed()

    async def ready(self) -> None:
        if not self._ready.is_set():
            await asyncio.to_thread(self._ready.wait)
        if self._setup_error is not None:
            raise self.open_failed()

    def stop(self) -> None:
        """Commit what is queued, refuse what comes after, close the connection (blocking)."""
        self._queue.put(_STOP)
        self._thread.join()

    def _writer_main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn, self.head = self._open()
        except BaseException as exc:
            self._setup_error = self._convert(exc) if isinstance(exc, Exception) else exc
        finally:
            self._ready.set()
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < MAX_GROUP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                cut = batch.index(_STOP)
                self._refuse(batch[cut + 1 :])
                batch = batch[:cut]
            if not batch:
                continue
            if conn is None:
                self._fail(batch, self.open_failed)
                continue
            try:
                self._run_group(conn, batch)
            except Exception as exc:  # a bug must not kill the writer and hang every append
                self._abort(conn, batch, exc)
        while True:  # anything queued by a racing append after the stop
            try:
                self._refuse([self._queue.get_nowait()])
            except queue.Empty:
                break
        if conn is not None:
            conn.close()

    def _run_group(self, conn: sqlite3.Connection, batch: list[Request]) -> None:
        self.stats.largest_group = max(self.stats.largest_group, len(batch))
        try:
            conn.execute("BEGIN IMMEDIATE")
            head = self._read_head(conn)
        except sqlite3.Error as exc:
            self._abort(conn, batch, exc)
            return
        now = time.time()
        outcomes: list[Outcome] = []
        succeeded = appends = events = 0
        # A group of one needs no SAVEPOINT (two statements fewer on the one-client path):
        # the transaction is that request's alone, so rolling it back undoes exactly it.
        savepoints = len(batch) > 1
        for request in batch:
            if savepoints:
                try:
                    conn.execute("SAVEPOINT request")
                except sqlite3.Error as exc:
                    self._abort(conn, batch, exc)
                    return
            try:
                result, new_head = request.run(conn, head, now)
                if savepoints:
                    conn.execute("RELEASE request")
            except Exception as exc:
                # Alone in its group, or SQLite rolled the whole transaction back.
                if not savepoints or not conn.in_transaction:
                    self._abort(conn, batch, exc)
                    return
                # Undo this request alone; its neighbours in the group are unaffected.
                try:
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                except sqlite3.Error as undo_exc:
                    self._abort(conn, batch, undo_exc)
                    return
                outcomes.append(self._convert(exc))
            else:
                # head advances only past requests that stay: the next request reuses a
                # failed one's positions, so the log has no gaps (lag = head - checkpoint).
                events += new_head - head
                head = new_head
                succeeded += 1
                appends += request.appends
                outcomes.append(result)
        try:
            conn.execute("COMMIT")  # the group's one fsync
        except sqlite3.Error as exc:
            self._abort(conn, batch, exc)
            return
        stats = self.stats
        stats.groups += 1
        stats.appends += appends
        stats.events += events
        stats.failed += len(batch) - succeeded
        self.head = max(self.head, head)
        if events:
            # Before the appenders hear back: a waiter that registers after its append
            # returned is not woken by that append.
            self._on_commit()
        self._resolve([(r, o) for r, o in zip(batch, outcomes, strict=True)])

    def _abort(self, conn: sqlite3.Connection, batch: list[Request], exc: Exception) -> None:
        """The group's transaction failed as a whole: roll back, fail every request."""
        if conn.in_transaction:
            # If even this fails the connection is unusable; the next BEGIN reports it.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        self._fail(batch, lambda: self._convert(exc))

    def _fail(self, batch: list[Request], error: Callable[[], BaseException]) -> None:
        self.stats.failed += len(batch)
        # One exception object per caller: raising shares tracebacks otherwise.
        self._resolve([(r, error()) for r in batch])

    def open_failed(self) -> BaseException:
        """A fresh error for one caller, saying why the store could not be opened."""
        cause = self._setup_error
        error: BaseException
        if isinstance(cause, SchemaError | OperationalError | DamagedDatabase):
            error = type(cause)(str(cause))
        else:
            error = OperationalError(f"{self._label} could not be opened: {cause!r}")
        error.__cause__ = cause
        return error

    def _refuse(self, batch: list[Any]) -> None:
        self._fail(batch, lambda: StoreClosed(f"{self._label} is closed"))

    @staticmethod
    def _resolve(outcomes: list[tuple[Request, Outcome]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]] = {}
        for request, outcome in outcomes:
            by_loop.setdefault(request.loop, []).append((request.future, outcome))
        for loop, items in by_loop.items():
            # RuntimeError: the caller's loop is closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)
