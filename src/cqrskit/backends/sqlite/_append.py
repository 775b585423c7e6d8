"""Appends to the SQLite log: the writer thread's requests (see :mod:`.store`), each run in
its own SAVEPOINT of the group's transaction, so that one that fails fails alone.

Positions are the events' rowids, given by the single writer under BEGIN IMMEDIATE: the
position order is the commit order, and a reader never sees a gap fill later.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

from ...eventstore import (
    AppendResult,
    ExpectedVersion,
    InlineHandler,
    Snapshot,
    StreamAppend,
    Within,
    check_expected,
)
from ...messages import Event, RecordedEvent
from ._groupcommit import Request
from .connection import SqliteTx

__all__ = ["COLUMNS", "STREAM_VERSION", "AppendRequest", "AppendStreamsRequest", "SaveSnapshot"]

COLUMNS = (
    "position, stream_id, stream_version, event_id, type, schema_version, payload, metadata,"
    " recorded_at"
)
INSERT_EVENT = f"INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
STREAM_VERSION = "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = ?"
"""The last entry of the (stream_id, stream_version) index: one B-tree descent."""

Encoded = list[tuple[str, str, int, bytes]]
"""Per event: id, type name, schema version, payload."""


def _insert(
    conn: sqlite3.Connection,
    stream_id: str,
    version: int,
    head: int,
    encoded: Encoded,
    meta: bytes,
    now: float,
) -> list[tuple[Any, ...]]:
    rows = [
        (head + i, stream_id, version + i, event_id, type_name, schema, payload, meta, now)
        for i, (event_id, type_name, schema, payload) in enumerate(encoded, 1)
    ]
    if len(rows) == 1:
        conn.execute(INSERT_EVENT, rows[0])
    else:
        conn.executemany(INSERT_EVENT, rows)
    return rows


class AppendRequest(Request):
    """One stream's append."""

    appends = True
    __slots__ = ("encoded", "events", "expected", "inline", "metadata", "stream_id")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        inline: tuple[InlineHandler, ...],
        stream_id: str,
        expected: ExpectedVersion,
        encoded: Encoded,
        metadata: bytes,
        events: Sequence[Event],
    ) -> None:
        super().__init__(loop)
        self.inline = inline
        self.stream_id = stream_id
        self.expected = expected
        self.encoded = encoded
        self.metadata = metadata
        self.events = events

    def run(self, conn: sqlite3.Connection, head: int, now: float) -> tuple[Any, int]:
        stream_id = self.stream_id
        # The writer holds the write lock (BEGIN IMMEDIATE): nobody else moves the version
        # before this request ends.
        ((actual,),) = conn.execute(STREAM_VERSION, (stream_id,)).fetchall()
        check_expected(stream_id, self.expected, actual)
        rows = _insert(conn, stream_id, actual, head, self.encoded, self.metadata, now)
        inline = self.inline
        if inline:
            records = [RecordedEvent(*r) for r in rows]
            tx = SqliteTx(conn)
            for handler in inline:
                handler(tx, records, self.events)
        last = head + len(rows)
        return AppendResult(last, actual + len(rows)), last


class AppendStreamsRequest(Request):
    """Appends to several streams, and ``within``, in one SAVEPOINT: all or nothing."""

    appends = True
    __slots__ = ("inline", "metadata", "parts", "within")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        inline: tuple[InlineHandler, ...],
        parts: list[tuple[StreamAppend, Encoded]],
        metadata: bytes,
        within: Within | None,
    ) -> None:
        super().__init__(loop)
        self.inline = inline
        self.parts = parts
        self.metadata = metadata
        self.within = within

    def run(self, conn: sqlite3.Connection, head: int, now: float) -> tuple[Any, int]:
        versions: dict[str, int] = {}
        results: list[AppendResult] = []
        tx = SqliteTx(conn)
        for append, encoded in self.parts:
            stream_id = append.stream_id
            version = versions.get(stream_id)
            if version is None:
                ((version,),) = conn.execute(STREAM_VERSION, (stream_id,)).fetchall()
            check_expected(stream_id, append.expected_version, version)
            rows = _insert(conn, stream_id, version, head, encoded, self.metadata, now)
            if self.inline:
                records = [RecordedEvent(*r) for r in rows]
                for handler in self.inline:
                    handler(tx, records, append.events)
            head, versions[stream_id] = head + len(rows), version + len(rows)
            results.append(AppendResult(head, version + len(rows)))
        if self.within is not None:
            self.within(tx, results)
        return results, head


class SaveSnapshot(Request):
    """A snapshot written by the writer thread, in the group's transaction."""

    __slots__ = ("snapshot",)

    def __init__(self, loop: asyncio.AbstractEventLoop, snapshot: Snapshot) -> None:
        super().__init__(loop)
        self.snapshot = snapshot

    def run(self, conn: sqlite3.Connection, head: int, now: float) -> tuple[Any, int]:
        s = self.snapshot
        # Never replace a snapshot by an older one (two savers racing).
        conn.execute(
            "INSERT INTO snapshots (stream_id, version, state) VALUES (?, ?, ?)"
            " ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,"
            " state = excluded.state WHERE excluded.version >= snapshots.version",
            (s.stream_id, s.version, s.state),
        )
        return None, head
