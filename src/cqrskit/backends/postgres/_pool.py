"""The pool of PostgreSQL connections driven from asyncio, and its fail-fast deadline.

A full pool fails fast: a call that gets no connection within the pool's ``timeout``
(:data:`DEFAULT_POOL_TIMEOUT`), counted from when it was submitted, raises
:class:`~cqrskit.errors.OperationalError` ("no free connection in NAME's pool ..."). Its
wait has two stages: queued for one of the pool's threads (as many as connections: each
busy thread holds, or waits for, one), where a timer on the event loop abandons it, and
then psycopg's ``getconn``, given what is left of the timeout. A call abandoned while
queued never runs, so a refused write is known not to be stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from ..._workers import Workers
from ...errors import ConfigurationError, OperationalError, StoreClosed
from .connection import PgTx, translate_errors, write_transaction

__all__ = ["DEFAULT_POOL_TIMEOUT", "PgPool"]

T = TypeVar("T")

DEFAULT_POOL_TIMEOUT = 1.0
"""Seconds a call may wait for a pooled connection. One is normally free within
milliseconds (statements are short), so a second's wait means the pool is exhausted or
the server has no connection to spare: failing then lets an HTTP service answer 503 with
``Retry-After`` well inside a request deadline of several seconds, instead of holding
every request for the whole deadline. Projection runners retry with backoff."""


# -- a pool of connections used from asyncio ------------------------------------------------


class PgPool:
    """A psycopg connection pool driven from asyncio through a thread pool of the same size.

    Opens lazily (on the first call, in a worker thread) and runs ``on_open(conn)`` once,
    e.g. migrations. Connections are in autocommit mode; transactions are explicit
    (``conn.transaction()``), so a connection never goes back to the pool mid-transaction.

    At most ``max_size`` connections at once (``on_open``'s own is closed before the pool
    opens its first), named ``name`` in ``pg_stat_activity`` unless the URL names them. A
    call that gets none within ``timeout`` seconds fails: see the module docstring.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 16,
        name: str = "cqrskit",
        on_open: Callable[[psycopg.Connection[Any]], None] | None = None,
        timeout: float = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        if max_size < 1:
            raise ConfigurationError(f"{name}: the pool's max_size must be at least 1")
        if min_size < 0:
            raise ConfigurationError(f"{name}: the pool's min_size must not be negative")
        if not timeout > 0:
            raise ConfigurationError(f"{name}: the pool's timeout must be positive")
        self.url = url
        self.name = name
        self.max_size = max_size
        self.timeout = timeout
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=min(min_size, max_size),
            max_size=max_size,
            # Named after the pool in pg_stat_activity, unless the URL names it.
            kwargs={"autocommit": True, "fallback_application_name": name},
            open=False,
            name=name,
            timeout=timeout,
        )
        self._workers = Workers(max_size, name, lambda: StoreClosed(f"{name} is closed"))
        self._on_open = on_open
        self._open_lock = threading.Lock()
        self._opened = False
        self._opened_at = 0.0
        self._closed = False
        self._running = threading.local()
        """Per worker thread: the :class:`_Call` it runs (its first connection's wait)."""
        self._calls_lock = threading.Lock()
        """Decides, for each call, between its thread starting it and its timeout; and
        guards ``_in_use``."""
        self._in_use = 0
        """Connections taken out of the pool and not yet given back."""

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def opened(self) -> bool:
        """True once the pool is open (its first call, or ``ensure_open``, succeeded)."""
        return self._opened and not self._closed

    def ensure_open(self) -> None:
        """Open the pool (running ``on_open`` first) unless done; blocking."""
        if self._opened:
            return
        with self._open_lock:
            if self._opened:
                return
            with translate_errors():
                if self._on_open is not None:
                    with psycopg.connect(
                        self.url,
                        autocommit=True,
                        connect_timeout=10,
                        fallback_application_name=self.name,
                    ) as conn:
                        self._on_open(conn)
                # Waits for min_size connections: an unreachable server fails here, fast.
                self._pool.open(wait=True, timeout=10.0)
            self._opened_at = time.monotonic()
            self._opened = True

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection for this thread. The backend's connection boundary: psycopg
        errors raised in the block (and in getting the connection) come out converted;
        no free connection within ``timeout`` is an :class:`OperationalError`."""
        self.ensure_open()
        with translate_errors():
            conn = self._getconn()
            with self._calls_lock:
                self._in_use += 1
            try:
                yield conn
            finally:
                with self._calls_lock:
                    self._in_use -= 1
                self._pool.putconn(conn)

    def _getconn(self) -> psycopg.Connection[Any]:
        now = time.monotonic()
        call: _Call | None = getattr(self._running, "call", None)
        # Only a call's first connection counts its time in the queue (and not the pool's
        # opening): a later one, after that call's own work, waits the full timeout.
        self._running.call = None
        since = now if call is None else max(call.submitted, self._opened_at)
        wait = since + self.timeout - now
        if wait <= 0:
            # Queued for a thread the whole timeout (its expiry had not run yet): every
            # thread, hence every connection, was busy all along. Shed the call even if a
            # connection has just come free: serving a backlog late is how requests come
            # to wait their whole deadline.
            raise self._no_connection()
        try:
            return self._pool.getconn(wait)
        except psycopg_pool.PoolTimeout as exc:
            raise self._no_connection() from exc

    @property
    def in_use(self) -> int:
        """Connections taken out of the pool now (by this pool's calls)."""
        return self._in_use

    def _no_connection(self) -> OperationalError:
        """The error of a call that got no connection within ``timeout``."""
        in_use = self._in_use
        message = (
            f"no free connection in {self.name}'s pool ({in_use} of {self.max_size} in use)"
            f" within {self.timeout}s"
        )
        if in_use >= self.max_size:
            return OperationalError(f"{message}: the pool is exhausted")
        # Room to grow, yet no connection: opening one failed, or is slow.
        return OperationalError(
            f"{message}: it could not open another connection (is the server down, or"
            " out of connections: max_connections?)"
        )

    def execute_if_open(self, statement: str) -> None:
        """``statement`` on a pooled connection; StoreClosed if the pool is not open."""
        if not self.opened:
            raise StoreClosed(f"{self.name} is not open")
        with self.connection() as conn:
            conn.execute(statement)

    def write_sync(self, fn: Callable[[PgTx], T], pipeline: bool = False) -> T:
        """``fn`` in one transaction (see :func:`write_transaction`)."""
        with self.connection() as conn:
            return write_transaction(conn, fn, pipeline)

    def read_sync(self, fn: Callable[[PgTx], T]) -> T:
        """``fn`` in a read-only transaction (one consistent snapshot), always rolled back."""
        with self.connection() as conn, conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return fn(PgTx(conn))

    async def run(self, fn: Callable[[], T]) -> T:
        """Run a blocking function on this pool's threads. Its first connection must be
        free within ``timeout`` of this call, time queued for a thread included: else
        :class:`OperationalError`. A call whose caller gave up (that error, or a
        cancellation) before a thread took it never runs."""
        if self._closed:
            raise StoreClosed(f"{self.name} is closed")
        call = _Call(time.monotonic())
        future: asyncio.Future[T]
        future, waits = self._workers.submit(self._start, fn, call)
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel at the deadline
            return await future
        cancelling = task.cancelling()
        if waits:
            # Queued behind busy threads: abandoned at the deadline. A call a free thread
            # took has its wait for a connection bounded there; a timer per call cost a
            # command more than its pool checkout.
            loop = asyncio.get_running_loop()
            call.expiry = loop.call_later(self.timeout, self._expire, call, task)
        try:
            return await future
        except asyncio.CancelledError:
            with self._calls_lock:
                if not call.started:
                    call.abandoned = True  # cancelled while queued: never run it
            if call.expired and task.uncancel() <= cancelling:
                raise self._no_connection() from None
            raise
        finally:
            if call.expiry is not None:
                call.expiry.cancel()

    def _expire(self, call: _Call, task: asyncio.Task[Any]) -> None:
        """On the loop, ``timeout`` after ``call`` was submitted: still queued (every
        thread busy: every connection taken, or awaited), it is abandoned and its caller
        fails now, even if the threads are stuck."""
        # A call's time starts when the pool has opened (migrations, the first
        # connections: that has its own timeout): until then, look again later.
        later = self.timeout
        if self._opened or self._closed:
            later = max(call.submitted, self._opened_at) + self.timeout - time.monotonic()
        if later > 0.001:
            call.expiry = asyncio.get_running_loop().call_later(later, self._expire, call, task)
            return
        with self._calls_lock:
            if call.started:
                return  # it has a thread: its wait for a connection is bounded there
            call.abandoned = True
        call.expired = True
        task.cancel()

    def _start(self, fn: Callable[[], T], call: _Call) -> T:
        """On a worker thread: run ``fn`` unless its caller gave up on it meanwhile."""
        with self._calls_lock:
            if call.abandoned:
                raise OperationalError("abandoned: no thread was free in time")  # unseen
            call.started = True
        self._running.call = call
        try:
            return fn()
        finally:
            self._running.call = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._workers.shutdown()
        self._pool.close()


class _Call:
    """A call submitted to :meth:`PgPool.run`: when, and whether a thread started it or
    its caller abandoned it (at most one of the two, decided under ``_calls_lock``)."""

    __slots__ = ("abandoned", "expired", "expiry", "started", "submitted")

    def __init__(self, submitted: float) -> None:
        self.submitted = submitted
        self.started = False
        self.abandoned = False
        self.expired = False
        """Abandoned by its timeout (not by a cancellation from elsewhere)."""
        self.expiry: asyncio.TimerHandle | None = None
