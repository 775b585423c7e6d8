"""Appends to the PostgreSQL log: version check, position allocation and insert in one
statement (the allocation is rule 1 of the proof in :mod:`.store`; the SQL is in
:mod:`._statements`).

Without inline projections an append is ONE autocommit statement: one round trip. With
them, the statement and the handlers share one transaction, and a handler that raises
fails the append whole. Appends to one stream race on the ``UNIQUE (stream_id,
stream_version)`` constraint: the loser waits for the winner's commit, then fails and is
reported as :class:`~cqrskit.errors.ConcurrencyError` (or retried, for ``ANY``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from ...errors import ConcurrencyError, IntegrityError, UniqueViolation
from ...eventstore import (
    ANY,
    NO_STREAM,
    AppendResult,
    ExpectedVersion,
    InlineHandler,
    StreamAppend,
    Within,
    check_expected,
)
from ...messages import Event, RecordedEvent, new_id
from ._pool import PgPool
from ._statements import INSERT_ROWS, ROW_ARRAYS, VERSION, VERSIONS, append_statement
from .connection import PgTx, fetch_all, pipelined, roll_back
from .keys import KeyWrites

__all__ = ["Appender", "appended_records"]

_STREAM_KEY = "cqrskit_events_stream_version_key"
_ANY_RETRIES = 50


class Appender:
    """Runs appends on the pool's connections (blocking: call it on a pool thread)."""

    def __init__(
        self, pool: PgPool, inline: tuple[InlineHandler, ...], inline_pipelined: bool = False
    ) -> None:
        self._pool = pool
        self._inline_handlers = inline
        self._pipeline = inline_pipelined or not inline
        """Whether ``append_streams`` may pipeline: the inline projections (if any) all
        declare ``pipelined`` (they never look at a statement's row count)."""

    def stream_version(self, stream_id: str) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(VERSION, (stream_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def append(
        self,
        stream_id: str,
        expected: ExpectedVersion,
        encoded: list[tuple[str, int, bytes]],
        meta: bytes,
        events: Sequence[Event],
        keys: Mapping[str, bytes] | None = None,
    ) -> tuple[AppendResult, list[RecordedEvent]]:
        """The append's result and its events as stored (committed when this returns);
        ``keys``: first keys of data subjects, inserted by the same statement."""
        wanted = _wanted(expected)
        ids = [new_id() for _ in encoded]
        for attempt in range(_ANY_RETRIES + 1):
            try:
                records = self._try_append(stream_id, wanted, ids, encoded, meta, events, keys)
            except UniqueViolation as exc:
                if exc.constraint != _STREAM_KEY:
                    raise
                # A concurrent append took the version we computed and committed first.
                if expected is ANY and attempt < _ANY_RETRIES:
                    continue
                records = []
            if records:
                last = records[-1]
                return AppendResult(last.position, last.stream_version), records
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
        ids: list[str],
        encoded: list[tuple[str, int, bytes]],
        meta: bytes,
        events: Sequence[Event],
        keys: Mapping[str, bytes] | None,
    ) -> list[RecordedEvent]:
        """The appended events in version order; none when the stream is not at
        ``wanted``."""
        statement, params = append_statement(stream_id, wanted, ids, encoded, meta, keys)
        with self._pool.connection() as conn:
            try:
                if not self._inline_handlers:
                    # Autocommit: the statement is the transaction (one round trip).
                    rows = sorted(fetch_all(conn, statement, params), key=_by_version)
                    return appended_records(stream_id, ids, encoded, meta, rows) if rows else []
                with conn.transaction():
                    rows = sorted(conn.execute(statement, params).fetchall(), key=_by_version)
                    if not rows:
                        return []
                    records = appended_records(stream_id, ids, encoded, meta, rows)
                    self._run_inline(conn, records, events)
                    return records
            except (psycopg.errors.IntegrityError, IntegrityError):
                # A conflict (the stream's version taken, an inline handler's constraint)
                # comes after the allocation returned, its lock released: no round trip.
                raise
            except BaseException:
                _release_allocation_lock(conn)
                raise

    def _run_inline(
        self, conn: psycopg.Connection[Any], records: list[RecordedEvent], events: Sequence[Event]
    ) -> None:
        tx = PgTx(conn)
        for handler in self._inline_handlers:
            handler(tx, records, events)

    # -- several streams in one transaction ------------------------------------------------------

    def append_streams(
        self, parts: list[tuple[StreamAppend, list[tuple[str, int, bytes]]]], meta: bytes,
        within: Within | None,
    ) -> tuple[list[AppendResult], list[RecordedEvent]]:  # fmt: skip
        """See :meth:`~cqrskit.EventStore.append_streams`; retried like :meth:`append` when
        only streams appended with ``ANY`` lost a race. With the events as stored.

        One stream whose only other rows are first keys of data subjects (``within`` a
        :class:`.keys.KeyWrites` that forgets nobody) is one statement, as :meth:`append`:
        the key rows ride in it (``_statements._KEY_ONE``)."""
        if isinstance(within, KeyWrites) and not within.forgotten and len(parts) == 1:
            ((append, encoded),) = parts
            result, records = self.append(
                append.stream_id, append.expected_version, encoded, meta, append.events,
                within.created,
            )  # fmt: skip
            return [result], records
        for attempt in range(_ANY_RETRIES + 1):
            try:
                return self._try_append_streams(parts, meta, within)
            except UniqueViolation as exc:
                if exc.constraint != _STREAM_KEY:
                    raise
            # A concurrent append took a version this one computed, and committed first.
            for append, _ in parts:
                if append.expected_version is not ANY:
                    actual = self.stream_version(append.stream_id)
                    check_expected(append.stream_id, append.expected_version, actual)
            if attempt == _ANY_RETRIES:
                raise ConcurrencyError(parts[0][0].stream_id, ANY, -1)
        raise AssertionError("unreachable")  # pragma: no cover

    def _try_append_streams(
        self, parts: list[tuple[StreamAppend, list[tuple[str, int, bytes]]]], meta: bytes,
        within: Within | None,
    ) -> tuple[list[AppendResult], list[RecordedEvent]]:  # fmt: skip
        with self._pool.connection() as conn:
            try:
                records: list[RecordedEvent] = []
                try:
                    # Pipelined: BEGIN travels with the first statement, and what
                    # ``within`` writes (it needs no answer: an idempotency key) with the
                    # COMMIT. One stream, the common case, is then two round trips: BEGIN
                    # and the append statement (its rows are needed), then within's
                    # statements and COMMIT. BEGIN and COMMIT are plain statements:
                    # psycopg's ``transaction()`` syncs the pipeline once more (three round
                    # trips: one client's append with a key row in ``within`` went from 917
                    # to 1,152 a second, 580 to 492 us of client CPU each, measured).
                    with pipelined(conn, self._pipeline):
                        conn.execute("BEGIN")
                        if len(parts) == 1:
                            results = [self._insert_one(conn, *parts[0], meta, records)]
                        elif parts:
                            results = self._insert_streams(conn, parts, meta, records)
                        else:
                            results = []
                        if within is not None:
                            within(PgTx(conn), results)
                        conn.execute("COMMIT")
                except BaseException:
                    roll_back(conn)
                    raise
                return results, records
            except (psycopg.errors.IntegrityError, IntegrityError, ConcurrencyError):
                raise  # after the allocation returned (its lock released), or before it
            except BaseException:
                _release_allocation_lock(conn)
                raise

    def _insert_one(
        self,
        conn: psycopg.Connection[Any],
        append: StreamAppend,
        encoded: list[tuple[str, int, bytes]],
        meta: bytes,
        records: list[RecordedEvent],
    ) -> AppendResult:
        """One stream's append with the single APPEND statement (version check, allocation
        and insert), inside the caller's transaction; its events go to ``records``."""
        expected = append.expected_version
        ids = [new_id() for _ in encoded]
        statement, params = append_statement(
            append.stream_id, _wanted(expected), ids, encoded, meta
        )
        rows = sorted(conn.execute(statement, params).fetchall(), key=_by_version)
        if not rows:  # the stream is not at the wanted version (or got there just after)
            found = conn.execute(VERSION, (append.stream_id,)).fetchone()
            actual = 0 if found is None else int(found[0])
            raise ConcurrencyError(append.stream_id, expected, actual)
        appended = appended_records(append.stream_id, ids, encoded, meta, rows)
        if self._inline_handlers:
            self._run_inline(conn, appended, append.events)
        records += appended
        last = appended[-1]
        return AppendResult(last.position, last.stream_version)

    def _insert_streams(
        self,
        conn: psycopg.Connection[Any],
        parts: list[tuple[StreamAppend, list[tuple[str, int, bytes]]]],
        meta: bytes,
        records: list[RecordedEvent],
    ) -> list[AppendResult]:
        # The versions are read first (reads give the transaction no id), checked, and only
        # then are positions allocated: as the allocation must, it is the transaction's
        # first write (rule 1 of the proof in .store). A stream appended to meanwhile makes
        # the INSERT collide on its version: a ConcurrencyError, the whole batch undone.
        streams = sorted({append.stream_id for append, _ in parts})
        current = dict(conn.execute(VERSIONS, (streams,)).fetchall())
        versions: dict[str, int] = {}
        planned: list[tuple[StreamAppend, list[str], int]] = []
        for append, encoded in parts:
            stream_id = append.stream_id
            version = versions.get(stream_id, int(current.get(stream_id, 0)))
            check_expected(stream_id, append.expected_version, version)
            planned.append((append, [new_id() for _ in encoded], version))
            versions[stream_id] = version + len(encoded)
        total = sum(len(encoded) for _, encoded in parts)
        row = conn.execute("SELECT cqrskit_allocate_positions(%s)", (total,)).fetchone()
        assert row is not None
        position = int(row[0])
        columns: dict[str, list[Any]] = {k: [] for k in ROW_ARRAYS}
        for (append, ids, version), (_, encoded) in zip(planned, parts, strict=True):
            for i, (event_id, (name, schema, payload)) in enumerate(zip(ids, encoded, strict=True)):
                columns["positions"].append(position)
                columns["streams"].append(append.stream_id)
                columns["versions"].append(version + i + 1)
                columns["ids"].append(event_id)
                columns["types"].append(name)
                columns["schemas"].append(schema)
                columns["payloads"].append(payload)
                position += 1
        rows = conn.execute(INSERT_ROWS, {**columns, "meta": meta}).fetchall()
        recorded = {int(p): float(at) for p, at in rows}
        results: list[AppendResult] = []
        offset = 0
        tx = PgTx(conn)
        for (append, ids, version), (_, encoded) in zip(planned, parts, strict=True):
            n = len(encoded)
            first = columns["positions"][offset]
            stored = [(first + i, version + i + 1, recorded[first + i]) for i in range(n)]
            appended = appended_records(append.stream_id, ids, encoded, meta, stored)
            for handler in self._inline_handlers:
                handler(tx, appended, append.events)
            records += appended
            results.append(AppendResult(first + n - 1, version + n))
            offset += n
        return results


def _wanted(expected: ExpectedVersion) -> int | None:
    """The version the append statement checks: None for ``ANY``, 0 for ``NO_STREAM``."""
    if isinstance(expected, int):
        return expected
    return 0 if expected is NO_STREAM else None


def _by_version(row: tuple[Any, ...]) -> int:
    return int(row[1])


def appended_records(
    stream_id: str, ids: list[str], encoded: list[tuple[str, int, bytes]], meta: bytes,
    rows: list[tuple[Any, ...]],
) -> list[RecordedEvent]:  # fmt: skip
    """The envelopes of one stream's appended ``rows`` (position, version, recorded_at, in
    version order), as a log read gives them: for inline handlers and for the store's
    kept events (``._tail``)."""
    return [
        RecordedEvent(int(p), stream_id, int(v), event_id, name, schema, payload, meta, at)
        for (p, v, at), event_id, (name, schema, payload) in zip(rows, ids, encoded, strict=True)
    ]


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
