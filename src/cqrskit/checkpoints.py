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
``position``: which log the read model follows, see ``cqrskit._lineage``).

The SQL is portable (SQLite and PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass

from .sql import SqlTx

__all__ = [
    "CHECKPOINT_TABLE",
    "CheckpointRow",
    "complete_rebuild",
    "ensure_table",
    "lock_position",
    "read_mark",
    "read_position",
    "read_rows",
    "record_error",
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
    event_id TEXT
)
"""
# BIGINT and DOUBLE PRECISION, not INTEGER and REAL: on PostgreSQL those are 4 bytes
# (positions would overflow at 2**31; REAL rounds epoch seconds to 128 s). SQLite gives
# these names the same 8-byte affinities as the short ones.

_COLUMNS = (
    "name, position, state, error, updated_at, events_per_second,"
    " rebuild_position, rebuild_updated_at, event_id"
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


def ensure_table(tx: SqlTx) -> None:
    tx.execute(_CREATE)
    # Added after the first release: tables made before it get the column here. Probed in
    # a savepoint, portably (a failed statement aborts a PostgreSQL transaction).
    tx.execute("SAVEPOINT cqrskit_probe")
    try:
        tx.fetchall(f"SELECT event_id FROM {CHECKPOINT_TABLE} WHERE 1 = 0")
    except Exception:  # no such column (as the driver says it: SQLite's come unconverted)
        tx.execute("ROLLBACK TO SAVEPOINT cqrskit_probe")
        tx.execute(f"ALTER TABLE {CHECKPOINT_TABLE} ADD COLUMN event_id TEXT")
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


def reset_position(tx: SqlTx, name: str, now: float) -> None:
    """Back to position 0, in the transaction that emptied the projection's tables."""
    tx.execute(
        f"UPDATE {CHECKPOINT_TABLE} SET position = 0, event_id = NULL, error = NULL,"
        " state = 'catching_up', updated_at = ?, events_per_second = 0 WHERE name = ?",
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


def record_error(tx: SqlTx, name: str, error: str, now: float) -> None:
    """Mark the projection stopped in error, keeping its (last good) checkpoint."""
    tx.execute(
        f"INSERT INTO {CHECKPOINT_TABLE} (name, position, state, error, updated_at)"
        " VALUES (?, 0, 'error', ?, ?) ON CONFLICT (name) DO UPDATE SET state = 'error',"
        " error = excluded.error, updated_at = excluded.updated_at, events_per_second = 0",
        (name, error, now),
    )


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
    tx: SqlTx, name: str, position: int, now: float, event_id: str | None = None
) -> None:
    """Set the checkpoint of the tables a rebuild just swapped in, in the swap transaction.

    The rebuild replayed every event up to ``position`` (the event ``event_id``) without
    failing, so an error recorded before is gone; whoever runs the projection continues
    from here.
    """
    tx.execute(
        f"INSERT INTO {CHECKPOINT_TABLE} (name, position, state, updated_at, event_id)"
        " VALUES (?, ?, 'stopped', ?, ?) ON CONFLICT (name) DO UPDATE SET"
        " position = excluded.position, event_id = excluded.event_id, error = NULL,"
        " updated_at = excluded.updated_at,"
        f" state = CASE WHEN {CHECKPOINT_TABLE}.state = 'error' THEN 'stopped'"
        f" ELSE {CHECKPOINT_TABLE}.state END,"
        " rebuild_position = NULL, rebuild_updated_at = NULL",
        (name, position, now, event_id),
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
