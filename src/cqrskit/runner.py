"""The projection runner: each projection follows the log from its checkpoint, in batches.

One asyncio task per projection. A batch is applied in ONE write transaction of the read
database (on the database's own thread, off the event loop) together with its checkpoint,
after checking that the stored checkpoint is still the one the batch was read from. That
check is the exactly-once guarantee: a crash loses the whole batch or nothing, and a batch
read by a runner whose checkpoint another runner (or a rebuild's swap, in any process)
has moved meanwhile is discarded, never applied twice.

A failing handler: the batch is retried with backoff (:class:`RetryPolicy`); if it keeps
failing it is split so that every event before the failing one is committed, then the
projection stops in state "error" (the cause is stored in the checkpoint table, where
``status`` shows it) while the other projections go on. A failure of the store or of the
read database itself blames no event: the batch is read again after a backoff, for as long
as it takes (the lag grows, which ``status`` shows).

While catching up, the next batch is read from the store while the current one commits
(once its handlers are done: reading beside them would only contend for the GIL), so
reading overlaps the commit's wait on the disk; one ``db.write`` per batch, and inside it
a tight loop (handler lookup, decode, call) without awaits.

With a :class:`Lease` (multi-process failover), a projection runs only while this runner
holds its lease and stays in "standby" otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .checkpoints import (
    ensure_table,
    lock_position,
    read_position,
    record_error,
    record_state,
    write_position,
)
from .codec import Codec
from .consistency import backoff_delays, wait_for_position
from .errors import ConfigurationError, ProjectionError, StoreClosed
from .messages import RecordedEvent
from .monitoring import ProjectionStatus, RateMeter, read_checkpoints, status_of
from .projection import Handler, Projection
from .readside import ReadDatabase
from .sql import SqlTx
from .store.base import EventStore

__all__ = ["Lease", "ProjectionRunner", "RetryPolicy"]

log = logging.getLogger("cqrskit.runner")

_ACTIVE = frozenset({"running", "catching_up"})

PIPELINE_MIN_EVENTS = 4
"""Smallest batch sent in pipeline mode (for projections that allow it). Entering and
leaving psycopg's pipeline mode costs more than the few round trips it saves on a batch
of one event (measured on PostgreSQL 15 here: a one-event batch commits ~150 µs sooner
unpipelined; at ten events pipelining wins by ~20%). Live batches are mostly that small."""

HEARTBEAT_INTERVAL = 5.0
"""An idle active projection rewrites its row this often (see ``monitoring.STALE_AFTER``)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing batch is retried before it is split to find the failing event."""

    attempts: int = 3
    """Tries of one batch (the first included)."""
    base_delay: float = 0.05
    """Pause after the first failure; doubles after each further one."""
    max_delay: float = 2.0

    def delays(self) -> Iterator[float]:
        return backoff_delays(self.base_delay, self.max_delay, attempts=self.attempts, jitter=False)


class Lease(Protocol):
    """Exclusive right to run one projection, for failover between processes.

    ``acquire`` and ``renew`` return whether this process holds the lease now. The runner
    renews every ``lease_interval`` seconds and stops applying when a renewal fails; the
    checkpoint compare keeps even an overlap of two holders from applying a batch twice.
    """

    async def acquire(self, name: str) -> bool: ...

    async def renew(self, name: str) -> bool: ...

    async def release(self, name: str) -> None: ...


class _HandlerFailed(Exception):
    """A handler (or decoding) raised on ``record``; carries the original exception."""

    def __init__(self, record: RecordedEvent | None, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.record = record
        self.cause = cause


_Outcome = Literal["applied", "moved", "failed", "retry"]


async def _discard(task: asyncio.Task[list[RecordedEvent]]) -> None:
    """Drop a read-ahead that will not be used, without leaving its outcome unretrieved."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()


def _infrastructure_backoff() -> Iterator[float]:
    return backoff_delays(0.05, 2.0, jitter=True)


class _Worker:
    """The state of one projection inside a runner."""

    def __init__(self, projection: Projection) -> None:
        self.projection = projection
        self.name = projection.name
        self.handlers: dict[str, Handler] = projection.handlers()
        self.checkpoint = 0
        self.state = "stopped"
        self.error: ProjectionError | None = None
        self.meter = RateMeter()
        self.committed = asyncio.Event()
        """Set (and replaced) after each commit: wakes in-process ``wait_for`` calls."""
        self.pause = _infrastructure_backoff()
        """Delays after failures of the store or the read database (reset on success)."""
        self.leased = False
        self.lease_renewed = 0.0
        self.beat = 0.0
        """Clock time this runner last wrote the projection's row (batch or heartbeat)."""
        self.task: asyncio.Task[None] | None = None

    def moved_to(self, checkpoint: int) -> None:
        self.checkpoint = checkpoint
        committed, self.committed = self.committed, asyncio.Event()
        committed.set()


