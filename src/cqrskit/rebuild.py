"""Blue/green rebuild of one projection, safe while the live runner serves and applies.

1. The backend gives a fresh, empty place for the projection's tables
   (:meth:`~cqrskit.readside.ReadDatabase.open_rebuild`); the projection's schema is created
   there under its plain table names.
2. The log is streamed from position 0 in batches of ``batch_size`` (never loaded whole)
   into the fresh tables, reporting progress; the live tables keep answering queries and
   the live runner keeps applying new events meanwhile.
3. Swap, in ONE write transaction of the live database: take the live write lock (the
   checkpoint row's lock) and compare the live checkpoint with what the rebuild has
   processed. If the live runner is ahead (it applied events appended after the rebuild's
   last read), the rebuild catches up to it *while holding the lock*, so the live runner
   cannot move on meanwhile. Then the live tables are replaced by the rebuilt ones and the
   checkpoint is set to the rebuild's position, in the same commit. The checkpoint never
   moves back, so a reader never sees an older position.
4. The live runner's next batch finds the checkpoint moved (its compare-and-set, see
   :mod:`cqrskit.runner`), discards what it read and continues from the new checkpoint:
   nothing is applied twice, whichever process runs it.

A projection that parks (``on_failure = "park"``) parks in the fresh tables what the live
runner would park: an event whose handler fails, and the later events of its stream.

``until`` (a rewind, :meth:`~cqrskit.Operations.rewind`) stops the replay at that position
and swaps in whatever the live checkpoint is: the read model goes back to how it was then.
The process running the projection does this in its own task, between its batches.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._applier import Applier, HandlerFailed
from ._parking import Parking
from .checkpoints import complete_rebuild, lock_position, record_rebuild
from .errors import OperationalError, ProjectionError
from .eventstore import EventStore
from .messages import RecordedEvent
from .projection import Projection
from .readside import ReadDatabase, RebuildTarget, create_read_models, create_schema
from .sql import SqlTx

__all__ = ["RebuildProgress", "RebuildResult", "rebuild"]


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    done: int
    """Events read so far."""
    total: int
    """Events in the log (grows while appends go on)."""
    events_per_second: float


@dataclass(frozen=True, slots=True)
class RebuildResult:
    name: str
    position: int
    """The checkpoint the rebuilt tables were swapped in with."""
    events: int
    seconds: float
    events_per_second: float
    swap_attempts: int
    """1 unless the live runner got ahead of the rebuild while it was about to swap."""


class _Covered:
    """The positions a rebuild has processed, as sorted ranges (dense logs: one range)."""

    __slots__ = ("_ends", "_extra", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = [0]  # position 0 (nothing processed) is always covered
        self._ends: list[int] = [0]
        self._extra: set[int] = set()

    def add_batch(self, events: Sequence[RecordedEvent]) -> None:
        first, last = events[0].position, events[-1].position
        if last - first + 1 == len(events):
            self._add_range(first, last)
        else:  # a log with gaps in its positions
            for event in events:
                self._add_range(event.position, event.position)

    def _add_range(self, low: int, high: int) -> None:
        starts, ends = self._starts, self._ends
        if low == ends[-1] + 1:
            ends[-1] = high
        elif low > ends[-1]:
            starts.append(low)
            ends.append(high)
        else:  # read out of position order: rare, kept exactly
            self._extra.update(range(low, high + 1))

    def add(self, position: int) -> None:
        """A position known (by the store) to be covered though not processed as such."""
        self._extra.add(position)

    def __contains__(self, position: int) -> bool:
        if position in self._extra:
            return True
        i = bisect.bisect_right(self._starts, position) - 1
        return i >= 0 and position <= self._ends[i]


@dataclass(slots=True)
class _State:
    position: int = 0
    event_id: str | None = None
    done: int = 0
    total: int = 0
    beat: float = 0.0
    parked: int = 0


async def _write_batch(
    target: RebuildTarget,
    applier: Applier,
    events: Sequence[RecordedEvent],
    parking: Parking | None,
    state: _State,
    now: float,
) -> None:
    """One batch into the fresh tables: pipelined when the projection allows it. A
    pipelined batch that fails ran in a transaction that rolled back whole; it is run
    again without the pipeline, so the error names the event that caused it."""

    if parking is not None:
        await _write_parking(target, applier, events, parking, state, now)
        return

    def apply(tx: SqlTx, pipelined: bool) -> None:
        applier.apply(tx, events, pipelined=pipelined)
        applier.flush(tx)

    if applier.pipelined:
        try:
            await target.write(functools.partial(apply, pipelined=True), pipeline=True)
            return
        except Exception:
            pass  # attributed exactly below (or, if it was transient, simply applied)
    try:
        await target.write(functools.partial(apply, pipelined=False))
    except HandlerFailed as exc:
        record = exc.record
        position, type_name = (0, "") if record is None else (record.position, record.type)
        raise ProjectionError(applier.name, position, type_name, repr(exc.cause)) from exc.cause


async def _write_parking(
    target: RebuildTarget,
    applier: Applier,
    events: Sequence[RecordedEvent],
    parking: Parking,
    state: _State,
    now: float,
) -> None:
    """One batch of a parking projection: what fails is parked, its stream held, in the
    fresh tables, as the live runner would have done (without its retries: a rebuild is
    run on purpose, and the operator retries parked events)."""
    rest = list(events)
    while rest:
        try:
            state.parked += await target.write(
                functools.partial(_apply_parking, applier, parking, rest, now, None)
            )
            return
        except HandlerFailed as exc:
            bad = exc.record
            if bad is None:  # unpipelined: never, the failing event is always known
                raise
            cause = repr(exc.cause)
        i = next(i for i, e in enumerate(rest) if e is bad)
        before, rest = rest[:i], rest[i + 1 :]
        park = functools.partial(_apply_parking, applier, parking, before, now, (bad, cause))
        state.parked += await target.write(park)
        parking.held[bad.stream_id] = bad.position


def _apply_parking(
    applier: Applier,
    parking: Parking,
    events: Sequence[RecordedEvent],
    now: float,
    failed: tuple[RecordedEvent, str] | None,
    tx: SqlTx,
) -> int:
    """Apply ``events`` but park those of held streams, then park ``failed``; return how
    many were parked."""
    ready, held = Parking.split(events, parking.held)
    applier.apply(tx, ready, pipelined=False)
    if held:
        parking.park_held(tx, held, now)
    if failed is None:
        return len(held)
    parking.park_failed(tx, failed[0], failed[1], 1, now)
    return len(held) + 1


async def rebuild(
    store: EventStore,
    db: ReadDatabase,
    projection: Projection,
    *,
    on_progress: Callable[[RebuildProgress], None] | None = None,
    batch_size: int = 1000,
    heartbeat_interval: float = 1.0,
    max_swap_attempts: int = 1000,
    clock: Callable[[], float] = time.time,
    until: int | None = None,
) -> RebuildResult:
    """Rebuild ``projection`` from position 0 and swap it in atomically (module docstring);
    with ``until``, only up to that position (a rewind).

    Raises :class:`~cqrskit.errors.ProjectionError` when a handler fails and the projection
    does not park (the live tables are left untouched) and
    :class:`~cqrskit.errors.OperationalError` when the log never showed the live
    checkpoint's position in ``max_swap_attempts`` swaps.
    """
    name = projection.name
    applier = Applier(projection, store.codec)
    parking = Parking(name) if projection.on_failure == "park" else None
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    await create_read_models(db, ())
    target: RebuildTarget = await db.open_rebuild(projection)
    try:
        await target.write(functools.partial(create_schema, projection))
        covered = _Covered()
        state = _State(total=await store.lag_events(0, await store.head_position()))

        def report() -> None:
            state.total = max(state.total, state.done)
            if on_progress is not None:
                elapsed = time.monotonic() - started
                rate = state.done / elapsed if elapsed > 0 else 0.0
                on_progress(RebuildProgress(state.done, state.total, rate))

        async def heartbeat() -> None:
            if time.monotonic() - state.beat >= heartbeat_interval:
                state.beat = time.monotonic()
                state.total = await store.lag_events(0, await store.head_position())
                now, position = clock(), state.position
                await db.write(lambda tx: record_rebuild(tx, name, position, now))

        async def next_batch() -> int:
            """Read the batch after ``state.position`` and apply it to the fresh tables;
            return how many events it held. The batch is referenced from this frame only,
            so it is freed before the next one is read: one batch in memory at a time."""
            events = await store.read_all(state.position, batch_size)
            if until is not None and events and events[-1].position > until:
                # The rewind's end: what follows ``until`` is not replayed; a short batch
                # (or none) ends the catch-up.
                events = [e for e in events if e.position <= until]
            if not events:
                return 0
            await _write_batch(target, applier, events, parking, state, clock())
            covered.add_batch(events)
            state.position, state.event_id = events[-1].position, events[-1].event_id
            state.done += len(events)
            return len(events)

        async def catch_up(live: int | None) -> None:
            """Apply batches to the fresh tables up to the log's end (or ``until``) or, with
            ``live``, until that position is covered. One batch in memory at a time."""
            while live is None or live not in covered:
                read = await next_batch()
                if not read:
                    return
                if live is None:
                    await heartbeat()  # not under the live write lock: it writes there
                    if read < batch_size:
                        report()
                        return
                elif live not in covered and await store.position_reached(state.position, live):
                    covered.add(live)  # a backend whose positions our ranges cannot tell
                report()

        def decide(tx: SqlTx) -> bool:
            # Runs in the swap's transaction, holding the live write lock: no live batch can
            # commit until it ends, so the live checkpoint cannot move on meanwhile.
            live = lock_position(tx, name)
            if until is None and live not in covered:
                # The live runner applied events appended after the rebuild's last read:
                # the final catch-up, to at least where it is, under the lock.
                asyncio.run_coroutine_threadsafe(catch_up(live), loop).result()
                if live not in covered and not beyond_log(live):
                    return False
            complete_rebuild(tx, name, state.position, clock(), state.event_id, state.parked)
            return True

        def beyond_log(live: int) -> bool:
            """The live checkpoint is past the log's end: the live tables follow another
            log (or this one before a restore). Waiting cannot make the log reach it; the
            rebuilt tables replace them (see _lineage)."""
            head = asyncio.run_coroutine_threadsafe(store.head_position(), loop).result()
            return live > head

        for attempt in range(1, max_swap_attempts + 1):
            await catch_up(None)
            if await target.swap(decide):
                if store.codec.forgets:  # the old tables are gone: clear what the WAL kept
                    await db.scrub()
                seconds = time.monotonic() - started
                rate = state.done / seconds if seconds > 0 else 0.0
                if on_progress is not None:
                    on_progress(RebuildProgress(state.done, state.done, rate))
                return RebuildResult(name, state.position, state.done, seconds, rate, attempt)
        raise OperationalError(
            f"rebuild of {name!r}: could not catch up with the live checkpoint;"
            f" gave up after {max_swap_attempts} swap attempts"
        )
    except BaseException:
        with contextlib.suppress(Exception):  # the failure raised matters more than this
            await db.write(lambda tx: record_rebuild(tx, name, None, None))
        raise
    finally:
        await target.discard()
