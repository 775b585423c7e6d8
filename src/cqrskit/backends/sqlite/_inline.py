"""Short stream reads on the caller's own thread: :class:`InlineReader`.

A command loads its aggregate before each append. On a reader thread, the hop there and
back cost 25 times the read itself (90 against 3.6 us for one client, measured), so a
stream of up to :data:`ROWS` events is read on the caller's thread (the event loop) with a
connection of its own. That read never waits: the connection has no busy timeout, and a
read that would block (a lock held elsewhere) or fails answers None, and the store reads
on a reader thread instead. A longer stream's first :data:`ROWS` events are read here and
the rest on a reader thread, after them.

Only streams this store appended to or read lately (:data:`RECENT` of them) are read here:
their pages are in the OS page cache. Any other stream's pages may have to come from the
disk (about 0.1 ms a page here, one page per event of a long-lived stream), which the event
loop must not wait for: its first read goes to a reader thread, and makes it recent.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from .connection import SqliteTx, connect
from .keys import lookup_keys

__all__ = ["RECENT", "ROWS", "InlineReader"]

ROWS = 64
"""The longest stream read inline."""
RECENT = 4096
"""Streams remembered as lately appended to or read (the least recent forgotten first)."""


class InlineReader:
    """One read-only connection for reads on the caller's thread (see the module)."""

    def __init__(self, path: Path, select_stream: str, cache_kib: int) -> None:
        self._path = path
        self._select = select_stream
        """The store's stream read, with a ``LIMIT ?`` at its end."""
        self._cache_kib = cache_kib
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        """Held during a read: a second thread reading at once takes the usual way."""
        self._recent: dict[str, None] = {}
        """Streams lately appended to or read, least recent first (guarded by _lock)."""

    def touched(self, stream_ids: Iterable[str]) -> None:
        """These streams were just appended to or read: their pages are cached."""
        with self._lock:
            recent = self._recent
            for stream_id in stream_ids:
                recent.pop(stream_id, None)
                recent[stream_id] = None
            while len(recent) > RECENT:
                del recent[next(iter(recent))]

    def stream(self, stream_id: str, from_version: int) -> list[tuple[Any, ...]] | None:
        """The stream's rows after ``from_version``, at most ``ROWS + 1`` of them (more
        than ``ROWS``: the stream goes on); None: read it on a reader thread (a stream not
        lately touched, a read running on another thread, or an error)."""
        if not self._lock.acquire(blocking=False):
            return None
        recent = self._recent
        if stream_id not in recent:
            self._lock.release()
            return None
        del recent[stream_id]
        recent[stream_id] = None  # the most recent now
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = connect(self._path, synchronous="NORMAL", readonly=True)
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute(f"PRAGMA cache_size = -{self._cache_kib}")
            rows = conn.execute(self._select, (stream_id, from_version, ROWS + 1)).fetchall()
        except sqlite3.Error:
            return None  # busy, or anything else: the reader thread's read says it properly
        finally:
            self._lock.release()
        return rows

    def keys(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        """The keys of sealed events the rows hold (cqrskit.personal), on the same thread."""
        with self._lock:
            if self._conn is None:
                return {}
            return lookup_keys(SqliteTx(self._conn), subjects)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
