"""Parked events: a projection whose ``on_failure`` is "park" sets a poison event aside
and holds its stream, instead of stopping for every stream.

Each such projection owns one more table, ``cqrskit_parked_<name>``, in the read database
beside its own tables (so a rebuild rebuilds it and swaps it in with them). A row is an
event that was not applied: either it failed (``behind`` NULL: its handler kept failing,
``error`` says why) or it waits behind an earlier parked event of its stream (``behind``
is that event's position). Parking happens in the batch's transaction, with the
checkpoint, so exactly-once holds for parked events too: an event is applied, or parked,
once. The streams with parked events are "held": their later events are parked in order
behind the first, while every other stream goes on and the checkpoint advances. Retrying
applies a held stream's parked events in log order (see ``cqrskit._operator``).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ProjectionError
from .messages import RecordedEvent
from .sql import SqlTx

__all__ = ["ParkedEvent", "Parking", "error_of", "parked_table", "trace"]

_IDENTIFIER = re.compile(r"[A-Za-z0-9_]+")


def parked_table(projection: str) -> str:
    """The parked table's name: the projection's name when it is a plain identifier, else
    a sanitized one with a checksum (two names may not sanitize to one table)."""
    if _IDENTIFIER.fullmatch(projection) and len(projection) <= 40:
        return f"cqrskit_parked_{projection}"
    safe = re.sub(r"[^A-Za-z0-9_]", "_", projection)[:30]
    return f"cqrskit_parked_{safe}_{zlib.crc32(projection.encode()):08x}"


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event a projection set aside instead of applying it."""

    projection: str
    position: int
    event_id: str
    stream_id: str
    event_type: str
    error: str
    """Why: the handler's error, or "waiting behind position N" for a held stream."""
    attempts: int
    """Times its handler was tried (0 for an event parked behind another)."""
    parked_at: float
    behind: int | None
    """The position of the failed event of its stream it waits behind (None: it failed)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "event_id": self.event_id,
            "stream_id": self.stream_id,
            "event_type": self.event_type,
            "error": self.error,
            "attempts": self.attempts,
            "parked_at": self.parked_at,
            "behind": self.behind,
        }


_COLUMNS = "position, event_id, stream_id, event_type, error, attempts, parked_at, behind"


class Parking:
    """The parked table of one projection, and its held streams (kept in memory by the
    process running it; loaded at start, changed only after the transactions that change
    the table commit)."""

    __slots__ = ("held", "name", "table")

    def __init__(self, name: str) -> None:
        self.name = name
        self.table = parked_table(name)
        self.held: dict[str, int] = {}
        """Held stream -> position of the parked event at its head."""

    # -- schema and loading ------------------------------------------------------------------

    def create(self, tx: SqlTx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " position BIGINT PRIMARY KEY, event_id TEXT NOT NULL, stream_id TEXT NOT NULL,"
            " event_type TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL,"
            " parked_at DOUBLE PRECISION NOT NULL, behind BIGINT)"
        )
        tx.execute(
            f"CREATE INDEX IF NOT EXISTS {self.table}_stream ON {self.table} (stream_id, position)"
        )

    def load(self, tx: SqlTx) -> dict[str, int]:
        """The held streams as stored (assign to :attr:`held` once the reading is done)."""
        rows = tx.fetchall(f"SELECT stream_id, MIN(position) FROM {self.table} GROUP BY stream_id")
        return {str(stream): int(first) for stream, first in rows}

    # -- in the batch transaction --------------------------------------------------------------

    def park_failed(
        self, tx: SqlTx, record: RecordedEvent, error: str, attempts: int, now: float
    ) -> None:
        """Park ``record``, whose handler kept failing: its stream is held from here. (The
        caller counts it in the checkpoint row, where there is one: not in a rebuild's
        fresh tables.)"""
        self._insert(tx, record, error, attempts, now, None)

    def park_held(self, tx: SqlTx, records: list[RecordedEvent], now: float) -> None:
        """Park events of held streams behind the event at their stream's head."""
        for record in records:
            first = self.held[record.stream_id]
            self._insert(tx, record, f"waiting behind position {first}", 0, now, first)

    def _insert(
        self,
        tx: SqlTx,
        record: RecordedEvent,
        error: str,
        attempts: int,
        now: float,
        behind: int | None,
    ) -> None:
        tx.execute(
            f"INSERT INTO {self.table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.position,
                record.event_id,
                record.stream_id,
                record.type,
                error,
                attempts,
                now,
                behind,
            ),
        )

    # -- operator actions ----------------------------------------------------------------------

    def rows(
        self, tx: SqlTx, stream_id: str | None = None, limit: int | None = None
    ) -> list[ParkedEvent]:
        """Parked events in log order: all, or one stream's."""
        where, params = ("", ()) if stream_id is None else (" WHERE stream_id = ?", (stream_id,))
        tail = "" if limit is None else f" LIMIT {int(limit)}"
        rows = tx.fetchall(
            f"SELECT {_COLUMNS} FROM {self.table}{where} ORDER BY position{tail}", params
        )
        return [ParkedEvent(self.name, *row) for row in rows]

    def unpark(self, tx: SqlTx, position: int) -> bool:
        """Remove one parked event (applied by a retry, or skipped); False when it was not
        parked any more (another retry or skip took it)."""
        return tx.execute(f"DELETE FROM {self.table} WHERE position = ?", (position,)) > 0

    def failed_again(self, tx: SqlTx, position: int, error: str, attempts: int) -> None:
        """A retried event failed once more: it is now at its stream's head."""
        tx.execute(
            f"UPDATE {self.table} SET error = ?, attempts = attempts + ?, behind = NULL"
            " WHERE position = ?",
            (error, attempts, position),
        )

    @staticmethod
    def split(
        events: Sequence[RecordedEvent], held: dict[str, int]
    ) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
        """``events`` as (to apply, to park behind their held stream), each in log order."""
        apply: list[RecordedEvent] = []
        park: list[RecordedEvent] = []
        for record in events:
            (park if record.stream_id in held else apply).append(record)
        return apply, park


def error_of(name: str, record: RecordedEvent, cause: str, attempts: int) -> ProjectionError:
    return ProjectionError(
        name,
        record.position,
        record.type,
        cause,
        event_id=record.event_id,
        stream_id=record.stream_id,
        attempts=attempts,
    )


def trace(record: RecordedEvent) -> str:
    """The event's correlation id for a log line, when its metadata has one."""
    try:
        correlation = json.loads(record.metadata).get("correlation_id")
    except (ValueError, AttributeError):
        return ""
    return f" (correlation_id={correlation})" if correlation else ""
