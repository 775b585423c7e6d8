"""Operating projections from any process: pause, resume, retry or skip parked events,
restart, rewind; and what is parked, and who did what.

::

    ops = app.operations
    await ops.pause("posts", by="alice", reason="migrating the posts table")
    await ops.resume("posts", by="alice")
    for event in await ops.parked("posts"):
        print(event.position, event.stream_id, event.error)
    await ops.retry("posts", by="alice", reason="fixed in 1.4.2")           # all, in log order
    await ops.skip("posts", stream_id="post-42", by="alice", reason="spam, deleted")
    await ops.rewind("posts", position=1200, by="alice", reason="bad deploy at 1201")

Each call records the action (``cqrskit_actions`` in the read database) and returns it
once the process running the projection has carried it out, or, after ``wait`` seconds,
still "pending" (no process runs the projection now: the next one to run it does it). An
action never runs beside one of the projection's batches (see :mod:`cqrskit.actions`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ._parking import ParkedEvent, Parking
from .actions import Action, ActionKind, insert_action, read_action, read_actions
from .errors import InvalidAction, UnknownProjection
from .eventstore import EventStore
from .projection import Projection
from .readside import ReadDatabase, create_read_models

__all__ = ["Operations", "position_at"]

DEFAULT_WAIT = 10.0
"""Seconds an action call waits for the process running the projection to carry it out."""


async def position_at(store: EventStore, moment: float) -> int:
    """The position of the last event recorded at or before ``moment`` (epoch seconds):
    a binary search over the log, one read per step."""
    low, high = 0, await store.head_position()
    while low < high:  # the smallest p whose next event (if any) is after the moment
        middle = (low + high) // 2
        after = await store.recorded_at(middle)
        if after is None or after > moment:
            high = middle
        else:
            low = middle + 1
    if low == 0:
        return 0
    found = await store.read_all(low - 1, 1)  # positions may have gaps: the event itself
    return low if found and found[0].position == low else max(0, low - 1)


class Operations:
    """Operator actions and views over the projections of one app (see the module)."""

    def __init__(
        self,
        store: EventStore,
        db: ReadDatabase,
        projections: Sequence[Projection],
        *,
        nudge: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._db = db
        self._projections = {p.name: p for p in projections}
        self._nudge = nudge
        self._clock = clock
        self._ready = False

    def projection(self, name: str) -> Projection:
        try:
            return self._projections[name]
        except KeyError:
            raise UnknownProjection(name, list(self._projections)) from None

    # -- actions -------------------------------------------------------------------------------

    async def pause(
        self, name: str, *, by: str = "", reason: str = "", wait: float = DEFAULT_WAIT
    ) -> Action:
        """Stop applying events (after the current batch), until :meth:`resume`; kept
        across restarts. Queries go on answering, from a read model that stops moving."""
        return await self.request(name, "pause", {}, by=by, reason=reason, wait=wait)

    async def resume(
        self, name: str, *, by: str = "", reason: str = "", wait: float = DEFAULT_WAIT
    ) -> Action:
        return await self.request(name, "resume", {}, by=by, reason=reason, wait=wait)

    async def restart(
        self, name: str, *, by: str = "", reason: str = "", wait: float = DEFAULT_WAIT
    ) -> Action:
        """Start a projection stopped in "error" again, from its checkpoint (after fixing
        the cause), without restarting the process."""
        return await self.request(name, "restart", {}, by=by, reason=reason, wait=wait)

    async def retry(
        self,
        name: str,
        *,
        stream_id: str | None = None,
        by: str = "",
        reason: str = "",
        wait: float = DEFAULT_WAIT,
    ) -> Action:
        """Apply parked events again, one stream's or all, in log order; a stream whose
        event fails again stays held behind it (the action then ends "failed", saying so)."""
        self._parks(name)
        args = {} if stream_id is None else {"stream_id": stream_id}
        return await self.request(name, "retry", args, by=by, reason=reason, wait=wait)

    async def skip(
        self,
        name: str,
        *,
        reason: str,
        stream_id: str | None = None,
        position: int | None = None,
        by: str = "",
        wait: float = DEFAULT_WAIT,
    ) -> Action:
        """Give up on parked events: one (``position``), one stream's, or all, parked so
        far. They are never applied (a rebuild would apply, or park, them again)."""
        self._parks(name)
        if not reason.strip():
            raise InvalidAction("skipping parked events needs a reason")
        await self._ensure_tables()
        parking = Parking(name)
        rows = await self._db.read(lambda tx: parking.rows(tx, stream_id))
        args: dict[str, Any] = {"through": max((r.position for r in rows), default=0)}
        if stream_id is not None:
            args["stream_id"] = stream_id
        if position is not None:
            args["position"] = position
        return await self.request(name, "skip", args, by=by, reason=reason, wait=wait)

    async def rewind(
        self,
        name: str,
        *,
        position: int | None = None,
        to_time: float | datetime | None = None,
        by: str = "",
        reason: str = "",
        wait: float = DEFAULT_WAIT,
    ) -> Action:
        """Take the read model back to how it was at ``position`` (or at ``to_time``):
        rebuilt from the log up to there in fresh tables and swapped in, then the
        projection goes on from there. No event is applied over rows that have it."""
        self.projection(name)
        if (position is None) == (to_time is None):
            raise InvalidAction("rewind needs exactly one of position and to_time")
        if to_time is not None:
            moment = to_time.timestamp() if isinstance(to_time, datetime) else float(to_time)
            position = await position_at(self._store, moment)
        assert position is not None
        if position < 0:
            raise InvalidAction(f"cannot rewind to a negative position ({position})")
        args = {"position": position}
        return await self.request(name, "rewind", args, by=by, reason=reason, wait=wait)

    async def request(
        self,
        name: str,
        action: ActionKind,
        args: dict[str, Any],
        *,
        by: str,
        reason: str,
        wait: float,
    ) -> Action:
        """Record ``action`` and wait up to ``wait`` seconds for it to be carried out."""
        self.projection(name)
        await self._ensure_tables()
        now = self._clock()
        asked = await self._db.write(
            lambda tx: insert_action(tx, name, action, args, by, reason, now)
        )
        if self._nudge is not None:
            self._nudge(name)
        return await self.wait(asked.id, wait) or asked

    async def wait(self, action_id: str, timeout: float) -> Action | None:
        """The action once it is done or failed, or as it stands after ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            found = await self._db.read(lambda tx: read_action(tx, action_id))
            if found is None or found.state != "pending" or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.2)

    # -- views ---------------------------------------------------------------------------------

    async def parked(
        self, name: str, *, stream_id: str | None = None, limit: int = 100
    ) -> list[ParkedEvent]:
        """Parked events of ``name`` in log order (none for a projection that stops)."""
        if self.projection(name).on_failure != "park":
            return []
        await self._ensure_tables()
        parking = Parking(name)
        return await self._db.read(lambda tx: parking.rows(tx, stream_id, limit))

    async def history(self, name: str | None = None, *, limit: int = 50) -> list[Action]:
        """The latest actions, newest first: who asked what, when, why, and the outcome."""
        if name is not None:
            self.projection(name)
        await self._ensure_tables()
        return await self._db.read(lambda tx: read_actions(tx, name, limit))

    # -- helpers -------------------------------------------------------------------------------

    def _parks(self, name: str) -> None:
        if self.projection(name).on_failure != "park":
            raise InvalidAction(
                f"projection {name!r} does not park events (its on_failure is 'stop')"
            )

    async def _ensure_tables(self) -> None:
        """The read side's tables exist once a runner started; a process that only
        operates may come first (a fresh database): it creates them like a runner."""
        if not self._ready:
            await create_read_models(self._db, list(self._projections.values()))
            self._ready = True
