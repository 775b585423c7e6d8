"""How far behind the log each projection is: positions, lag in events and seconds, state.

:func:`projection_status` answers from the checkpoint table and the event store alone, so
any process can ask (the ``status`` CLI, an API process that runs no projection); a
running :class:`~cqrskit.runner.ProjectionRunner` answers the same with its own live view.
:func:`relay_reports` does the same for the relays to a broker, from the rows they report
(``cqrskit._relays``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ._lineage import divergence
from ._relays import ACTIVE, read_reports
from .checkpoints import CheckpointRow, ProjectionFailure, read_rows
from .errors import DamagedDatabase, PersistenceError
from .eventstore import EventStore
from .readside import ReadDatabase

__all__ = [
    "REBUILD_HEARTBEAT_TIMEOUT",
    "STALE_AFTER",
    "STATES",
    "ProjectionStatus",
    "RateMeter",
    "RelayReport",
    "lag_seconds",
    "projection_status",
    "read_checkpoints",
    "readiness",
    "relay_reports",
    "status_of",
]

STATES = frozenset(
    {"running", "catching_up", "stopped", "error", "rebuilding", "standby", "stalled", "paused"}
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
    error: ProjectionFailure | None
    """Why it stopped, when its state is "error"."""
    parked: int = 0
    """Events set aside by a projection that parks (``on_failure = "park"``)."""

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
    error: ProjectionFailure | None = None,
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
    if error is None and row is not None:
        error = row.failure_cause()
    # A live runner checked its checkpoint against the log when it took the projection;
    # a reader of the table alone (status, an API-only process) checks it here: one read
    # of the log per projection, and none on the runner's status (scraped for metrics).
    if (
        live_state is None
        and row is not None
        and (reason := await divergence(store, row.position, row.event_id))
    ):
        # Not reset yet (that happens when a runner takes the projection): say why.
        message = f"projection {name!r} does not follow this log: {reason}"
        state, error = "error", ProjectionFailure(row.position, "", "", "", message, 1, now)
    lag = await store.lag_events(position, head)
    try:
        seconds = await lag_seconds(store, position, head, now)
    except DamagedDatabase as exc:  # the log's file: say so, rather than fail the status
        seconds, state = 0.0, "error"
        error = error or ProjectionFailure(
            position, "", "", "", f"cannot read the log: {exc}", 1, now
        )
    return ProjectionStatus(
        name=name,
        position=position,
        head=head,
        lag_events=lag,
        lag_seconds=seconds,
        state=state,
        events_per_second=events_per_second,
        error=error,
        parked=0 if row is None else int(row.parked),
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


@dataclass(frozen=True, slots=True)
class RelayReport:
    """A relay's progress as it last reported it, with the lag behind the log now."""

    stream: str
    """The broker stream it publishes to."""
    position: int | None
    """The log position the broker stream ends at (None: not known yet)."""
    head: int
    """Last position of the log."""
    lag_events: int | None
    """Events of the log after ``position``: not acknowledged by the broker when the
    relay last reported (None: ``position`` unknown)."""
    lag_seconds: float | None
    """Age of the oldest of them now (0 when caught up)."""
    state: str
    """``running`` (publishing), ``waiting`` (for the broker or the database: retrying),
    ``standby`` (another process holds the stream), ``stopped``, or ``stalled``: it said
    running or waiting but has not reported for :data:`STALE_AFTER` seconds (its process
    may be gone)."""
    updated_at: float
    """Epoch seconds of its last report."""
    holder: str
    """The process that reported it, ``host:pid``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def relay_reports(
    store: EventStore, db: ReadDatabase, *, clock: Callable[[], float] = time.time
) -> list[RelayReport]:
    """What each relay of the app last reported (by stream), for any process: read from
    the read database, never from the broker. The lag is measured against the log now."""
    rows = await db.read(read_reports)
    if not rows:
        return []
    head = await store.head_position()
    now = clock()
    found = []
    for stream, position, state, updated_at, holder in rows:
        if state in ACTIVE and now - updated_at > STALE_AFTER:
            state = "stalled"
        behind = seconds = None
        if position is not None:
            behind = await store.lag_events(position, head)
            seconds = round(await lag_seconds(store, position, head, now), 3)
        found.append(
            RelayReport(stream, position, head, behind, seconds, state, updated_at, holder)
        )
    return found


async def readiness(
    store: EventStore, db: ReadDatabase, status: Callable[[], Awaitable[list[ProjectionStatus]]]
) -> list[str]:
    """Why a deployment is not ready to serve, one reason per line (empty when it is): a
    database that does not answer, or a projection stopped in error or stalled (its runner
    died or hangs: judged by the heartbeat it writes, not by its lag, which may be long
    for good reasons). A paused projection is the operator's choice: ready."""
    reasons = []
    for what, probe in (("event store", store.head_position), ("read database", db_probe(db))):
        try:
            await probe()
        except Exception as exc:
            reasons.append(f"{what} does not answer: {exc}")
    if reasons:
        return reasons
    for s in await status():
        if s.state == "error":
            cause = "" if s.error is None else f" at position {s.error.position}: {s.error.message}"
            reasons.append(f"projection {s.name} stopped in error{cause}")
        elif s.state == "stalled":
            reasons.append(
                f"projection {s.name} stalled: its runner has not reported for {STALE_AFTER:g}s"
            )
    return reasons


def db_probe(db: ReadDatabase) -> Callable[[], Awaitable[object]]:
    return lambda: db.read(lambda tx: tx.fetchone("SELECT 1"))
