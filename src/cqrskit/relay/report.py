"""The relay's report of itself in the app's read database (``cqrskit_relays``): what
:func:`cqrskit.monitoring.relay_reports` shows every process of the app, the operations
console among them, without reaching the broker.

A report only: the relay resumes from the broker stream's last message, never from this
row. So a report is written between batches, throttled (progress at most once a second, a
heartbeat every :data:`HEARTBEAT` seconds while running or waiting, so that a process gone
is seen "stalled" after :data:`~cqrskit.monitoring.STALE_AFTER`), and a report that
cannot be written costs one warning line, never the relay.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from .._relays import ACTIVE, ensure_relays_table, write_report
from ..monitoring import STALE_AFTER
from ..readside import ReadDatabase

__all__ = ["HEARTBEAT", "PROGRESS", "Reporter"]

log = logging.getLogger("cqrskit.relay")

PROGRESS = 1.0
"""Seconds between two reports of progress (positions moved) in the same state."""
HEARTBEAT = 5.0
"""Seconds between two reports while running or waiting with nothing new to say."""


class Reporter:
    """Keeps the row of ``stream`` in ``db`` (see the module docstring)."""

    def __init__(
        self,
        db: ReadDatabase,
        stream: str,
        *,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.stream = stream
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self._clock = clock
        self._table = False
        self._written: tuple[str, int | None] | None = None
        self._written_at = 0.0
        self._tried_at: float | None = None
        self._failure: str | None = None

    async def report(self, state: str, position: int | None, *, now: bool = False) -> None:
        """Report ``state`` at ``position`` (None: not known now, the row keeps the last
        one reported) if it is time to: a change of state, progress after :data:`PROGRESS`
        seconds, a heartbeat after :data:`HEARTBEAT`; ``now``: whatever the time."""
        at = self._clock()
        if not now and not self._due(state, position, at):
            return
        self._tried_at = at
        reported = (state, position)
        try:
            if not self._table:
                await self.db.write_schema(ensure_relays_table)
                self._table = True
            await self.db.write(
                lambda tx: write_report(
                    tx, self.stream, position, state, at, self.holder, stale_before=at - STALE_AFTER
                )
            )
        except Exception as exc:  # the report is not the relay's business: go on without it
            why = str(exc) or type(exc).__name__
            if why != self._failure:  # one line per cause, not one per attempt
                log.warning("relay %s: could not report to the read database: %s", self.stream, why)
                self._failure = why
            return
        self._failure = None
        self._written, self._written_at, self._tried_at = reported, at, None

    def _due(self, state: str, position: int | None, at: float) -> bool:
        if self._tried_at is not None and at - self._tried_at < PROGRESS:
            return False  # the last attempt failed: not again before a second has passed
        if self._written is None or self._written[0] != state:
            return True
        if state not in ACTIVE:
            return False
        since = at - self._written_at
        if self._written[1] != position:
            return since >= PROGRESS
        return since >= HEARTBEAT
