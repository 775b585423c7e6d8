"""Leases for projection workers in processes that share one SQLite file.

:class:`SqliteLease` implements :class:`cqrskit.lease.Lease` with one lock row per lease
name, in the table ``cqrskit_leases`` of the given file (typically the read database's,
beside the checkpoints)::

    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL

``owner`` is unique per instance (host, pid and a random part), so one instance is one
holder. ``acquire`` writes the row when it is absent, expired or already ours; ``renew``
pushes ``expires_at`` to ``clock() + ttl`` while the row is still ours; ``release`` and
``close()`` delete our rows. Nothing frees the row of a holder that died (SIGKILL, OOM):
it expires ``ttl`` seconds after the holder's last acquire or renew, and the next
``acquire`` of another instance takes it over.

Guarantee: at most one holder at a time, as long as the processes' clocks agree (they
share one machine's wall clock: ``time.time``) and a holder renews within ``ttl`` (the
runner renews every ``lease_interval`` seconds, far below the default ``ttl`` of 10 s).
A holder that stalls for longer than ``ttl`` (a paused process) may overlap with the one
that took over until its next ``renew`` answers False. That overlap is harmless: the
runner's checkpoint compare-and-set (:func:`cqrskit.checkpoints.lock_position`, in the
batch's own write transaction) discards a batch read from a checkpoint that has moved, so
no event is applied twice.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..._workers import Workers
from ...errors import StoreClosed
from .connection import connect, translate_errors

__all__ = ["SqliteLease"]

T = TypeVar("T")

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cqrskit_leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)"""

# Mutual exclusion. The row of a name is written by this one statement, inside a
# BEGIN IMMEDIATE transaction: SQLite lets one connection of all processes on the file
# hold the write lock at a time, so no other acquire, renew or release runs between the
# statement and the SELECT of the owner that follows it. Absent row: the INSERT makes us
# the owner. Present row: the DO UPDATE takes it over only if it is already ours (a
# re-acquire, extending it) or it expired before now (its holder stopped renewing);
# otherwise the row stays as it was. The owner read back says whether we hold the lease.
_TAKE = """
INSERT INTO cqrskit_leases (name, owner, expires_at) VALUES (?, ?, ?)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE cqrskit_leases.owner = excluded.owner OR cqrskit_leases.expires_at < ?"""

# Only while the row is ours: once another instance took an expired row over (or ours was
# released), nothing matches and renew answers False. A row of ours past its expiry that
# nobody took over is extended: nobody held the lease meanwhile.
_RENEW = "UPDATE cqrskit_leases SET expires_at = ? WHERE name = ? AND owner = ?"

_RELEASE = "DELETE FROM cqrskit_leases WHERE name = ? AND owner = ?"

_RELEASE_ALL = "DELETE FROM cqrskit_leases WHERE owner = ?"


class SqliteLease:
    """:class:`~cqrskit.lease.Lease` on lock rows in the SQLite file at ``path``.

    A lease is held for ``ttl`` seconds after each acquire or renew, by ``clock`` (seconds
    since the epoch: every process on the file must agree on it). One instance holds any
    number of leases on its one connection, driven by one worker thread. ``close()``
    releases them all; calls after it raise :class:`~cqrskit.errors.StoreClosed`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        if not ttl > 0:
            raise ValueError("ttl must be positive")
        self.path = Path(path)
        self.ttl = ttl
        # Unique across hosts, processes and the instances of one process.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._held: set[str] = set()
        closed = functools.partial(StoreClosed, "the lease is closed")
        self._workers = Workers(1, f"sqlite-lease-{self.path.name}", closed)
        self._closed = False

    @property
    def held(self) -> frozenset[str]:
        """The leases this instance believes it holds (``renew`` checks the file)."""
        return frozenset(self._held)

    async def acquire(self, name: str) -> bool:
        return await self._run(self._acquire_sync, name)

    async def renew(self, name: str) -> bool:
        return await self._run(self._renew_sync, name)

    async def release(self, name: str) -> None:
        await self._run(self._release_sync, name)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._workers.run(self._close_sync)
        finally:
            self._workers.shutdown()

    # -- on the lease thread --------------------------------------------------------------------

    async def _run(self, fn: Callable[[str], T], name: str) -> T:
        if self._closed:
            raise StoreClosed("the lease is closed")
        return await self._workers.run(self._translated, fn, name)

    @staticmethod
    def _translated(fn: Callable[[str], T], name: str) -> T:
        with translate_errors():  # the one boundary where sqlite3 errors are converted
            return fn(name)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # NORMAL: in WAL mode a commit is visible to other processes at once and
            # survives a crash; a power loss kills every holder anyway.
            conn = connect(self.path, synchronous="NORMAL")
            try:
                conn.execute(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _acquire_sync(self, name: str) -> bool:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = self._clock()  # read once the write lock is ours: no wait makes it stale
            conn.execute(_TAKE, (name, self.owner, now + self.ttl, now))
            row = conn.execute("SELECT owner FROM cqrskit_leases WHERE name = ?", (name,))
            owner = row.fetchone()
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return self._note(name, owner is not None and owner[0] == self.owner)

    def _renew_sync(self, name: str) -> bool:
        conn = self._connection()
        cursor = conn.execute(_RENEW, (self._clock() + self.ttl, name, self.owner))
        return self._note(name, cursor.rowcount == 1)

    def _release_sync(self, name: str) -> None:
        self._held.discard(name)
        self._connection().execute(_RELEASE, (name, self.owner))

    def _note(self, name: str, held: bool) -> bool:
        if held:
            self._held.add(name)
        else:
            self._held.discard(name)
        return held

    def _close_sync(self) -> None:
        self._held.clear()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(_RELEASE_ALL, (self.owner,))
        except sqlite3.Error:
            # Not fatal: the rows expire after ttl, as a killed holder's do.
            log.warning("could not release the leases of %s", self.owner, exc_info=True)
        finally:
            conn.close()
