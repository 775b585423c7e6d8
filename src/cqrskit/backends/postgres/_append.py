"""Appends to the PostgreSQL log: version check, position allocation and insert in one
statement (the allocation is rule 1 of the proof in :mod:`.store`).

Without inline projections an append is ONE autocommit statement: one round trip. With
them, the statement and the handlers share one transaction, and a handler that raises
fails the append whole. Appends to one stream race on the ``UNIQUE (stream_id,
stream_version)`` constraint: the loser waits for the winner's commit, then fails and is
reported as :class:`~cqrskit.errors.ConcurrencyError` (or retried, for ``ANY``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ...errors import ConcurrencyError, IntegrityError, UniqueViolation
from ...eventstore import ANY, NO_STREAM, AppendResult, ExpectedVersion, InlineHandler
from ...messages import Event, RecordedEvent, new_id
from ._pool import PgPool
from .connection import PgTx

__all__ = ["APPEND", "Appender", "append_params"]

_STREAM_KEY = "cqrskit_events_stream_version_key"
_ANY_RETRIES = 50
_VERSION = "SELECT coalesce(max(stream_version), 0) FROM cqrskit_events WHERE stream_id = %s"

# One statement checks the expected version, allocates positions and inserts: without
# inline projections it is the whole transaction (autocommit, one round trip). ``ok`` is
# empty when the stream is not at the wanted version (NULL: any version), and then
# nothing is allocated nor inserted. The allocation runs (and releases its lock) when the
# MATERIALIZED CTE is first read, before the first row is inserted: a wait on the
# stream-version unique index happens outside the critical section.
APPEND = """
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


class Appender:
    """Runs appends on the pool's connections (blocking: call it on a pool thread)."""

    def __init__(self, pool: PgPool, inline: tuple[InlineHandler, ...]) -> None:
        self._pool = pool
        self._inline_handlers = inline

    def stream_version(self, stream_id: str) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(_VERSION, (stream_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def append(
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
            actual = self.stream_version(stream_id)
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
        params = append_params(stream_id, wanted, ids, encoded, meta)
        with self._pool.connection() as conn:
            try:
                if not self._inline_handlers:
                    # Autocommit: the statement is the transaction (one round trip).
                    return sorted(conn.execute(APPEND, params).fetchall(), key=_by_version)
                with conn.transaction():
                    rows = sorted(conn.execute(APPEND, params).fetchall(), key=_by_version)
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


def append_params(
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
