"""Leases for projection workers, on PostgreSQL session-level advisory locks.

:class:`PgAdvisoryLease` implements :class:`cqrskit.runner.Lease`. Holding the lease of a
projection means holding ``pg_try_advisory_lock(key(name))`` on one dedicated connection:
exactly one session on the server can hold it. The lock belongs to the session, so it
frees itself when the holder goes away:

* the holder process dies (SIGKILL, OOM): its kernel closes the socket, the server ends
  the session at once and the lock is free for a standby's next ``acquire``;
* the holder's host or network dies: the server's TCP keepalives (set per session below)
  notice within about 11 s and end the session.

``renew`` asks the server, on the lock's own connection, whether this session still holds
the lock (``pg_locks``); a dead or replaced connection answers False, so a holder cut off
from the server stops applying. Two holders can still overlap for a moment (the old one
applies a batch it started before noticing); the runner's checkpoint compare, under a row
lock (:func:`cqrskit.checkpoints.lock_position`), discards that batch: no double apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg

from ...errors import StoreClosed
from .connection import translate_errors

__all__ = ["PgAdvisoryLease", "lease_key"]

T = TypeVar("T")

# Client side: notice a dead server; server side (-c options): notice a dead client.
_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "connect_timeout": 5,
    "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2"
    " -c tcp_keepalives_count=3 -c tcp_user_timeout=10000",
    "application_name": "cqrskit-lease",
}

_HELD = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
      AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1
)"""


def lease_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of a lease name (stable across processes)."""
    digest = hashlib.blake2b(f"cqrskit.lease:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PgAdvisoryLease:
    """:class:`~cqrskit.runner.Lease` on advisory locks of the database at ``url``.

    One instance holds any number of leases on its one connection (one worker thread
    drives it; :attr:`max_connections`). ``close()`` releases them all. The connection
    must reach the server in *session* mode (a PgBouncer in transaction mode would hand
    the session, and its locks, to another client).
    """

    max_connections = 1
    """The most connections one instance opens to the server at once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._held: set[str] = set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cqrskit-lease")
        self._closed = False

    @property
    def held(self) -> frozenset[str]:
        """The leases this instance believes it holds (``renew`` checks with the server)."""
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
        await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect, True)
        self._executor.shutdown(wait=True)

    # -- on the lease thread --------------------------------------------------------------------

    async def _run(self, fn: Callable[[str], T], name: str) -> T:
        if self._closed:
            raise StoreClosed("the lease is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, name)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._held.clear()  # a new session holds nothing
            with translate_errors():
                self._conn = psycopg.connect(self.url, autocommit=True, **_KEEPALIVE)
        return self._conn

    def _acquire_sync(self, name: str) -> bool:
        if name in self._held:
            return self._renew_sync(name)
        conn = self._connection()
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (lease_key(name),)).fetchone()
        except psycopg.Error:
            self._disconnect()
            return False
        if row is not None and row[0]:
            self._held.add(name)
            return True
        return False

    def _renew_sync(self, name: str) -> bool:
        conn = self._conn
        if name not in self._held or conn is None or conn.closed:
            self._held.discard(name)
            return False
        key = lease_key(name)
        try:
            row = conn.execute(_HELD, ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchone()
        except psycopg.Error:
            # The session is gone, or unusable: whatever it held, it holds no more.
            self._disconnect()
            return False
        if row is not None and row[0]:
            return True
        self._held.discard(name)
        return False

    def _release_sync(self, name: str) -> None:
        if name not in self._held:
            return
        self._held.discard(name)
        conn = self._conn
        if conn is None or conn.closed:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lease_key(name),))
        except psycopg.Error:
            self._disconnect()  # ending the session releases the lock as well

    def _disconnect(self, release: bool = False) -> None:
        self._held.clear()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            if release:
                # Closing alone frees the locks once the server has ended the session, a
                # moment later: release them first, so that another process's acquire
                # right after close() succeeds. Not after an error: the session may hang.
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock_all()")
            conn.close()
