"""One projection inside a runner: its state, retries, parking and failover. Its batch
transaction, where exactly-once comes from, is :mod:`cqrskit._batch`'s.

A projection that parks (``on_failure = "park"``, see :mod:`cqrskit._parking`) parks an
event that keeps failing in a transaction of its own that also moves the checkpoint past
it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal

from ._applier import Applier, HandlerFailed
from ._batch import commit_batch, deferred_failure
from ._lineage import divergence
from ._parking import Parking, error_of, trace
from .backoff import RetryPolicy, backoff_delays
from .checkpoints import (
    CHECKPOINT_TABLE,
    ProjectionFailure,
    add_parked,
    lock_position,
    read_mark,
    record_error,
    record_state,
    reset_position,
    write_position,
)
from .errors import (
    DamagedDatabase,
    ProjectionError,
    StoreClosed,
)
from .eventstore import EventStore
from .messages import RecordedEvent
from .monitoring import RateMeter
from .projection import Projection
from .readside import ReadDatabase, create_schema, owned_tables
from .sql import SqlTx

__all__ = ["ACTIVE", "Outcome", "Worker"]

log = logging.getLogger("cqrskit.runner")

ACTIVE = frozenset({"running", "catching_up"})

Outcome = Literal["applied", "moved", "failed", "retry"]


def infrastructure_backoff() -> Iterator[float]:
    """Delays after failures of the store or the read database (no event to blame)."""
    return backoff_delays(0.05, 2.0, jitter=True)


class Worker:
    """The state of one projection inside a runner, and what it does to the read database."""

    def __init__(
        self,
        projection: Projection,
        store: EventStore,
        db: ReadDatabase,
        retry: RetryPolicy,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.projection = projection
        self.name = projection.name
        self.applier = Applier(projection, store.codec)
        self._store = store
        self._db = db
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self.checkpoint = 0
        self.state = "stopped"
        self.error: ProjectionError | None = None
        self.failure: ProjectionFailure | None = None
        """The cause of the error state, as recorded."""
        self.parking = Parking(self.name) if projection.on_failure == "park" else None
        self.paused: dict[str, Any] | None = None
        """Who paused the projection, when and why (None: not paused)."""
        self._nudge: asyncio.Future[None] | None = None
        self.actions_checked = float("-inf")
        self.meter = RateMeter()
        self.committed = asyncio.Event()
        """Set (and replaced) after each commit: wakes in-process ``wait_for`` calls."""
        self.pause = infrastructure_backoff()
        """Delays after failures of the store or the read database (reset on success)."""
        self.leased = False
        self.lease_renewed = 0.0
        self.beat = 0.0
        """Clock time this runner last wrote the projection's row (batch or heartbeat)."""
        self.task: asyncio.Task[None] | None = None

    def nudged(self) -> asyncio.Future[None]:
        """Done once an action was asked in this process (:meth:`nudge`): one future that
        idle waits share until then (an event's ``wait()`` is a task per wait)."""
        if self._nudge is None:
            self._nudge = asyncio.get_running_loop().create_future()
        return self._nudge

    def nudge(self) -> None:
        if not self.nudged().done():
            self.nudged().set_result(None)

    def take_nudge(self) -> bool:
        """Whether it was nudged; the next :meth:`nudged` is a fresh future."""
        nudged = self._nudge is not None and self._nudge.done()
        if nudged:
            self._nudge = None
        return nudged

    def moved_to(self, checkpoint: int) -> None:
        self.checkpoint = checkpoint
        committed, self.committed = self.committed, asyncio.Event()
        committed.set()

    # -- batches --------------------------------------------------------------------------------

    async def apply(
        self, events: Sequence[RecordedEvent], state: str, go: asyncio.Event | None = None
    ) -> Outcome:
        """Apply ``events`` with retries; split a batch that keeps failing so that every
        event before the failing one commits, then stop in "error" at that event."""
        failure: HandlerFailed | None = None
        tries = 0
        delays = self._retry.delays()
        loop = asyncio.get_running_loop()
        signal = None if go is None else functools.partial(loop.call_soon_threadsafe, go.set)
        # Deferred on PostgreSQL: a short batch commits in one round trip (PgTx).
        pipelined = self.projection.pipelined
        deferred = False  # did the database defer the batch's statements (see _batch)?
        while True:
            batch = functools.partial(
                commit_batch,
                name=self.name,
                checkpoint=self.checkpoint,
                applier=self.applier,
                parking=self.parking,
                events=events,
                state=state,
                now=self._clock(),
                rate=self.meter.rate(),
                go=signal,
            )

            def commit(tx: SqlTx, batch: Callable[[SqlTx], int | None] = batch) -> int | None:
                nonlocal deferred
                deferred = tx.deferred
                return batch(tx)

            tries += 1
            try:
                moved = await self._db.write(commit, pipeline=pipelined)
            except StoreClosed:
                raise
            except HandlerFailed as exc:
                failure = exc
            except DamagedDatabase as exc:
                # Retrying cannot help; the message names the file. Set aside at the next
                # start (create_read_models), the read side is then rebuilt from the log.
                cause = f"{exc}: restart to set it aside and rebuild the read side"
                await self.fail(error_of(self.name, events[0], cause, tries))
                return "failed"
            except Exception as exc:
                found = (
                    await deferred_failure(self._db, self.name, self.checkpoint, exc)
                    if deferred
                    else None
                )
                if isinstance(found, int):
                    return self._committed(events, found)
                if found is None:
                    # The database failed, not a handler: no event is to blame, so no
                    # error state. Back off and read the batch again: it may come back.
                    pause = next(self.pause)
                    log.warning(
                        "projection %s: the read database failed, retrying in %.3fs",
                        self.name,
                        pause,
                        exc_info=True,
                    )
                    await self._sleep(pause)
                    return "retry"
                failure = found
            else:
                return self._committed(events, moved)
            delay = next(delays, None)
            if delay is None:
                break
            log.warning(
                "projection %s: batch after %d failed (%r), retrying in %.3fs",
                self.name,
                self.checkpoint,
                failure.cause,
                delay,
            )
            await asyncio.sleep(delay)
        if len(events) == 1:
            error = error_of(self.name, events[0], repr(failure.cause), tries)
            if self.parking is not None:
                return await self._park(events[0], error, state)
            await self.fail(error)
            return "failed"
        return await self._bisect(events, failure.record, state, go)

    async def _park(self, record: RecordedEvent, error: ProjectionError, state: str) -> Outcome:
        """Park ``record`` (its handler kept failing) and move the checkpoint past it, in
        one transaction; its stream is held from then on."""
        parking = self.parking
        assert parking is not None
        now, rate = self._clock(), self.meter.rate()

        def park(tx: SqlTx) -> int | None:
            stored = lock_position(tx, self.name)  # the same compare-and-set as a batch's
            if stored != self.checkpoint:
                return stored
            parking.park_failed(tx, record, error.cause, error.attempts, now)
            add_parked(tx, self.name, 1)
            write_position(tx, self.name, record.position, state, now, rate, record.event_id)
            return None

        try:
            moved = await self._db.write(park)
        except StoreClosed:
            raise
        except Exception:
            pause = next(self.pause)
            log.warning("projection %s: could not park, retrying in %.3fs", self.name, pause)
            await self._sleep(pause)
            return "retry"
        if moved is None:
            parking.held[record.stream_id] = record.position
            log.warning(
                "projection %r: parked the event at position %d (%s, %s) after %d tries:"
                " %s; stream %s held%s",
                self.name,
                record.position,
                record.type,
                record.event_id,
                error.attempts,
                error.cause,
                record.stream_id,
                trace(record),
            )
        return self._committed([record], moved)

    async def _bisect(
        self,
        events: Sequence[RecordedEvent],
        culprit: RecordedEvent | None,
        state: str,
        go: asyncio.Event | None,
    ) -> Outcome:
        """Commit what precedes the failing event, then isolate it (halves when unknown)."""
        if culprit is not None:
            i = next(i for i, e in enumerate(events) if e is culprit)
            parts = [events[:i], events[i : i + 1], events[i + 1 :]]
        else:
            half = len(events) // 2
            parts = [events[:half], events[half:]]
        for part in parts:
            if part:
                outcome = await self.apply(part, state, go)
                if outcome != "applied":
                    return outcome
        return "applied"

    def _committed(self, events: Sequence[RecordedEvent], moved: int | None) -> Outcome:
        if moved is None:
            self.meter.add(len(events))
            self.moved_to(events[-1].position)
            self.beat = self._clock()
            return "applied"
        log.info(
            "projection %s: checkpoint moved from %d to %d elsewhere; batch discarded",
            self.name,
            self.checkpoint,
            moved,
        )
        self.moved_to(moved)
        return "moved"

    # -- the projection's row -------------------------------------------------------------------

    async def fail(self, error: ProjectionError) -> None:
        self.state = "error"
        self.error = error
        now = self._clock()
        self.failure = failure = ProjectionFailure.of(error, since=now)
        log.error("%s", error)
        try:
            await self._db.write(lambda tx: record_error(tx, self.name, failure, now))
        except Exception:
            log.warning("projection %s: could not record its error", self.name, exc_info=True)

    async def record_state(self) -> None:
        now = self._clock()
        try:
            await self._db.write(lambda tx: record_state(tx, self.name, self.state, now))
            self.beat = now
        except StoreClosed:
            raise
        except Exception:
            log.warning("projection %s: could not record its state", self.name, exc_info=True)

    # -- where to start -------------------------------------------------------------------------

    async def load_controls(self) -> None:
        """Read what operators and earlier runs left: paused or not, the held streams."""
        parking = self.parking

        def read(tx: SqlTx) -> tuple[str | None, dict[str, int]]:
            row = tx.fetchone(f"SELECT paused FROM {CHECKPOINT_TABLE} WHERE name = ?", (self.name,))
            held = {} if parking is None else parking.load(tx)
            return (None if row is None else row[0]), held

        paused, held = await self._db.read(read)
        self.paused = None if paused is None else json.loads(paused)
        if parking is not None:
            parking.held = held

    async def start_from_checkpoint(self, attempts: int = 3) -> None:
        """Take the stored checkpoint, after checking that it is in this log (see
        :mod:`cqrskit._lineage`); if not, empty the read model and start from 0 (or, for
        a projection without tables, stop in "error" with the cause). Then load the
        operators' controls (:meth:`load_controls`)."""
        await self._start_from_checkpoint(attempts)
        await self.load_controls()

    async def _start_from_checkpoint(self, attempts: int) -> None:
        for _ in range(attempts):
            position, event_id = await self._db.read(lambda tx: read_mark(tx, self.name))
            reason = await divergence(self._store, position, event_id)
            if reason is None:
                self.moved_to(position)
                return
            if not self.projection.tables:
                cause = f"does not follow this log: {reason}; no tables to empty: rebuild it"
                await self.fail(ProjectionError(self.name, position, "", cause))
                return
            log.warning(
                "projection %s does not follow this log: %s; emptying it to replay the log",
                self.name,
                reason,
            )
            if await self._db.write_schema(functools.partial(self._reset, seen=position)):
                self.moved_to(0)
                return
        # Moved by another process between each check and reset: that process follows
        # this log; the compare-and-set of the next batch takes it from there.
        self.moved_to(position)

    def _reset(self, tx: SqlTx, seen: int) -> bool:
        """Empty the read model and set its checkpoint to 0, unless it moved since ``seen``
        was read (then it is checked again)."""
        if lock_position(tx, self.name) != seen:
            return False
        for table in owned_tables(self.projection):
            tx.execute(f"DROP TABLE IF EXISTS {table}")
        create_schema(self.projection, tx)
        reset_position(tx, self.name, self._clock())
        return True
