"""The event store on PostgreSQL: concurrent writers, gap-free readers, no table lock.

**Concurrency.** Each append is one short transaction on a pooled connection, run in a
worker thread (:mod:`.connection` says why sync psycopg in threads); without inline
projections it is ONE statement in autocommit (version check, allocation and insert: one
round trip, see :mod:`._append`). Appends do not wait for each other: PostgreSQL's group
commit batches the WAL flushes of concurrent commits. Appends to one stream are checked
with the ``UNIQUE (stream_id, stream_version)`` constraint: the loser of a race waits for
the winner's commit, then fails and is reported as
:class:`~cqrskit.errors.ConcurrencyError` (or retried, for ``expected_version=ANY``).

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
highest position committed), from its own connection, while another process listens
(:mod:`._notify`). Subscribers in this process are woken directly at commit; other
processes LISTEN on a dedicated connection, with a poll fallback (``poll_interval``) for
hints lost to a crash between commit and notify. Reads
stay the truth: a wake that names a commit the waiter had not seen yet ends the wait
without a look (the waiter's next read is that look); any other wake is checked.

Why this module is long: this docstring is 75 of its lines, the proof that constrains the
reads, the appends and the waiting below it, and it belongs beside them; the SQL already
lives in :mod:`._statements` (appends, run by :mod:`._append`), :mod:`.keys` (personal
data) and migration 0004 (the log read), the events kept for live readers in
:mod:`._tail`, and the waiting's threads in :mod:`._notify`. The class left is one method
per port operation, each a few lines.

**Connections.** At most ``pool_max + 2``: the pool's, the notifier's (from the first
append), the listener's (from the first wait). A full pool: see :mod:`.connection`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import psycopg

from ..._sealing import ReadKeys
from ..._waiters import Waiters
from ...codec import Codec
from ...errors import (
    StoreClosed,
    UniqueViolation,
)
from ...eventstore import (
    ANY,
    AppendResult,
    EventStore,
    ExpectedVersion,
    InlineHandler,
    Snapshot,
    StreamAppend,
    Within,
)
from ...messages import Event, Metadata, RecordedEvent
from ...personal import KeyConflict
from ...projection import Projection
from ...sql import SqlTx
from . import keys as _keys
from ._append import Appender
from ._notify import Listener, Notifier
from ._pool import DEFAULT_POOL_TIMEOUT, PgPool
from ._tail import Tail
from .connection import PgTx, fetch_all
from .migrate import LOCK_KEY, apply_on

__all__ = ["PostgresEventStore"]

T = TypeVar("T")

_RECHECK = 0.002
"""After a wake whose event was not visible yet: first pause before looking again."""

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
    f"SELECT {_COLUMNS}, (SELECT count FROM cqrskit_keys_destroyed) FROM cqrskit_events"
    " WHERE stream_id = %s AND stream_version > %s ORDER BY stream_version"
)
"""A stream's events, each row with the count of keys ever destroyed, read in the same
snapshot (one statement): the keys of its sealed events then come from :class:`ReadKeys`
without another query while that count stays (a command loads its aggregate, then
appends). The count is an InitPlan: evaluated once per statement, not per row."""


class PostgresEventStore(EventStore):
    """:class:`~cqrskit.EventStore` on PostgreSQL (see the module docstring).

    Migrations are applied when the store opens (lazily at first use, or by
    :meth:`open`/:meth:`ready`). ``inline`` projections run inside each append's
    transaction on this database (their tables are created at open); if one raises, that
    append fails whole and nothing of it is stored.

    ``pool_max`` bounds the pool (and its threads): :attr:`max_connections` is one more
    for the notifier, one for the listener; ``pool_timeout``: see :mod:`.connection`.
    """

    def __init__(
        self,
        url: str,
        codec: Codec,
        *,
        inline: Sequence[Projection] = (),
        pool_min: int = 2,
        pool_max: int = 16,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
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
            url,
            min_size=pool_min,
            max_size=pool_max,
            name="cqrskit-events",
            on_open=self._setup,
            timeout=pool_timeout,
        )
        self._appender = Appender(
            self._pool, self._inline_handlers, all(p.pipelined for p in self._inline)
        )
        self._closed = False
        self._lock = threading.Lock()
        self._waiters = Waiters()
        self._tail = Tail()
        self._known = 0
        """The highest position known to be committed: by an append of this process, or
        named by a notification. It may not be readable yet (see the module docstring)."""
        self._notifier = Notifier(url)
        self._listener: Listener | None = None
        self._key_store: _keys.PostgresKeyStore | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        codec: Codec,
        *,
        inline: Sequence[Projection] = (),
        pool_min: int = 2,
        pool_max: int = 16,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        poll_interval: float = 0.5,
    ) -> PostgresEventStore:
        """Construct and wait until migrations and inline schemas are in place."""
        store = cls(
            url,
            codec,
            inline=inline,
            pool_min=pool_min,
            pool_max=pool_max,
            pool_timeout=pool_timeout,
            poll_interval=poll_interval,
        )
        try:
            await store.ready()
        except BaseException:
            await store.close()
            raise
        return store

    @property
    def max_connections(self) -> int:
        """The most connections this store opens to the server at once."""
        return self._pool.max_size + 2  # the notifier's and the listener's

    async def ready(self) -> None:
        """Connect, apply migrations and create the inline projections' tables."""
        await self._run(self._pool.ensure_open)

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        apply_on(conn)
        # Keys this store makes or reads are kept for its reads from now on (``ReadKeys``).
        self._read_keys = ReadKeys(_keys.destroyed(conn))
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
        prepared = await self._prepare_sealed(events, metadata)
        if prepared is None:  # it writes key rows: in append_streams' transaction
            appended = [StreamAppend(stream_id, events, expected_version)]
            return (await self.append_streams(appended, metadata))[0]
        encoded, meta = prepared
        events = tuple(events)
        result, records = await self._run(
            lambda: self._appender.append(stream_id, expected_version, encoded, meta, events)
        )
        self._appended(records, result.position)
        return result

    async def _append_encoded(
        self,
        parts: list[tuple[StreamAppend, list[tuple[str, int, bytes]]]],
        meta: bytes,
        within: Within | None,
    ) -> list[AppendResult]:
        try:
            results, records = await self._run(
                lambda: self._appender.append_streams(parts, meta, within)
            )
        except UniqueViolation as exc:
            if exc.constraint == _keys.KEY_CONSTRAINT:  # a first key made meanwhile
                raise KeyConflict() from exc
            raise
        if results:
            self._appended(records, max(r.position for r in results))
        return results

    def _appended(self, records: list[RecordedEvent], last: int) -> None:
        """After an append's commit, up to ``last``: keep its events for live readers,
        wake this process's waiters, and have other processes notified."""
        self._tail.add(records)
        self._committed(last)
        self._notifier.poke(last)

    # -- keys (module keys: the SQL) ------------------------------------------------------------

    @property
    def keys(self) -> _keys.PostgresKeyStore:
        """The :class:`~cqrskit.KeyStore` in this database, on this store's pool."""
        if self._key_store is None:
            self._key_store = _keys.PostgresKeyStore(self.url, pool=self._pool)
        return self._key_store

    async def _lookup_keys(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        return await self._run(lambda: self._lookup_keys_sync(subjects))

    def _lookup_keys_sync(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        with self._pool.connection() as conn:
            return _keys.lookup_keys(PgTx(conn), subjects)

    def _key_writes(self, created: dict[str, bytes], forgotten: Collection[str]) -> Within:
        return _keys.KeyWrites(created, forgotten)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        def save() -> None:
            with self._pool.connection() as conn:
                conn.execute(
                    "INSERT INTO cqrskit_snapshots (stream_id, version, state)"
                    " VALUES (%s, %s, %s) ON CONFLICT (stream_id) DO UPDATE"
                    " SET version = excluded.version, state = excluded.state"
                    " WHERE excluded.version >= cqrskit_snapshots.version",
                    (snapshot.stream_id, snapshot.version, snapshot.state),
                )

        await self._run(save)

    # -- reads ----------------------------------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()  # not fetch_all: see there

    def _fetch_log(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A log read: ``sql`` gets the horizon as its first parameter."""
        with self._pool.connection() as conn:
            ((horizon,),) = fetch_all(conn, _HORIZON)
            # A new statement: its snapshot is taken after the horizon was computed.
            return fetch_all(conn, sql, (horizon, *params))

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._fetch(sql, params)
        return rows[0][0] if rows else None

    async def read_all(
        self, from_position: int = 0, limit: int = 1000, *, sealed: bool = False
    ) -> list[RecordedEvent]:
        self._check_open()
        kept = self._tail.read(from_position, limit, self._known)  # a live reader: see ._tail
        if kept is not None:
            return kept
        # The envelopes are built on the pool's thread, not on the event loop.
        return await self._run(lambda: self._read_all_sync(from_position, limit, sealed))

    def _read_all_sync(self, from_position: int, limit: int, sealed: bool) -> list[RecordedEvent]:
        records = [RecordedEvent(*row) for row in self._fetch(_READ_ALL, (from_position, limit))]
        return records if sealed else self._opened(records, self._lookup_keys_sync)

    async def read_stream(self, stream_id: str, from_version: int = 0) -> list[RecordedEvent]:
        return await self._run(lambda: self._read_stream_sync(stream_id, from_version))

    def _read_stream_sync(self, stream_id: str, from_version: int) -> list[RecordedEvent]:
        rows = self._fetch(_READ_STREAM, (stream_id, from_version))
        return self._stream_opened(rows, self._lookup_keys_sync)

    async def head_position(self) -> int:
        rows = await self._run(lambda: self._fetch_log(_HEAD, ()))
        head = rows[0][0] if rows else None
        return 0 if head is None else int(head)

    async def stream_version(self, stream_id: str) -> int:
        return await self._run(lambda: self._appender.stream_version(stream_id))

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
            waiter = self._waiters.add()
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
                self._waiters.discard(waiter)

    def _committed(self, position: int | None) -> None:
        """A commit up to ``position`` (None: unknown) happened: wake the waiters."""
        if position is not None and position > self._known:
            self._known = position  # a single store under the GIL: no lost update matters
        self._waiters.wake()

    def _on_notification(self, payload: str, pid: int) -> None:
        if pid == self._notifier.backend_pid:
            return  # our own commits: their waiters were woken at commit, in-process
        try:
            position: int | None = int(payload)
        except ValueError:
            position = None  # a hint without a position (or from an older version)
        self._committed(position)

    def _start_listener(self) -> None:
        with self._lock:
            if self._listener is None:
                self._listener = Listener(self.url, self._on_notification)

    # -- closing --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the event store is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._waiters.wake()
        listener = self._listener
        await asyncio.get_running_loop().run_in_executor(None, self._stop_threads, listener)
        await self._pool.close()

    def _stop_threads(self, listener: Listener | None) -> None:
        self._notifier.stop()
        if listener is not None:  # woken through the pool: no connection beyond the budget
            listener.stop(self._pool.execute_if_open)
