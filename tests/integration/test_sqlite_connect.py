"""SQLite's ``connect`` on a brand-new file: the switch to WAL retries while another
connection holds the file locked (SQLite calls no busy handler for that switch)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cqrskit.backends.sqlite.connection import connect


def test_the_wal_switch_waits_for_a_lock_held_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")  # a file in rollback-journal mode
    # A write transaction elsewhere (what a second process creating its schema holds):
    # SQLite answers the switch "database is locked" at once, without its busy handler.
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_later() -> None:
        time.sleep(0.3)
        holder.execute("COMMIT")
        released.set()

    threading.Thread(target=release_later).start()
    started = time.perf_counter()
    conn = connect(path)  # without the retry: "database is locked" at once
    try:
        assert released.is_set()
        assert time.perf_counter() - started >= 0.25
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
        holder.close()


def test_an_error_other_than_a_lock_is_not_retried(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not a SQLite file" * 100)
    started = time.perf_counter()
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        connect(path)
    assert time.perf_counter() - started < 1.0


def test_writing_connections_zero_what_they_delete(tmp_path: Path) -> None:
    """``secure_delete`` is set, not left to the build's default (Debian's is on, most
    others' off): a deleted row's bytes do not stay in its page (docs/personal-data.md)."""
    writer = connect(tmp_path / "w.db")
    reader = connect(tmp_path / "w.db", readonly=True)
    try:
        assert writer.execute("PRAGMA secure_delete").fetchone() == (1,)
        writer.execute("CREATE TABLE t (secret TEXT)")
        writer.execute("INSERT INTO t VALUES ('zebra-crossing-4711')")
        writer.execute("DELETE FROM t")
        writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert b"zebra-crossing-4711" not in (tmp_path / "w.db").read_bytes()
    finally:
        reader.close()
        writer.close()
