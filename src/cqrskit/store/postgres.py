"""The event store on PostgreSQL: concurrent writers, gap-free readers, no table lock.

**Concurrency.** Each append is one short transaction on a pooled connection, run in a
worker thread (see :mod:`cqrskit.postgres` for why sync psycopg in threads); without
inline projections it is ONE statement in autocommit (version check, allocation and
insert: one round trip, see ``_APPEND``). Appends do
not wait for each other: PostgreSQL's group commit batches the WAL flushes of concurrent
commits. Appends to one stream are checked with the ``UNIQUE (stream_id, stream_version)``
constraint: the loser of a race waits for the winner's commit, then fails and is reported
as :class:`~cqrskit.errors.ConcurrencyError` (or retried, for ``expected_version=ANY``).

**The gap problem.** Positions come from a sequence, taken at INSERT time; transactions
commit in another order than they took their positions. A reader that keeps a checkpoint
and asks for ``position > checkpoint`` can see position 7 committed while 6 is still in
flight, move its checkpoint to 7, and never see 6. Locking the table for every append (as
some libraries do) fixes it by making writers commit one at a time, one fsync each.

**What we do instead, and why it is gap-free.** Two rules (migrations 0001 and 0002):

1. *Allocation* (``cqrskit_allocate_positions``): an append's transaction, which has no
   transaction id yet (the function refuses one that has), first takes the *append mark*
   (a shared transaction-level advisory lock, held until it ends), then takes its id and a
   block of consecutive positions inside one critical section: a session advisory lock
   held for microseconds and released before the statement returns, never across the
   commit. Ids and sequence values only grow, so for two appends A and B:
   ``txid(A) < txid(B)`` if and only if every position of A < every position of B.
2. *Visibility* (every log read): two queries, one after the other (the function
   ``cqrskit_read_log`` of migration 0004 runs both in one call). The first computes
   ``H = cqrskit_log_horizon()``: from its snapshot S1 and ONE read of ``pg_locks`` made
   after S1, then ``pg_xact_status`` checks made after that read, H is the smallest id
   among the transactions S1 sees as running that are still running at the check and
   are not *bystanders* (an id lock and no append mark in the lock read), or ``xmax(S1)``
   when none is left. The second query, whose snapshot S2 is taken after H was
   computed, returns only rows with ``txid < H``.

Lemma: every appender T with ``txid(T) < H`` has ended before S2 (so S2 shows all it
committed, and it will never write again). Since ``txid(T) < H <= xmax(S1)``, T had its id
at S1: it had ended by then, or it is in S1's running list below H, so the function
skipped it. Skipped means it had ended at the status check (before S2), or it was running
then -- hence at the lock read too -- without the mark; but a running appender holds its
mark from before it has an id until after it stops running. So T had ended.

Claim: the set V of rows a read can return only ever grows *at its end* in position order.
Proof: a row r not in V now that appears later comes, by the lemma, from a transaction T
with ``txid(T) >= H``; every row in V has ``txid < H``, so by rule 1 every position in V
is smaller than r's. Hence a reader that has seen everything up to its checkpoint never
misses a row above it: ``position > checkpoint`` is gap-free, and the log order is the
position order (so :meth:`EventStore.position_reached` needs no override). Positions of
appends that rolled back are holes that never fill; readers skip them by construction.

The price: an event becomes readable once every append that took its positions before it
has ended (a few milliseconds, an fsync); a long append transaction (an inline handler
that blocks) delays readers, never reorders them. Other transactions, long or not, in
this database or another, do not delay readers. Each log read reads ``pg_locks`` once.

**Notifications.** ``NOTIFY`` inside a transaction takes a server-wide lock at commit that
is held until the commit is flushed, which would make notifying appends commit one at a
time again. So appends do not notify in their transaction: after a commit, a notifier
thread sends one ``pg_notify('cqrskit_events', position)`` per burst of commits (the
highest position committed), from its own connection. Subscribers in this process are
woken directly at commit; other processes LISTEN on a dedicated connection, with a poll
fallback (``poll_interval``) for hints lost to a crash between commit and notify. Reads
stay the truth: a wake that names a commit the waiter had not seen yet ends the wait
without a look (the waiter's next read is that look); any other wake is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from ..codec import Codec
from ..errors import (
    ConcurrencyError,
    IntegrityError,
    PersistenceError,
    StoreClosed,
    UniqueViolation,
)
from ..messages import Event, Metadata, RecordedEvent, new_id
from ..migrate import LOCK_KEY, apply_on
from ..postgres import PgPool, PgTx, translate_errors
from ..projection import Projection
from ..sql import SqlTx
from .base import (
    ANY,
    NO_STREAM,
    AppendResult,
    EventStore,
    ExpectedVersion,
    InlineHandler,
    Snapshot,
)

__all__ = ["CHANNEL", "PostgresEventStore"]

T = TypeVar("T")

CHANNEL = "cqrskit_events"
"""The LISTEN/NOTIFY channel appends are announced on (a hint: reads are the truth)."""

_STREAM_KEY = "cqrskit_events_stream_version_key"
_RECHECK = 0.002
"""After a wake whose event was not visible yet: first pause before looking again."""
_ANY_RETRIES = 50

_COLUMNS = (
    "position, stream_id, stream_version, event_id::text, type, schema_version, payload,"
    " metadata, extract(epoch FROM recorded_at)::float8"
)
# Every log read is two statements on one autocommit connection: the horizon H, then the
# read restricted to ``txid < H`` (first parameter), whose snapshot is newer than H's
# computation: see the module docstring.
_HORIZON = "SELECT cqrskit_log_horizon()"
_VISIBLE = "txid < %s::xid8"
_READ_ALL = "SELECT * FROM cqrskit_read_log(%s, %s)"
"""Horizon and rows in one call (migration 0004): one round trip per batch."""
_ANY_AFTER = "SELECT count(*) FROM cqrskit_read_log(%s, 1)"
_HEAD = f"SELECT position FROM cqrskit_events WHERE {_VISIBLE} ORDER BY position DESC LIMIT 1"
_READ_STREAM = (
    f"SELECT {_COLUMNS} FROM cqrskit_events WHERE stream_id = %s AND stream_version > %s"
    " ORDER BY stream_version"
)
_VERSION = "SELECT coalesce(max(stream_version), 0) FROM cqrskit_events WHERE stream_id = %s"
# One statement checks the expected version, allocates positions and inserts: without
# inline projections it is the whole transaction (autocommit, one round trip). ``ok`` is
# empty when the stream is not at the wanted version (NULL: any version), and then
# nothing is allocated nor inserted. The allocation runs (and releases its lock) when the
# MATERIALIZED CTE is first read, before the first row is inserted: a wait on the
# stream-version unique index happens outside the critical section.
_APPEND = """
WITH cur AS MATERIALIZED (
    SELECT coalesce(max(stream_version), 0) AS v FROM cqrskit_events WHERE stream_id = %(stream)s
), ok AS MATERIALIZED (
    SELECT v FROM cur WHERE %(wanted)s::integer IS NULL OR v = %(wanted)s::integer
), alloc AS MATERIALIZED (
    SELECT ok.v, cqrskit_allocate_positions(%(n)s) AS first FROM ok
)
INSERT INTO cqrskit_events
    (position, stream_id, stream_version, event_id, type, schema_version, payload, metadata)