class ProjectionRunner:
    """Runs projections against a read database; see the module docstring.

    ``idle_timeout`` bounds each wait for new events when caught up (a backstop for
    backends without notifications); ``lease_interval`` is how often a lease is renewed or,
    in standby, tried.
    """

    def __init__(
        self,
        store: EventStore,
        db: ReadDatabase,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        retry: RetryPolicy | None = None,
        lease: Lease | None = None,
        clock: Callable[[], float] = time.time,
        idle_timeout: float = 1.0,
        lease_interval: float = 1.0,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        names = [p.name for p in projections]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise ConfigurationError(f"projection names must be unique and non-empty: {names}")
        self._store = store
        self._db = db
        self._codec: Codec = store.codec
        self._batch_size = batch_size
        self._retry = retry or RetryPolicy()
        self._lease = lease
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._lease_interval = lease_interval
        self._workers = {p.name: _Worker(p) for p in projections}
        self._started = False
        self._stop: asyncio.Future[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the checkpoint table and the projections' schemas, then start following."""
        if self._started:
            raise ConfigurationError("the runner was already started")
        self._started = True
        self._stop = asyncio.get_running_loop().create_future()
        projections = [w.projection for w in self._workers.values()]

        def setup(tx: SqlTx) -> dict[str, int]:
            ensure_table(tx)
            for projection in projections:
                projection.create_schema(tx)
            return {p.name: read_position(tx, p.name) for p in projections}

        positions = await self._db.write_schema(setup)
        for worker in self._workers.values():
            worker.checkpoint = positions[worker.name]
            worker.state = "standby" if self._lease is not None else "running"
            worker.task = asyncio.create_task(self._run(worker), name=f"projection {worker.name}")

    async def stop(self) -> None:
        """Let each projection finish its current batch, then return."""
        if self._stop is None or self._stop.done():
            return
        self._stop.set_result(None)
        await asyncio.gather(*(w.task for w in self._workers.values() if w.task is not None))
        stopped = [w for w in self._workers.values() if w.state in _ACTIVE]
        for worker in stopped:
            worker.state = "stopped"
        now = self._clock()

        def record_stopped(tx: SqlTx) -> None:
            for w in stopped:
                record_state(tx, w.name, "stopped", now)

        try:
            await self._db.write(record_stopped)
        except Exception:
            log.warning("could not record the stopped state", exc_info=True)
        if self._lease is not None:
            for worker in self._workers.values():
                if worker.leased:
                    worker.leased = False
                    try:
                        await self._lease.release(worker.name)
                    except Exception:
                        log.warning("could not release the lease of %s", worker.name, exc_info=True)
        for worker in self._workers.values():
            if worker.state == "standby":
                worker.state = "stopped"

    async def __aenter__(self) -> ProjectionRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def _stopping(self) -> bool:
        return self._stop is None or self._stop.done()

    # -- consistency and monitoring -------------------------------------------------------------

    def position(self, name: str) -> int:
        """This runner's in-memory checkpoint of ``name`` (the table may be ahead of it)."""
        return self._workers[name].checkpoint

    def error(self, name: str) -> ProjectionError | None:
        return self._workers[name].error

    async def wait_for(self, name: str, position: int, timeout: float) -> int:
        """Wait until projection ``name`` has processed ``position``; return its checkpoint.

        Woken at once when this runner commits a batch; also polls the checkpoint table, so
        it works when another process runs the projection (or after a rebuild's swap).
        Raises :class:`~cqrskit.errors.ConsistencyTimeout`. See :mod:`cqrskit.consistency`.
        """
        worker = self._workers.get(name)

        def local() -> tuple[int, asyncio.Event] | None:
            if worker is None or worker.state not in _ACTIVE:
                return None
            return worker.checkpoint, worker.committed

        return await wait_for_position(self._store, self._db, name, position, timeout, local=local)

    async def status(self) -> list[ProjectionStatus]:
        """Position, head, lag and state of each projection of this runner.

        Positions come from the checkpoint table (the committed truth, also when another
        process or a rebuild moved them); state and rate from this runner.
        """
        names = list(self._workers)
        rows = await read_checkpoints(self._db, names)
        head = await self._store.head_position()
        now = self._clock()
        result = []
        for worker in self._workers.values():
            active = worker.state in _ACTIVE
            result.append(
                await status_of(
                    self._store,
                    worker.name,
                    rows.get(worker.name),
                    head,
                    now,
                    state=worker.state,
                    events_per_second=worker.meter.rate() if active else 0.0,
                )
            )
        return result

    # -- the loop of one projection -------------------------------------------------------------

    async def _run(self, worker: _Worker) -> None:
        try:
            await self._follow(worker)
        except StoreClosed:
            log.info("projection %s: the store or database closed, stopping", worker.name)
            worker.state = "stopped"
        except Exception as exc:  # a bug in the runner itself: report it, do not vanish
            log.exception("projection %s: runner failure", worker.name)
            await self._fail(worker, ProjectionError(worker.name, worker.checkpoint, "", repr(exc)))

    async def _follow(self, worker: _Worker) -> None:
        store = self._store
        size = self._batch_size
        # While catching up, the next batch is read while this one is being written.
        ahead: tuple[int, asyncio.Task[list[RecordedEvent]]] | None = None
        try:
            while not self._stopping:
                if self._lease is not None and not await self._hold_lease(worker):
                    continue
                pending, ahead = ahead, None
                try:
                    if pending is not None and pending[0] == worker.checkpoint:
                        events = await pending[1]
                    else:
                        if pending is not None:
                            await _discard(pending[1])  # read from a checkpoint since moved
                        events = await store.read_all(worker.checkpoint, size)
                except StoreClosed:
                    raise
                except Exception:
                    log.warning("projection %s: reading the log failed", worker.name, exc_info=True)
                    await self._sleep(next(worker.pause))
                    continue
                if not events:
                    if worker.state == "catching_up":
                        worker.state = "running"
                        await self._record_state(worker)
                    await self._idle(worker)
                    continue
                state = "running"
                go: asyncio.Event | None = None
                if len(events) == size:
                    state = "catching_up"
                    last = events[-1].position
                    go = asyncio.Event()
                    ahead = (last, asyncio.ensure_future(self._read_ahead(go, last)))
                try:
                    outcome = await self._apply(worker, events, state, go)
                finally:
                    if go is not None:
                        go.set()
                if outcome == "failed":
                    return
                if outcome == "applied":
                    worker.pause = _infrastructure_backoff()
                    worker.state = state
                    if go is None:
                        # A short batch: the log ended there when it was read. Wait for
                        # news rather than read again at once (the wait looks first, so
                        # nothing appended meanwhile is missed): one log read less per
                        # batch when live.
                        await self._idle(worker)
        finally:
            if ahead is not None:
                await _discard(ahead[1])

    async def _read_ahead(self, go: asyncio.Event, position: int) -> list[RecordedEvent]:
        """The next batch, read once ``go`` is set: when the current batch's handlers are
        done and its commit is on its way (see ``_apply_sync``)."""
        await go.wait()
        return await self._store.read_all(position, self._batch_size)

    async def _apply(
        self,
        worker: _Worker,
        events: Sequence[RecordedEvent],
        state: str,
        go: asyncio.Event | None = None,
    ) -> _Outcome:
        """Apply ``events`` with retries; split a batch that keeps failing."""
        failure: _HandlerFailed | None = None
        delays = self._retry.delays()
        loop = asyncio.get_running_loop()
        while True:
            now = self._clock()
            rate = worker.meter.rate()
            try:
                moved = await self._db.write(
                    functools.partial(
                        self._apply_sync,
                        worker=worker,
                        events=events,
                        state=state,
                        now=now,
                        rate=rate,
                        go=None
                        if go is None
                        else functools.partial(loop.call_soon_threadsafe, go.set),
                    ),
                    pipeline=worker.projection.pipelined and len(events) >= PIPELINE_MIN_EVENTS,
                )
            except StoreClosed:
                raise
            except _HandlerFailed as exc:
                failure = exc
            except Exception:
                # The database failed, not a handler: no event is to blame, so no error
                # state. Back off and read the batch again: the database may come back.
                pause = next(worker.pause)
                log.warning(
                    "projection %s: the read database failed, retrying in %.3fs",
                    worker.name,
                    pause,
                    exc_info=True,
                )
                await self._sleep(pause)
                return "retry"
            else:
                if moved is None:
                    worker.meter.add(len(events))
                    worker.moved_to(events[-1].position)
                    worker.beat = self._clock()
                    return "applied"
                log.info(
                    "projection %s: checkpoint moved from %d to %d elsewhere; batch discarded",
                    worker.name,
                    worker.checkpoint,
                    moved,
                )
                worker.moved_to(moved)
                return "moved"
            delay = next(delays, None)
            if delay is None:
                break
            log.warning(
                "projection %s: batch after %d failed (%r), retrying in %.3fs",
                worker.name,
                worker.checkpoint,
                failure.cause,
                delay,
            )
            await asyncio.sleep(delay)
        if len(events) == 1:
            record = events[0]
            await self._fail(
                worker,
                ProjectionError(worker.name, record.position, record.type, repr(failure.cause)),
            )
            return "failed"
        # Keeps failing: commit what precedes the failing event, then isolate it.
        if failure.record is not None:
            i = next(i for i, e in enumerate(events) if e is failure.record)
            parts = [events[:i], events[i : i + 1], events[i + 1 :]]
        else:
            half = len(events) // 2
            parts = [events[:half], events[half:]]
        for part in parts:
            if part:
                outcome = await self._apply(worker, part, state, go)
                if outcome != "applied":
                    return outcome
        return "applied"

    def _apply_sync(
        self,
        tx: SqlTx,
        worker: _Worker,
        events: Sequence[RecordedEvent],
        state: str,
        now: float,
        rate: float,
        go: Callable[[], object] | None = None,
    ) -> int | None:
        """The batch transaction; returns None when applied, else the moved checkpoint."""
        name = worker.name
        # Compare-and-set of the checkpoint inside the batch's own write transaction: if
        # anyone else committed since this batch was read, its changes are already in and
        # applying it again would count them twice.
        stored = lock_position(tx, name)  # row-locked: see checkpoints.lock_position
        if stored != worker.checkpoint:
            return stored
        handler_for = worker.handlers.get
        decode = self._codec.decode_payload
        record = None
        pipelined = worker.projection.pipelined
        try:
            for record in events:
                handler = handler_for(record.type)
                if handler is not None:  # unhandled types are skipped without decoding
                    handler(tx, decode(record.type, record.schema_version, record.payload), record)
        except Exception as exc:
            raise _HandlerFailed(None if pipelined else record, exc) from exc
        # Skipped events move the checkpoint too: they are processed (by doing nothing).
        write_position(tx, name, events[-1].position, state, now, rate)
        try:
            # Pipelined, the handlers' statements and the checkpoint's go in one round trip
            # and an error surfaces here, after the statement that caused it: blame no
            # event, so the batch is bisected down to the one that fails alone.
            tx.flush()
        except Exception as exc:
            raise _HandlerFailed(None, exc) from exc
        if go is not None:
            # Handlers done: let the next batch be read while this one commits (the
            # commit waits on the disk without the GIL, so the read costs the writer
            # nothing). Reading it any earlier, beside the handlers, slows them down
            # more than it saves: both threads contend for the GIL.
            go()
        return None

    async def _fail(self, worker: _Worker, error: ProjectionError) -> None:
        worker.state = "error"
        worker.error = error
        log.error("%s", error)
        now = self._clock()
        try:
            await self._db.write(lambda tx: record_error(tx, worker.name, str(error), now))
        except Exception:
            log.warning("projection %s: could not record its error", worker.name, exc_info=True)

    async def _record_state(self, worker: _Worker) -> None:
        now = self._clock()
        try:
            await self._db.write(lambda tx: record_state(tx, worker.name, worker.state, now))
            worker.beat = now
        except StoreClosed:
            raise
        except Exception:
            log.warning("projection %s: could not record its state", worker.name, exc_info=True)

    async def _idle(self, worker: _Worker) -> None:
        """Wait for new events (or the stop)."""
        assert self._stop is not None
        waiter = asyncio.ensure_future(
            self._store.wait_for_new_events(worker.checkpoint, self._idle_timeout)
        )
        either: set[asyncio.Future[Any]] = {waiter, self._stop}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled():
                raise
        except StoreClosed:
            raise
        except Exception:
            log.warning("projection %s: waiting for events failed", worker.name, exc_info=True)
            await self._sleep(self._idle_timeout)
        if worker.state in _ACTIVE and self._clock() - worker.beat >= HEARTBEAT_INTERVAL:
            # Caught up and idle: say so now and then, so that a reader of the checkpoint
            # table can tell a live projection from one whose process died.
            await self._record_state(worker)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the runner stops."""
        assert self._stop is not None
        await asyncio.wait({self._stop}, timeout=seconds)

    async def _hold_lease(self, worker: _Worker) -> bool:
        """True while this runner may apply ``worker``'s batches; waits in standby."""
        assert self._lease is not None
        loop = asyncio.get_running_loop()
        try:
            if worker.leased:
                if loop.time() - worker.lease_renewed < self._lease_interval:
                    return True
                if await self._lease.renew(worker.name):
                    worker.lease_renewed = loop.time()
                    return True
                log.warning("projection %s: lease lost, standing by", worker.name)
                worker.leased = False
            elif await self._lease.acquire(worker.name):
                worker.leased = True
                worker.lease_renewed = loop.time()
                # The previous holder moved the checkpoint: start from where it left off.
                worker.moved_to(await self._db.read(lambda tx: read_position(tx, worker.name)))
                worker.state = "running"
                await self._record_state(worker)
                return True
        except StoreClosed:
            raise
        except Exception:
            log.warning("projection %s: lease failure", worker.name, exc_info=True)
            worker.leased = False
        worker.state = "standby"
        await self._sleep(self._lease_interval)
        return False
