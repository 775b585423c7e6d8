"""The checkpoint table: where each projection is in the log, kept in the read database.

A projection's row is written in the same transaction as the rows its handlers changed, so
the read model and its position can never disagree, whatever crashes: that is what makes
each event change the read model exactly once. Query handlers read the position with
:func:`read_position` inside the same read transaction as their data (the ``X-Position``
they answer with).

Columns: ``position`` (last position processed), ``state`` (what the runner that owns the
projection last reported: running, catching_up, stopped, error), ``error`` (why it stopped),
``updated_at`` (epoch seconds of the last write), ``events_per_second`` (the runner's recent
rate), ``rebuild_position``/``rebuild_updated_at`` (a rebuild in progress and its heartbeat,
so that ``status`` in any process shows "rebuilding"), ``event_id`` (the id of the event at
``position``: which log the read model follows, see ``cqrskit._lineage``), ``failure`` (the
cause of an error, as JSON: :class:`ProjectionFailure`), ``paused`` (who paused it, when
and why, as JSON; NULL when not paused: it outlives the process that paused it), ``parked``
(how many events are parked, see ``cqrskit._parking``: kept here, in the transactions that
park and unpark, so that ``status`` counts without knowing the projection's tables).

The SQL is portable (SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ProjectionError
from .sql import SqlTx

__all__ = [
    "CHECKPOINT_TABLE",
    "CheckpointRow",
    "ProjectionFailure",
    "add_parked",
    "advance_position",
    "clear_error",
    "complete_rebuild",
    "ensure_table",
    "lock_position",
    "read_mark",
    "read_position",
    "read_rows",
    "record_error",
    "record_paused",
    "record_rebuild",
    "record_state",
    "reset_position",
    "write_position",
]

CHECKPOINT_TABLE = "cqrskit_projections"

_CREATE = f"""
CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    updated_at DOUBLE PRECISION,
    events_per_second DOUBLE PRECISION NOT NULL DEFAULT 0,
    rebuild_position BIGINT,
    rebuild_updated_at DOUBLE PRECISION,
    event_id TEXT,
    failure TEXT,
    paused TEXT,
    parked BIGINT NOT NULL DEFAULT 0
)
"""
# BIGINT and DOUBLE PRECISION, not INTEGER and REAL: on PostgreSQL those are 4 bytes
# (positions would overflow at 2**31; REAL rounds epoch seconds to 128 s). SQLite gives
# these names the same 8-byte affinities as the short ones.

_COLUMNS = (
    "name, position, state, error, updated_at, events_per_second,"
    " rebuild_position, rebuild_updated_at, event_id, failure, paused, parked"
)

_ADDED = (
    ("event_id", "TEXT"),
    ("failure", "TEXT"),
    ("paused", "TEXT"),
    ("parked", "BIGINT NOT NULL DEFAULT 0"),
)
"""Columns added after the first release, in order: tables made before get them."""


@dataclass(frozen=True, slots=True)
class ProjectionFailure:
    """Why a projection stopped (or, for a parked event, why that event was parked)."""

    position: int
    """The event's position in the log (for a failure of the runner itself, its checkpoint)."""
    event_id: str
    event_type: str
    """Empty when no event is to blame (the log diverged, the runner failed)."""
    stream_id: str
    message: str
    attempts: int
    """How many times the event was tried before giving up."""
    since: float
    """Epoch seconds of the failure."""

    @classmethod
    def of(cls, error: ProjectionError, since: float) -> ProjectionFailure:
        return cls(
            position=error.position,
            event_id=error.event_id,
            event_type=error.event_type,
            stream_id=error.stream_id,
            message=error.cause,
            attempts=error.attempts,
            since=since,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ProjectionFailure:
        data = json.loads(text)
        return cls(
            position=int(data["position"]),
            event_id=str(data.get("event_id", "")),
            event_type=str(data.get("event_type", "")),
            stream_id=str(data.get("stream_id", "")),
            message=str(data.get("message", "")),
            attempts=int(data.get("attempts", 1)),
            since=float(data.get("since", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    name: str
    position: int
    state: str
    error: str | None
    updated_at: float | None
    events_per_second: float
    rebuild_position: int | None
    rebuild_updated_at: float | None
    event_id: str | None
    failure: str | None
    paused: str | None
    parked: int

    def failure_cause(self) -> ProjectionFailure | None:
        """The stored failure; for an error recorded before the column, its message."""
        if self.failure is not None:
            return ProjectionFailure.from_json(self.failure)
        if self.error is not None:
            return ProjectionFailure(self.position, "", "", "", self.error, 1, 0.0)
        return None


def ensure_table(tx: SqlTx) -> None:
    tx.execute(_CREATE)
    # Tables made by an earlier release get the columns added since. Each is probed in a
    # savepoint, portably (a failed statement aborts a PostgreSQL transaction).
    for column, kind in _ADDED:
        tx.execute("SAVEPOINT cqrskit_probe")
        try:
            tx.fetchall(f"SELECT {column} FROM {CHECKPOINT_TABLE} WHERE 1 = 0")
        except Exception:  # no such column (as the driver says it: SQLite's come unconverted)
            tx.execute("ROLLBACK TO SAVEPOINT cqrskit_probe")
            tx.execute(f"ALTER TABLE {CHECKPOINT_TABLE} ADD COLUMN {column} {kind}")
        tx.execute("RELEASE SAVEPOINT cqrskit_probe")


def read_mark(tx: SqlTx, name: str) -> tuple[int, str | None]:
    """The position projection ``name`` has processed and the id of the event there
    (None when unknown: nothing processed, or a row older than the column)."""
    row = tx.fetchone(f"SELECT position, event_id FROM {CHECKPOINT_TABLE} WHERE name = ?", (name,))
    return (0, None) if row is None else (int(row[0]), row[1])


def read_position(tx: SqlTx, name: str) -> int:
    """The position projection ``name`` has processed (0 when it never ran).

    Call it in the same read transaction as the read model's SELECT: both then come from
    one snapshot, so the position describes exactly the rows returned.
    """
    row = tx.fetchone(f"SELECT position FROM {CHECKPOINT_TABLE} WHERE name = ?", (name,))
    return 0 if row is None else int(row[0])


def read_rows(tx: SqlTx, names: list[str] | None = None) -> dict[str, CheckpointRow]:
    """The rows of these projections (all rows when ``names`` is None), by name."""
    rows = tx.fetchall(f"SELECT {_COLUMNS} FROM {CHECKPOINT_TABLE}")
    found = {r[0]: CheckpointRow(*r) for r in rows}
    if names is None:
        return found
    return {n: found[n] for n in names if n in found}


def write_position(
    tx: SqlTx,
    name: str,
    position: int,
    state: str,
    now: float,
    events_per_second: float,
    event_id: str | None = None,
) -> None:
    """Move the checkpoint to ``position``, the event ``event_id``; the caller has
    checked (in this transaction) where it was.

    Written in the transaction of the batch's changes: the batch and its checkpoint commit
    or vanish together. A successful batch clears any earlier error.
    """
    tx.execute(
        f"INSERT INTO {CHECKPOINT_TABLE} (name, position, state, error, updated_at,"
        " events_per_second, event_id) VALUES (?, ?, ?, NULL, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET position = excluded.position,"
        " state = excluded.state, error = NULL, updated_at = excluded.updated_at,"
        " events_per_second = excluded.events_per_second, event_id = excluded.event_id",
        (name, position, state, now, events_per_second, event_id),
    )


def advance_position(
    tx: SqlTx,
    name: str,
    expected: int,
    position: int,
    state: str,
    now: float,
    events_per_second: float,
    event_id: str | None = None,
) -> None:
    """Move the checkpoint from ``expected`` to ``position`` as :func:`write_position`
    does, or fail the transaction when it is no longer at ``expected``: for a deferred
    batch (PostgreSQL), whose statements go out without waiting for any answer, so it
    cannot look first as :func:`lock_position` does. The row must exist (a projection's
    first batch, from 0, takes :func:`lock_position`'s way, which makes it).

    How: the UPDATE changes the row only where it still holds ``expected``; in READ
    COMMITTED a row that another transaction holds is waited for, then its committed
    version is checked. Changing no row, ``1 / count(*)`` divides by zero: the transaction
    fails, and with it the batch's changes. The caller reads the checkpoint after a
    failure to tell that from a failing handler."""
    tx.execute(
        f"WITH moved AS (UPDATE {CHECKPOINT_TABLE} SET position = ?, state = ?, error = NULL,"
        " updated_at = ?, events_per_second = ?, event_id = ? WHERE name = ? AND position = ?"
        " RETURNING 1) SELECT 1 / count(*) FROM moved",
        (position, state, now, events_per_second, event_id, name, expected),
    )


def reset_position(tx: SqlTx, name: str, now: float) -> None:
    """Back to position 0, in the transaction that emptied the projection's tables."""
    tx.execute(
        f"UPDATE {CHECKPOINT_TABLE} SET position = 0, event_id = NULL, error = NULL,"
        " failure = NULL, parked = 0, state = 'catching_up', updated_at = ?,"
        " events_per_second = 0 WHERE name = ?",
        (now, name),
    )


def record_state(tx: SqlTx, name: str, state: str, now: float) -> None:
    """Report a state change (stopped, standby) without moving the checkpoint."""
    tx.execute(
        f"INSERT INTO {CHECKPOINT_TABLE} (name, position, state, updated_at)"
        " VALUES (?, 0, ?, ?) ON CONFLICT (name) DO UPDATE SET state = excluded.state,"
        " updated_at = excluded.updated_at, events_per_second = 0",
        (name, state, now),
    )


def record_error(tx: SqlTx, name: str, failure: ProjectionFailure, now: float) -> None:
    """Mark the projection stopped in error, keeping its (last good) checkpoint."""
    tx.execute(
        f"INSERT INTO {CHECKPOINT_TABLE} (name, position, state, error, failure, updated_at)"
        " VALUES (?, 0, 'error', ?, ?, ?) ON CONFLICT (name) DO UPDATE SET state = 'error',"
        " error = excluded.error, failure = excluded.failure,"
        " updated_at = excluded.updated_at, events_per_second = 0",
        (name, failure.message, failure.to_json(), now),
    )


def clear_error(tx: SqlTx, name: str) -> bool:
    """Forget the recorded error (an operator's restart); True when there was one. The
    process running the projection sees it gone and starts again from its checkpoint."""
    changed = tx.execute(
        f"UPDATE {CHECKPOINT_TABLE} SET error = NULL, failure = NULL,"
        " state = CASE WHEN state = 'error' THEN 'stopped' ELSE state END"
        " WHERE name = ? AND (error IS NOT NULL OR failure IS NOT NULL)",
        (name,),
    )
    return changed > 0


def record_paused(tx: SqlTx, name: str, paused: dict[str, Any] | None) -> None:
    """Pause (who, when, why) or, with None, resume: kept across restarts."""
    text = None if paused is None else json.dumps(paused, separators=(",", ":"))
    tx.execute(
        f"INSERT INTO {CHECKPOINT_TABLE} (name, position, state, paused) VALUES (?, 0,"
        " 'stopped', ?) ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
        (name, text),
    )


def add_parked(tx: SqlTx, name: str, count: int) -> None:
    """Count ``count`` more (or, negative, fewer) parked events, in the transaction that
    parks (or retries, or skips) them."""
    tx.execute(f"UPDATE {CHECKPOINT_TABLE} SET parked = parked + ? WHERE name = ?", (count, name))


def record_rebuild(tx: SqlTx, name: str, position: int | None, now: float | None) -> None:
    """Heartbeat of a rebuild in progress (``position`` None: no rebuild any more).

    Only the rebuild columns change, never ``position``: the live runner keeps owning it.
    """
    tx.execute(
        f"INSERT INTO {CHECKPOINT_TABLE} (name, position, state, rebuild_position,"
        " rebuild_updated_at) VALUES (?, 0, 'stopped', ?, ?) ON CONFLICT (name) DO UPDATE"
        " SET rebuild_position = excluded.rebuild_position,"
        " rebuild_updated_at = excluded.rebuild_updated_at",
        (name, position, now),
    )


def complete_rebuild(
    tx: SqlTx,
    name: str,
    position: int,
    now: float,
    event_id: str | None = None,
    parked: int = 0,
) -> None:
    """Set the checkpoint of the tables a rebuild just swapped in, in the swap transaction.

    The rebuild replayed every event up to ``position`` (the event ``event_id``) without
    failing (or parked, ``parked`` of them, in the fresh tables), so an error recorded
    before is gone; whoever runs the projection continues from here.
    """
    tx.execute(
        f"INSERT INTO {CHECKPOINT_TABLE} (name, position, state, updated_at, event_id,"
        " parked) VALUES (?, ?, 'stopped', ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
        " position = excluded.position, event_id = excluded.event_id, error = NULL,"
        " failure = NULL, parked = excluded.parked, updated_at = excluded.updated_at,"
        f" state = CASE WHEN {CHECKPOINT_TABLE}.state = 'error' THEN 'stopped'"
        f" ELSE {CHECKPOINT_TABLE}.state END,"
        " rebuild_position = NULL, rebuild_updated_at = NULL",
        (name, position, now, event_id, parked),
    )


def lock_position(tx: SqlTx, name: str) -> int:
    """The position of ``name``, with its checkpoint row locked until the transaction ends.

    A batch calls it before its compare-and-set. On PostgreSQL (READ COMMITTED) a plain
    SELECT would let two runners read the same checkpoint and both apply the batch; this
    upsert creates the row when missing and row-locks it, and when another transaction
    holds it, waits for that one to commit and returns the position it committed. On
    SQLite the write transaction already excludes other writers: it is a plain read there.
    """
    row = tx.fetchone(
        f"INSERT INTO {CHECKPOINT_TABLE} (name, position, state) VALUES (?, 0, 'stopped')"
        f" ON CONFLICT (name) DO UPDATE SET position = {CHECKPOINT_TABLE}.position"
        " RETURNING position",
        (name,),
    )
    assert row is not None
    return int(row[0])