SELECT alloc.first + u.n - 1, %(stream)s, alloc.v + u.n, u.event_id, u.type,
       u.schema_version, u.payload, %(meta)s
FROM alloc, unnest(%(ids)s::uuid[], %(types)s::text[], %(schemas)s::int[], %(payloads)s::bytea[])
     WITH ORDINALITY AS u(event_id, type, schema_version, payload, n)
RETURNING position, stream_version, extract(epoch FROM recorded_at)::float8
"""


class PostgresEventStore(EventStore):
    """:class:`~cqrskit.store.base.EventStore` on PostgreSQL (see the module docstring).

    Migrations are applied when the store opens (lazily at first use, or by
    :meth:`open`/:meth:`ready`). ``inline`` projections run inside each append's
    transaction on this database (their tables are created at open); if one raises, that
    append fails whole and nothing of it is stored.
    """

    def __init__(
        self,
        url: str,
        codec: Codec,
        *,
        inline: Sequence[Projection] = (),
        pool_min: int = 2,
        pool_max: int = 16,
        poll_interval: float = 0.5,
    ) -> None:
        self.url = url
        self.codec = codec
        self.poll_interval = poll_interval
        self._inline = tuple(inline)
        self._inline_handlers: tuple[InlineHandler, ...] = tuple(
            p.as_inline_handler(codec) for p in self._inline
        )
        self._pool = PgPool(
            url, min_size=pool_min, max_size=pool_max, name="cqrskit-events", on_open=self._setup
        )
        self._closed = False
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._known = 0
        """The highest position known to be committed: by an append of this process, or
        named by a notification. It may not be readable yet (see the module docstring)."""
        self._notifier = _Notifier(url)
        self._listener: _Listener | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        codec: Codec,
        *,
        inline: Sequence[Projection] = (),
        pool_min: int = 2,
        pool_max: int = 16,
        poll_interval: float = 0.5,
    ) -> PostgresEventStore:
        """Construct and wait until migrations and inline schemas are in place."""
        store = cls(
            url,
            codec,
            inline=inline,
            pool_min=pool_min,
            pool_max=pool_max,
            poll_interval=poll_interval,
        )
        try:
            await store.ready()
        except BaseException:
            await store.close()
            raise
        return store

    async def ready(self) -> None:
        """Connect, apply migrations and create the inline projections' tables."""
        await self._run(self._pool.ensure_open)

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        apply_on(conn)
        if self._inline:
            with conn.transaction():
                # Same lock as migrations: concurrent starters do not race on CREATE TABLE.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                tx = PgTx(conn)
                for projection in self._inline:
                    projection.create_schema(tx)

    async def _run(self, fn: Callable[[], T]) -> T:
        self._check_open()
        return await self._pool.run(fn)

    # -- writes ---------------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        expected_version: ExpectedVersion = ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        self._check_open()
        encoded, meta = self._encode(events, metadata)
        events = tuple(events)
        result = await self._run(
            lambda: self._append_sync(stream_id, expected_version, encoded, meta, events)
        )
        self._committed(result.position)
        self._notifier.poke(result.position)
        return result

    def _append_sync(
        self,
        stream_id: str,
        expected: ExpectedVersion,
        encoded: list[tuple[str, int, bytes]],
        meta: bytes,
        events: Sequence[Event],
    ) -> AppendResult:
        wanted: int | None = None  # ANY
        if isinstance(expected, int):
            wanted = expected
        elif expected is NO_STREAM:
            wanted = 0
        for attempt in range(_ANY_RETRIES + 1):
            try:
                rows = self._try_append(stream_id, wanted, encoded, meta, events)
            except UniqueViolation as exc:
                if exc.constraint != _STREAM_KEY:
                    raise
                # A concurrent append took the version we computed and committed first.
                if expected is ANY and attempt < _ANY_RETRIES:
                    continue
                rows = []
            if rows:
                last = rows[-1]
                return AppendResult(int(last[0]), int(last[1]))
            actual = int(self._scalar(_VERSION, (stream_id,)))
            if actual != wanted or attempt == _ANY_RETRIES:
                raise ConcurrencyError(stream_id, expected, actual)
            # The stream moved to the wanted version after our statement's snapshot
            # (a concurrent append committed in between): look again.
        raise AssertionError("unreachable")  # pragma: no cover

    def _try_append(
        self,
        stream_id: str,
        wanted: int | None,
        encoded: list[tuple[str, int, bytes]],
        meta: bytes,
        events: Sequence[Event],
    ) -> list[tuple[Any, ...]]:
        """The appended rows in version order; none when the stream is not at ``wanted``."""
        ids = [new_id() for _ in encoded]
        params = _append_params(stream_id, wanted, ids, encoded, meta)
        with self._pool.connection() as conn:
            try:
                if not self._inline_handlers:
                    # Autocommit: the statement is the transaction (one round trip).
                    return sorted(conn.execute(_APPEND, params).fetchall(), key=_by_version)
                with conn.transaction():
                    rows = sorted(conn.execute(_APPEND, params).fetchall(), key=_by_version)
                    if rows:
                        self._run_inline(conn, stream_id, ids, encoded, meta, rows, events)
                    return rows
            except (psycopg.errors.IntegrityError, IntegrityError):
                # A conflict (the stream's version taken, an inline handler's constraint)
                # comes after the allocation returned, its lock released: no round trip.
                raise
            except BaseException:
                _release_allocation_lock(conn)
                raise

    def _run_inline(
        self,
        conn: psycopg.Connection[Any],
        stream_id: str,
        ids: list[str],
        encoded: list[tuple[str, int, bytes]],
        meta: bytes,
        rows: list[tuple[Any, ...]],
        events: Sequence[Event],
    ) -> None:
        records = [
            RecordedEvent(
                int(position), stream_id, int(version), event_id, name, schema, payload, meta, at
            )
            for (position, version, at), event_id, (name, schema, payload) in zip(
                rows, ids, encoded, strict=True
            )
        ]
        tx = PgTx(conn)
        for handler in self._inline_handlers:
            handler(tx, records, events)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        def save() -> None:
            with self._pool.connection() as conn:
                conn.execute(
                    "INSERT INTO cqrskit_snapshots (stream_id, version, state)"
                    " VALUES (%s, %s, %s) ON CONFLICT (stream_id) DO UPDATE"
                    " SET version = excluded.version, state = excluded.state",
                    (snapshot.stream_id, snapshot.version, snapshot.state),
                )

        await self._run(save)

    # -- reads ----------------------------------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def _fetch_log(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A log read: ``sql`` gets the horizon as its first parameter."""
        with self._pool.connection() as conn:
            row = conn.execute(_HORIZON).fetchone()
            assert row is not None
            # A new statement: its snapshot is taken after the horizon was computed.
            return conn.execute(sql, (row[0], *params)).fetchall()

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._fetch(sql, params)
        return rows[0][0] if rows else None

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        # The envelopes are built on the pool's thread, not on the event loop.
        return await self._run(lambda: self._read_all_sync(from_position, limit))

    def _read_all_sync(self, from_position: int, limit: int) -> list[RecordedEvent]:
        rows = self._fetch(_READ_ALL, (from_position, limit))
        return [RecordedEvent(*row) for row in rows]

    async def read_stream(self, stream_id: str, from_version: int = 0) -> list[RecordedEvent]:
        rows = await self._run(lambda: self._fetch(_READ_STREAM, (stream_id, from_version)))
        return [RecordedEvent(*r) for r in rows]

    async def head_position(self) -> int:
        rows = await self._run(lambda: self._fetch_log(_HEAD, ()))
        head = rows[0][0] if rows else None
        return 0 if head is None else int(head)

    async def stream_version(self, stream_id: str) -> int:
        return int(await self._run(lambda: self._scalar(_VERSION, (stream_id,))))

    async def lag_events(self, checkpoint: int, head: int) -> int:
        """A count, not a subtraction: rolled-back appends leave holes in the positions."""
        if head <= checkpoint:
            return 0
        # Every row up to a visible head is itself visible (module docstring): no filter.
        sql = "SELECT count(*) FROM cqrskit_events WHERE position > %s AND position <= %s"
        return int(await self._run(lambda: self._scalar(sql, (checkpoint, head))))

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        rows = await self._run(
            lambda: self._fetch(
                "SELECT stream_id, version, state FROM cqrskit_snapshots WHERE stream_id = %s",
                (stream_id,),
            )
        )
        return Snapshot(rows[0][0], int(rows[0][1]), bytes(rows[0][2])) if rows else None

    async def query(self, fn: Callable[[SqlTx], T]) -> T:
        return await self._run(lambda: self._pool.read_sync(fn))

    # -- waiting --------------------------------------------------------------------------------

    async def wait_for_new_events(self, after_position: int, timeout: float) -> bool:
        self._check_open()
        self._start_listener()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # When to look again without a wake: soon while a commit we know of is not readable
        # yet (an older append is still running, and its end wakes nobody).
        soon: float | None = _RECHECK if self._known > after_position else None
        while True:
            # Registered before the check: a commit between the check and the wait wakes us.
            waiter = loop.create_future()
            with self._lock:
                self._waiters.append((loop, waiter))
            try:
                known = self._known  # before the look: a later commit is news
                if (await self._run(lambda: self._fetch(_ANY_AFTER, (after_position,))))[0][0]:
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                # Woken by a commit here or a NOTIFY from elsewhere; the event may still be
                # invisible (an older transaction is running, anywhere on the server): no
                # further wake will come when that one ends, so look again soon, backing
                # off, rather than only at the next poll.
                pause = self.poll_interval if soon is None else soon
                try:
                    await asyncio.wait_for(waiter, min(remaining, pause))
                except TimeoutError:
                    soon = None if soon is None else min(soon * 2, self.poll_interval)
                else:
                    if self._known > max(known, after_position):
                        # A commit after the caller's position, since the last look: no
                        # need to look again before the caller reads (its read is the
                        # look: one round trip less).
                        return True
                    soon = _RECHECK
                self._check_open()
            finally:
                with self._lock:
                    if (loop, waiter) in self._waiters:
                        self._waiters.remove((loop, waiter))

    def _committed(self, position: int | None) -> None:
        """A commit up to ``position`` (None: unknown) happened: wake the waiters."""
        if position is not None and position > self._known:
            self._known = position  # a single store under the GIL: no lost update matters
        self._wake_waiters()

    def _on_notification(self, payload: str, pid: int) -> None:
        if pid == self._notifier.backend_pid:
            return  # our own commits: their waiters were woken at commit, in-process
        try:
            position: int | None = int(payload)
        except ValueError:
            position = None  # a hint without a position (or from an older version)
        self._committed(position)

    def _wake_waiters(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    def _start_listener(self) -> None:
        with self._lock:
            if self._listener is None:
                self._listener = _Listener(self.url, self._on_notification)

    # -- closing --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the event store is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_waiters()
        await self._pool.close()
        listener = self._listener
        await asyncio.get_running_loop().run_in_executor(None, self._stop_threads, listener)

    def _stop_threads(self, listener: _Listener | None) -> None:
        self._notifier.stop()
        if listener is not None:
            listener.stop()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _append_params(
    stream_id: str,
    wanted: int | None,
    ids: list[str],
    encoded: list[tuple[str, int, bytes]],
    meta: bytes,
) -> dict[str, Any]:
    """The parameters of ``_APPEND``."""
    return {
        "n": len(encoded),
        "stream": stream_id,
        "wanted": wanted,
        "meta": meta,
        "ids": ids,
        "types": [name for name, _, _ in encoded],
        "schemas": [version for _, version, _ in encoded],
        "payloads": [payload for _, _, payload in encoded],
    }


def _by_version(row: tuple[Any, ...]) -> int:
    return int(row[1])


def _release_allocation_lock(conn: psycopg.Connection[Any]) -> None:
    """After a failed INSERT: make sure the session does not keep the allocation lock.

    The allocation function releases it before returning; only an error (or a cancel)
    inside it could leave it held, and a pooled session holding it would stop every
    writer. Session advisory locks survive ROLLBACK, hence this explicit release.
    """
    if conn.closed:
        return  # the session is gone, and its locks with it
    try:
        conn.execute("SELECT pg_advisory_unlock_all()")
    except psycopg.Error:
        conn.close()  # cannot tell: drop the session, which releases its locks


class _Notifier:
    """Sends ``pg_notify(CHANNEL, position)`` after commits, one per burst, from its own
    connection; the payload is the highest position committed in the burst."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._latest = 0
        self.backend_pid: int | None = None
        """The server process of the notifying connection (notifications carry it)."""
        self._pending = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def poke(self, position: int) -> None:
        if position > self._latest:
            self._latest = position
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._stopping:
                    self._thread = threading.Thread(
                        target=self._main, name="cqrskit-notify", daemon=True
                    )
                    self._thread.start()
        self._pending.set()

    def _main(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            self._pending.wait()
            if self._stopping:
                break
            self._pending.clear()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._url, autocommit=True)
                    self.backend_pid = conn.info.backend_pid
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(self._latest)))
            except psycopg.Error:
                # Subscribers fall back to polling; retry the connection at the next commit.
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        with self._start_lock:
            self._stopping = True
        self._pending.set()
        if self._thread is not None:
            self._thread.join()


class _Listener:
    """LISTENs on a dedicated connection and calls ``wake`` with each notification's
    payload and sender's server pid (``("", 0)`` after a reconnection: notifications may
    have been lost meanwhile)."""

    def __init__(self, url: str, wake: Callable[[str, int], None]) -> None:
        self._url = url
        self._wake = wake
        self._stop_channel = f"cqrskit_stop_{uuid.uuid4().hex}"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="cqrskit-listen", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f"LISTEN {self._stop_channel}")
                    self._wake("", 0)  # notifications sent while we were not listening are lost
                    while not self._stopping.is_set():
                        for notification in conn.notifies(timeout=5.0):
                            if self._stopping.is_set():
                                return
                            self._wake(notification.payload, notification.pid)
            except psycopg.Error:
                self._stopping.wait(1.0)  # server away: subscribers poll meanwhile

    def stop(self) -> None:
        self._stopping.set()
        # If this fails the listener still exits, at its next notifies() timeout.
        with (
            contextlib.suppress(PersistenceError),
            translate_errors(),
            psycopg.connect(self._url, autocommit=True) as conn,
        ):
            conn.execute(f"NOTIFY {self._stop_channel}")
        self._thread.join()
