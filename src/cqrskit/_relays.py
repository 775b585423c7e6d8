"""The relays' reports, in the read database: one row per broker stream, written by the
relay that publishes it (:class:`cqrskit.relay.Relay`, given the app's read database), so
that every process of the app (an API, the operations console, ``/metrics``) sees how far
the relay is without reaching the broker. :func:`cqrskit.monitoring.relay_reports` reads
them back, with the lag.

**A report, not a checkpoint.** The relay resumes from the broker stream's last message,
never from this row: a row lost, late or wrong changes nothing that is published. It is
written after acknowledged batches (at most about once a second), on each change of state
and as a heartbeat while idle, never inside a batch.

**Several processes, one row.** Relays of one stream take turns through a lease: one
publishes, the others stand by. A process that does not publish (``standby``, or
``stopped`` from standby) writes its state only over its own row, a row that says no relay
publishes, or a row older than ``stale_before``: it never hides the publishing one.

Columns: ``stream`` (the broker's name of it), ``position`` (the log position the stream
ends at, NULL while unknown), ``state`` (``running``, ``waiting`` for the broker or the
database, ``standby``, ``stopped``), ``updated_at`` (epoch seconds), ``holder`` (the
process that wrote it, ``host:pid``). The SQL is portable (SQLite and PostgreSQL).
"""

from __future__ import annotations

from .sql import Row, SqlTx

__all__ = [
    "ACTIVE",
    "RELAYS_TABLE",
    "ensure_relays_table",
    "read_reports",
    "write_report",
]

RELAYS_TABLE = "cqrskit_relays"

ACTIVE = ("running", "waiting")
"""States of a relay that holds its stream (or tries to publish): it heartbeats its row."""

_CREATE = f"""
CREATE TABLE IF NOT EXISTS {RELAYS_TABLE} (
    stream TEXT PRIMARY KEY,
    position BIGINT,
    state TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    holder TEXT NOT NULL
)
"""

_UPSERT = (
    f"INSERT INTO {RELAYS_TABLE} (stream, position, state, updated_at, holder)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream) DO UPDATE SET"
    # A position not known (the broker not reached yet) keeps the last one reported.
    f" position = COALESCE(excluded.position, {RELAYS_TABLE}.position),"
    " state = excluded.state, updated_at = excluded.updated_at, holder = excluded.holder"
)

_IF_NOT_HIDING = (
    f" WHERE {RELAYS_TABLE}.holder = excluded.holder"
    f" OR {RELAYS_TABLE}.state NOT IN ('running', 'waiting')"
    f" OR {RELAYS_TABLE}.updated_at < ?"
)


def ensure_relays_table(tx: SqlTx) -> None:
    tx.execute(_CREATE)


def write_report(
    tx: SqlTx,
    stream: str,
    position: int | None,
    state: str,
    now: float,
    holder: str,
    *,
    stale_before: float,
) -> None:
    """Upsert the row of ``stream``; a state outside :data:`ACTIVE` does not replace
    another holder's active row written since ``stale_before`` (see the module docstring)."""
    params = (stream, position, state, now, holder)
    if state in ACTIVE:
        tx.execute(_UPSERT, params)
    else:
        tx.execute(_UPSERT + _IF_NOT_HIDING, (*params, stale_before))


def read_reports(tx: SqlTx) -> list[Row]:
    """``(stream, position, state, updated_at, holder)`` of every stream, by stream."""
    return tx.fetchall(
        f"SELECT stream, position, state, updated_at, holder FROM {RELAYS_TABLE} ORDER BY stream"
    )
