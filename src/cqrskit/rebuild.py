"""Blue/green rebuild of one projection, safe while the live runner serves and applies.

1. The backend gives a fresh, empty place for the projection's tables
   (:meth:`~cqrskit.readside.ReadDatabase.open_rebuild`); the projection's schema is created
   there under its plain table names.
2. The log is streamed from position 0 in batches of ``batch_size`` (never loaded whole)
   into the fresh tables, reporting progress; the live tables keep answering queries and
   the live runner keeps applying new events meanwhile.
3. Swap, in ONE write transaction of the live database: under the write lock, the live
   checkpoint is compared with what the rebuild has processed. If the live runner is
   ahead (it applied events appended after the rebuild's last read), the swap is rolled
   back and the rebuild catches up further; otherwise the live tables are replaced by the
   rebuilt ones and the checkpoint is set to the rebuild's position, in the same commit.
   The checkpoint never moves back, so a reader never sees an older position.
4. The live runner's next batch finds the checkpoint moved (its compare-and-set, see
   :mod:`cqrskit.runner`), discards what it read and continues from the new checkpoint:
   nothing is applied twice, whichever process runs it.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .checkpoints import complete_rebuild, ensure_table, lock_position, record_rebuild
from .codec import Codec
from .errors import OperationalError, ProjectionError
from .messages import RecordedEvent
from .projection import Handler, Projection
from .readside import ReadDatabase, RebuildTarget
from .sql import SqlTx
from .store.base import EventStore

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


def _apply_batch(
    tx: SqlTx,
    name: str,
    handlers: dict[str, Handler],
    codec: Codec,
    events: Sequence[RecordedEvent],
) -> None:
    handler_for = handlers.get
    decode = codec.decode_payload
    record = None
    try:
        for record in events:
            handler = handler_for(record.type)
            if handler is not None:
                handler(tx, decode(record.type, record.schema_version, record.payload), record)
    except Exception as exc:
        assert record is not None
        raise ProjectionError(name, record.position, record.type, repr(exc)) from exc


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
) -> RebuildResult:
    """Rebuild ``projection`` from position 0 and swap it in atomically (module docstring).

    Raises :class:`~cqrskit.errors.ProjectionError` when a handler fails (the live tables
    are left untouched) and :class:`~cqrskit.errors.OperationalError` when the live runner
    kept getting ahead for ``max_swap_attempts`` swaps.
    """
    name = projection.name
    handlers = projection.handlers()
    codec = store.codec
    started = time.monotonic()
    await db.write(ensure_table)
    target: RebuildTarget = await db.open_rebuild(projection)
    try:
        await target.write(projection.create_schema)
        covered = _Covered()
        position = 0
        done = 0
        total = await store.lag_events(0, await store.head_position())
        beat = 0.0

        async def progress() -> None:
            nonlocal beat, total
            if time.monotonic() - beat >= heartbeat_interval:
                beat = time.monotonic()
                total = await store.lag_events(0, await store.head_position())
                now = clock()
                await db.write(lambda tx: record_rebuild(tx, name, position, now))
            total = max(total, done)
            if on_progress is not None:
                elapsed = time.monotonic() - started
                on_progress(RebuildProgress(done, total, done / elapsed if elapsed > 0 else 0.0))

        for attempt in range(1, max_swap_attempts + 1):
            while True:
                events = await store.read_all(position, batch_size)
                if not events:
                    break
                await target.write(
                    functools.partial(
                        _apply_batch, name=name, handlers=handlers, codec=codec, events=events
                    )
                )
                covered.add_batch(events)
                position = events[-1].position
                done += len(events)
                await progress()
                if len(events) < batch_size:
                    break
            live_seen: list[int] = []

            def decide(
                tx: SqlTx,
                position: int = position,
                now: float = clock(),
                seen: list[int] = live_seen,
            ) -> bool:
                # Runs under the live write lock: no live batch commits until we are done.
                live = lock_position(tx, name)
                seen.append(live)
                if live not in covered:
                    return False  # the live runner is ahead: catch up further first
                complete_rebuild(tx, name, position, now)
                return True

            if await target.swap(decide):
                seconds = time.monotonic() - started
                if on_progress is not None:
                    on_progress(RebuildProgress(done, done, done / seconds if seconds else 0.0))
                return RebuildResult(
                    name, position, done, seconds, done / seconds if seconds else 0.0, attempt
                )
            if live_seen and await store.position_reached(position, live_seen[-1]):
                covered.add(live_seen[-1])  # a backend whose positions our ranges cannot tell
        raise OperationalError(
            f"rebuild of {name!r}: the live runner kept getting ahead;"
            f" gave up after {max_swap_attempts} swap attempts"
        )
    except BaseException:
        with contextlib.suppress(Exception):  # the failure raised matters more than this
            await db.write(lambda tx: record_rebuild(tx, name, None, None))
        raise
    finally:
        await target.discard()
