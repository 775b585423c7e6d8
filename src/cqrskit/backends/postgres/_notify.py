"""Wake-ups across processes for the PostgreSQL event store: NOTIFY after commit, LISTEN.

``NOTIFY`` inside a transaction takes a server-wide lock at commit that is held until the
commit is flushed, which would make notifying appends commit one at a time. So appends
do not notify in their transaction: :class:`Notifier` sends one
``pg_notify(CHANNEL, position)`` per burst of commits from its own connection and thread,
and :class:`Listener` LISTENs on a dedicated connection in other processes. Both are
hints: reads stay the truth, and subscribers poll as a fallback.

**Only while someone listens.** A notification is a transaction of its own, with an id
and a flushed commit: with one client, as many as the appends themselves (measured: a
fifth of the commands per second of one client). Subscribers in the appending process
never need one (they are woken at commit). So a listener holds the shared advisory lock
:data:`LISTENING` on its connection, and the notifier looks for holders with a try of the
same lock in exclusive mode, which fails while any listener holds it: when it found
none, it sends nothing and looks again, at the next burst, :data:`RECHECK` seconds later.
A listener that starts meanwhile hears nothing for that long at most; its waiters look
at the log when it connects, and poll.

Connections: one each (the notifier's once something was appended, the listener's once
something waited), to the event store's database, named ``cqrskit-notify`` and
``cqrskit-listen`` in ``pg_stat_activity`` unless the URL names them. The listener's must
be a *session* of its own (LISTEN belongs to the server session: no PgBouncer transaction
pooling in between).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

__all__ = ["CHANNEL", "Listener", "Notifier"]

CHANNEL = "cqrskit_events"
"""The LISTEN/NOTIFY channel appends are announced on (a hint: reads are the truth)."""

_LISTEN_TIMEOUT = 2.0
"""How often the listener looks whether it should stop when no notification woke it."""

LISTENING = (1668379251, 3)
"""The advisory lock (classid "cqrs", 3) every listener holds, shared, for its session:
(1668379251, 1) and (1668379251, 2) are the log's allocation lock and append mark."""

RECHECK = 0.05
"""Seconds between two looks for listeners while none was found (one per second while
some were)."""

_RECHECK_LISTENED = 1.0

_ANYONE_LISTENING = "SELECT NOT pg_try_advisory_xact_lock(%s, %s)"
"""True while a listener holds :data:`LISTENING` (in autocommit, a lock taken here is
released as the statement ends; a notifier of another process trying at the same instant
also makes it true: one notification too many, harmless)."""


class Notifier:
    """Sends ``pg_notify(CHANNEL, position)`` after commits, one per burst, from its own
    connection; the payload is the highest position committed in the burst."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._latest = 0
        self.backend_pid: int | None = None
        """The server process of the notifying connection (notifications carry it)."""
        self._pending = threading.Event()
        self._listened = False
        """Whether the last look found listeners (written by the thread only)."""
        self._looked = float("-inf")
        """When listeners were last looked for (``time.monotonic()``)."""
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def poke(self, position: int) -> None:
        if position > self._latest:
            self._latest = position
        if not self._listened and time.monotonic() - self._looked < RECHECK:
            return  # nobody listened a moment ago: not even a wake of the thread
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._stopping:
                    self._thread = threading.Thread(
                        target=self._main, name="cqrskit-notify", daemon=True
                    )
                    self._thread.start()
        self._pending.set()

    def _main(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            self._pending.wait()
            if self._stopping:
                break
            self._pending.clear()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        self._url, autocommit=True, fallback_application_name="cqrskit-notify"
                    )
                    self.backend_pid = conn.info.backend_pid
                now = time.monotonic()
                if now - self._looked >= (_RECHECK_LISTENED if self._listened else RECHECK):
                    row = conn.execute(_ANYONE_LISTENING, LISTENING).fetchone()
                    self._listened, self._looked = bool(row and row[0]), now
                if self._listened:
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(self._latest)))
            except psycopg.Error:
                # Subscribers fall back to polling; retry the connection at the next commit.
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        with self._start_lock:
            self._stopping = True
        self._pending.set()
        if self._thread is not None:
            self._thread.join()


class Listener:
    """LISTENs on a dedicated connection and calls ``wake`` with each notification's
    payload and sender's server pid (``("", 0)`` after a reconnection: notifications may
    have been lost meanwhile)."""

    def __init__(self, url: str, wake: Callable[[str, int], None]) -> None:
        self._url = url
        self._wake = wake
        self._stop_channel = f"cqrskit_stop_{uuid.uuid4().hex}"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="cqrskit-listen", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self._url, autocommit=True, fallback_application_name="cqrskit-listen"
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f"LISTEN {self._stop_channel}")
                    # Held until the session ends: notifiers send while it is held.
                    conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", LISTENING)
                    self._wake("", 0)  # notifications sent while we were not listening are lost
                    while not self._stopping.is_set():
                        for notification in conn.notifies(timeout=_LISTEN_TIMEOUT):
                            if self._stopping.is_set():
                                return
                            self._wake(notification.payload, notification.pid)
            except psycopg.Error:
                self._stopping.wait(1.0)  # server away: subscribers poll meanwhile

    def stop(self, notify: Callable[[str], object] | None = None) -> None:
        """Stop the listener and wait for its thread. ``notify(statement)`` runs the
        ``NOTIFY`` that wakes it at once on a connection the caller has (the store's
        pool: no connection beyond the budget); without it, on a connection of its own.
        If that fails the listener still exits, at its next ``notifies()`` timeout."""
        self._stopping.set()
        statement = f"NOTIFY {self._stop_channel}"
        if notify is not None:
            with contextlib.suppress(Exception):
                notify(statement)
        else:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(self._url, autocommit=True) as conn,
            ):
                conn.execute(statement)
        self._thread.join()
