"""Operator actions on projections, as rows: asked in any process, carried out by the one
that runs the projection.

An operator (CLI, HTTP, Python) inserts a row in ``cqrskit_actions`` in the read database;
the process running the projection (the lease holder, when there is a lease) picks up its
pending actions between batches, carries each out in its own task (so never beside one of
its batches) and marks it done or failed, with a result. The table is also the record of
who did what, when and why. An action is carried out once its row says "pending" and it
is idempotent: a process killed while carrying one out leaves it pending, and the next
holder carries it out again (a retry retries what is still parked; a skip skips what is
still parked up to the position it named).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from .messages import new_id
from .sql import SqlTx

__all__ = [
    "ACTIONS",
    "ACTIONS_TABLE",
    "Action",
    "ActionKind",
    "add_progress",
    "ensure_actions_table",
    "finish_action",
    "insert_action",
    "pending_actions",
    "read_action",
    "read_actions",
]

ACTIONS_TABLE = "cqrskit_actions"

ActionKind = Literal["pause", "resume", "retry", "skip", "restart", "rewind"]
ACTIONS: tuple[ActionKind, ...] = ("pause", "resume", "retry", "skip", "restart", "rewind")

_COLUMNS = (
    "id, projection, action, args, requested_by, reason, requested_at, state,"
    " finished_at, result, progress"
)


@dataclass(frozen=True, slots=True)
class Action:
    """One operator action and what became of it."""

    id: str
    projection: str
    action: str
    args: dict[str, Any]
    requested_by: str
    reason: str
    requested_at: float
    state: str
    """pending (no process running the projection has carried it out yet), done, failed."""
    finished_at: float | None
    result: str | None
    """What it did ("applied 3 events"), or why it failed."""
    progress: int = 0
    """Events it has applied or skipped so far, counted in the transactions that did so:
    exact across a crash of the process carrying it out."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "projection": self.projection,
            "action": self.action,
            "args": self.args,
            "requested_by": self.requested_by,
            "reason": self.reason,
            "requested_at": self.requested_at,
            "state": self.state,
            "finished_at": self.finished_at,
            "result": self.result,
            "progress": self.progress,
        }


def _action(row: tuple[Any, ...]) -> Action:
    return Action(
        id=row[0],
        projection=row[1],
        action=row[2],
        args=json.loads(row[3]),
        requested_by=row[4],
        reason=row[5],
        requested_at=float(row[6]),
        state=row[7],
        finished_at=None if row[8] is None else float(row[8]),
        result=row[9],
        progress=int(row[10]),
    )


def ensure_actions_table(tx: SqlTx) -> None:
    tx.execute(
        f"CREATE TABLE IF NOT EXISTS {ACTIONS_TABLE} (id TEXT PRIMARY KEY,"
        " projection TEXT NOT NULL, action TEXT NOT NULL, args TEXT NOT NULL,"
        " requested_by TEXT NOT NULL, reason TEXT NOT NULL,"
        " requested_at DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,"
        " finished_at DOUBLE PRECISION, result TEXT, progress BIGINT NOT NULL DEFAULT 0)"
    )
    tx.execute(
        f"CREATE INDEX IF NOT EXISTS {ACTIONS_TABLE}_pending"
        f" ON {ACTIONS_TABLE} (projection, state, requested_at)"
    )


def insert_action(
    tx: SqlTx,
    projection: str,
    action: ActionKind,
    args: dict[str, Any],
    requested_by: str,
    reason: str,
    now: float,
) -> Action:
    row = (
        new_id(),
        projection,
        action,
        json.dumps(args, separators=(",", ":")),
        requested_by,
        reason,
        now,
        "pending",
        None,
        None,
        0,
    )
    tx.execute(
        f"INSERT INTO {ACTIONS_TABLE} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        row,
    )
    return _action(row)


def pending_actions(tx: SqlTx, projection: str) -> list[Action]:
    """The pending actions of ``projection``, oldest first."""
    rows = tx.fetchall(
        f"SELECT {_COLUMNS} FROM {ACTIONS_TABLE} WHERE projection = ? AND state = 'pending'"
        " ORDER BY requested_at, id",
        (projection,),
    )
    return [_action(r) for r in rows]


def finish_action(tx: SqlTx, *, action_id: str, state: str, result: str, now: float) -> None:
    tx.execute(
        f"UPDATE {ACTIONS_TABLE} SET state = ?, result = ?, finished_at = ?"
        " WHERE id = ? AND state = 'pending'",
        (state, result, now, action_id),
    )


def add_progress(tx: SqlTx, action_id: str, count: int) -> None:
    """Count ``count`` more events done by the action, in the transaction doing them."""
    tx.execute(
        f"UPDATE {ACTIONS_TABLE} SET progress = progress + ? WHERE id = ?", (count, action_id)
    )


def read_action(tx: SqlTx, action_id: str) -> Action | None:
    row = tx.fetchone(f"SELECT {_COLUMNS} FROM {ACTIONS_TABLE} WHERE id = ?", (action_id,))
    return None if row is None else _action(row)


def read_actions(tx: SqlTx, projection: str | None, limit: int) -> list[Action]:
    """The latest actions (of one projection, or all), newest first."""
    where, params = ("", ()) if projection is None else (" WHERE projection = ?", (projection,))
    rows = tx.fetchall(
        f"SELECT {_COLUMNS} FROM {ACTIONS_TABLE}{where}"
        f" ORDER BY requested_at DESC, id DESC LIMIT {int(limit)}",
        params,
    )
    return [_action(r) for r in rows]
