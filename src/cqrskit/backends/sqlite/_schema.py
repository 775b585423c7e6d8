"""The event store's tables on SQLite, created or upgraded when the writer opens the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from ...errors import SchemaError
from ...idempotency import IDEMPOTENCY_DDL
from ...projection import Projection
from .connection import SqliteTx, connect, write_transaction

__all__ = ["KEYS_DDL", "SCHEMA_VERSION", "open_log"]

KEYS_DDL = (
    """CREATE TABLE IF NOT EXISTS cqrskit_keys (
        subject TEXT PRIMARY KEY,
        key BLOB,
        created_at REAL NOT NULL,
        forgotten_at REAL,
        CHECK ((key IS NULL) = (forgotten_at IS NOT NULL))
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS cqrskit_keys_destroyed (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        count INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO cqrskit_keys_destroyed (id, count) VALUES (0, 0)",
    # Every statement that destroys a key, whoever runs it, counts in the same
    # transaction: a reader that sees the count unchanged knows no key it kept is gone.
    """CREATE TRIGGER IF NOT EXISTS cqrskit_key_destroyed
        AFTER UPDATE OF key ON cqrskit_keys WHEN old.key IS NOT NULL AND new.key IS NULL
        BEGIN UPDATE cqrskit_keys_destroyed SET count = count + 1; END""",
    """CREATE TRIGGER IF NOT EXISTS cqrskit_key_deleted
        AFTER DELETE ON cqrskit_keys WHEN old.key IS NOT NULL
        BEGIN UPDATE cqrskit_keys_destroyed SET count = count + 1; END""",
)
"""The key of each data subject (:mod:`.keys`): one row per subject ever keyed or
forgotten; ``key`` NULL (and ``forgotten_at`` set) is the tombstone of a forgotten one.
``cqrskit_keys_destroyed`` counts the keys ever destroyed, by triggers: the readers keep
the keys they found while it stays the same (:class:`cqrskit._sealing.ReadKeys`)."""

SCHEMA_VERSION = 2
"""Version of the tables below, kept in ``cqrskit_schema_version`` (name 'event_store').

v2 dropped v1's ``streams`` table (one row per stream with its version): the version is
the last entry of the ``(stream_id, stream_version)`` index, which every append writes
anyway, and the table cost each append a fourth B-tree page (~20% of one-client append
throughput, measured). Opening a v1 file upgrades it in place (drops the table)."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cqrskit_schema_version (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    )""",
    # position is the rowid: assigned by the single writer inside BEGIN IMMEDIATE, so
    # position order is commit order (log order) and a reader never sees a gap fill later.
    """CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY,
        stream_id TEXT NOT NULL,
        stream_version INTEGER NOT NULL,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        payload BLOB NOT NULL,
        metadata BLOB NOT NULL,
        recorded_at REAL NOT NULL,
        UNIQUE (stream_id, stream_version)
    )""",
    """CREATE TABLE IF NOT EXISTS snapshots (
        stream_id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        state BLOB NOT NULL
    ) WITHOUT ROWID""",
    # Idempotency keys, stored in the transaction of their command; WITHOUT ROWID: the
    # key is where the row lives, one B-tree less to write per command (measured: the
    # keyed command path spends most of its extra time writing this row).
    IDEMPOTENCY_DDL[0] + " WITHOUT ROWID",
    *IDEMPOTENCY_DDL[1:],
    *KEYS_DDL,
)


def open_log(
    path: Path,
    synchronous: str,
    inline: Sequence[Projection],
    read_head: Callable[[sqlite3.Connection], int],
) -> tuple[sqlite3.Connection, int]:
    """The write connection of the log at ``path`` and its head, with the schema (and the
    inline projections' tables) in place; a v1 file is upgraded to v2 in place."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = connect(path, synchronous=synchronous)
    try:
        head = write_transaction(conn, lambda tx: _create(tx, path, inline, read_head))
    except BaseException:
        conn.close()
        raise
    return conn, head


def _create(
    tx: SqliteTx,
    path: Path,
    inline: Sequence[Projection],
    read_head: Callable[[sqlite3.Connection], int],
) -> int:
    conn = tx.conn
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT OR IGNORE INTO cqrskit_schema_version (name, version) VALUES ('event_store', ?)",
        (SCHEMA_VERSION,),
    )
    (stored,) = conn.execute(
        "SELECT version FROM cqrskit_schema_version WHERE name = 'event_store'"
    ).fetchone()
    if stored == 1:  # v1 -> v2: the stream versions live in the events index
        conn.execute("DROP TABLE IF EXISTS streams")
        conn.execute("UPDATE cqrskit_schema_version SET version = 2 WHERE name = 'event_store'")
        stored = 2
    if stored != SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: event store schema v{stored}, this code knows v{SCHEMA_VERSION}"
        )
    for projection in inline:
        projection.create_schema(tx)
    return read_head(conn)
