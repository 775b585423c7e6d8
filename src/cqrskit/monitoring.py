"""How far behind the log each projection is: positions, lag in events and seconds, state.

:func:`projection_status` answers from the checkpoint table and the event store alone, so
any process can ask (the ``status`` CLI, an API process that runs no projection); a
running :class:`~cqrskit.runner.ProjectionRunner` answers the same with its own live view.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ._lineage import divergence
from .checkpoints import CheckpointRow, read_rows
from .errors import PersistenceError
from .eventstore import EventStore
from .readside import ReadDatabase

__all__ = [
    "REBUILD_HEARTBEAT_TIMEOUT",
    "STALE_AFTER",
    "STATES",
    "ProjectionStatus",
    "RateMeter",
    "lag_seconds",
    "projection_status",
    "read_checkpoints",
    "status_of",
]

STATES = frozenset(
    {"running", "catching_up", "stopped", "error", "rebuilding", "standby", "stalled"}
)

REBUILD_HEARTBEAT_TIMEOUT = 10.0

STALE_AFTER = 30.0
"""A row that says running but was not written for this long (six missed heartbeats of an
idle runner, or one batch stuck that long) is reported as "stalled": its process may be
gone (SIGKILL leaves no "stopped" behind). Any runner writing the row again clears it."""
"""A rebuild whose heartbeat is older than this (seconds) is taken as dead."""


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    position: int
    """Last position the read model has processed."""
    head: int
    """Last position of the log."""
    lag_events: int
    """Events still to process."""
    lag_seconds: float
    """Age of the oldest unprocessed event (0 when caught up)."""
    state: str
    """One of :data:`STATES`."""
    events_per_second: float
    error: str | None

    def to_dict(self, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The figures as a dict, every one or only ``fields`` (in that order)."""
        every = asdict(self)
        return every if fields is None else {name: every[name] for name in fields}


class RateMeter:
    """Events per second over a sliding window, fed once per batch (not per event)."""

    __slots__ = ("_clock", "_samples", "_started", "window")

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self._started = clock()

    def add(self, count: int) -> None:
        now = self._clock()
        self._samples.append((now, count))
        self._trim(now)

    def rate(self) -> float:
        now = self._clock()
        self._trim(now)
        if not self._samples:
            return 0.0
        span = min(self.window, now - self._started)
        return sum(c for _, c in self._samples) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        samples = self._samples
        while samples and samples[0][0] < now - self.window:
            samples.popleft()


async def lag_seconds(store: EventStore, position: int, head: int, now: float) -> float:
    """Age of the oldest event after ``position`` (0 when caught up)."""
    if head <= position:
        return 0.0
    recorded = await store.recorded_at(position)
    return 0.0 if recorded is None else max(0.0, now - recorded)


async def status_of(
    store: EventStore,
    name: str,
    row: CheckpointRow | None,
    head: int,
    now: float,
    *,
    state: str | None = None,
    position: int | None = None,
    events_per_second: float | None = None,
) -> ProjectionStatus:
    """One projection's figures from its checkpoint row, overridable by a live runner."""
    live_state = state
    if position is None:
        position = 0 if row is None else row.position
    if state is None:
        state = "stopped" if row is None else row.state
        if (
            row is not None
            and state in ("running", "catching_up")
            and row.updated_at is not None
            and now - row.updated_at > STALE_AFTER
        ):
            state = "stalled"
    if (
        row is not None
        and row.rebuild_updated_at is not None
        and now - row.rebuild_updated_at < REBUILD_HEARTBEAT_TIMEOUT
        and state != "error"
    ):
        state = "rebuilding"
    if events_per_second is None:
        events_per_second = 0.0 if row is None else row.events_per_second
    error = None if row is None else row.error
    # A live runner checked its checkpoint against the log when it took the projection;
    # a reader of the table alone (status, an API-only process) checks it here: one read
    # of the log per projection, and none on the runner's status (scraped for metrics).
    if (
        live_state is None
        and row is not None
        and (reason := await divergence(store, row.position, row.event_id))
    ):
        # Not reset yet (that happens when a runner takes the projection): say why.
        state, error = "error", f"projection {name!r} does not follow this log: {reason}"
    lag = await store.lag_events(position, head)
    return ProjectionStatus(
        name=name,
        position=position,
        head=head,
        lag_events=lag,
        lag_seconds=await lag_seconds(store, position, head, now),
        state=state,
        events_per_second=events_per_second,
        error=error,
    )


async def read_checkpoints(db: ReadDatabase, names: list[str]) -> dict[str, CheckpointRow]:
    """The checkpoint rows of ``names``; none when the table does not exist yet."""
    try:
        return await db.read(lambda tx: read_rows(tx, names))
    except PersistenceError:
        return {}  # no runner has created the table yet: nothing has run


async def projection_status(
    store: EventStore,
    db: ReadDatabase,
    names: Sequence[str],
    *,
    clock: Callable[[], float] = time.time,
) -> list[ProjectionStatus]:
    """Status of ``names`` as recorded in the read database, for processes that only read."""
    rows = await read_checkpoints(db, list(names))
    head = await store.head_position()
    now = clock()
    return [await status_of(store, name, rows.get(name), head, now) for name in names]
