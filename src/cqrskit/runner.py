"""The projection runner: each projection follows the log from its checkpoint, in batches.

One asyncio task per projection runs the loop below: read a batch after the checkpoint,
apply it in ONE write transaction of the read database together with its checkpoint
(:mod:`cqrskit._worker`: that transaction is the exactly-once guarantee, and a failing
handler is retried, then isolated so that every event before it commits, then the
projection stops in "error" while the others go on), then wait for news when caught up.
A failure of the store or of the read database itself blames no event: the batch is read
again after a backoff, for as long as it takes (the lag grows, which ``status`` shows).

While catching up, the next batch is read while the current one commits (once its
handlers are done: reading beside them would only contend for the GIL), so reading
overlaps the commit's wait on the disk. With a :class:`~cqrskit.Lease` (failover between
processes), a projection runs only while this runner holds its lease, in "standby" else.

Between batches, each projection carries out the operators' actions asked for it
(:mod:`cqrskit.actions`, :mod:`cqrskit._operator`): pause, resume, retry or skip parked
events, restart, rewind. A projection stopped in "error" stays in its loop, waiting for a
restart: an operator's, or a rebuild's (whose swap clears the recorded error), in any
process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._failover import hold_lease, release_lease
from ._operator import ACTION_POLL, Operator
from ._readahead import ReadAhead
from ._worker import ACTIVE, Worker, infrastructure_backoff
from .backoff import RetryPolicy
from .checkpoints import read_rows, record_state
from .consistency import wait_for_position
from .errors import ConfigurationError, DamagedDatabase, ProjectionError, StoreClosed
from .eventstore import EventStore
from .lease import Lease
from .monitoring import STALE_AFTER, ProjectionStatus, read_checkpoints, status_of
from .projection import Projection
from .readside import ReadDatabase, create_read_models
from .sql import SqlTx

__all__ = ["ProjectionRunner", "RetryPolicy"]

log = logging.getLogger("cqrskit.runner")

HEARTBEAT_INTERVAL = 5.0
"""An idle active projection rewrites its row this often (see ``monitoring.STALE_AFTER``)."""


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
        self._batch_size = batch_size
        self._lease = lease
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._lease_interval = lease_interval
        retry = retry or RetryPolicy()
        self._workers = {
            p.name: Worker(p, store, db, retry, clock, self._sleep) for p in projections
        }
        self._operator = Operator(store, db, clock, batch_size)
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
        positions = await create_read_models(self._db, projections)
        for worker in self._workers.values():
            worker.checkpoint = positions[worker.name]
            worker.beat = self._clock()
            # Each projection this process runs checks its checkpoint against the log
            # before start() returns (see _lineage): an API serving once it returns never
            # answers from a read model that follows another log.
            if self._lease is None:
                worker.state = "running"
                await worker.start_from_checkpoint()
                if worker.paused is not None and worker.state == "running":
                    worker.state = "paused"
                    await worker.record_state()
            else:
                worker.state = "standby"
                await hold_lease(worker, self._lease, self._lease_interval)
            worker.task = asyncio.create_task(self._run(worker), name=f"projection {worker.name}")

    async def stop(self) -> None:
        """Let each projection finish its current batch, then return."""
        if self._stop is None or self._stop.done():
            return
        self._stop.set_result(None)
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        # return_exceptions: a task that died (cancelled from outside, say) must not keep
        # the others from being waited for, nor the stop from being recorded.
        await asyncio.gather(*tasks, return_exceptions=True)
        stopped = [w for w in self._workers.values() if w.state in ACTIVE]
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
        for worker in self._workers.values():
            if self._lease is not None:
                await release_lease(worker, self._lease)
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

    def nudge(self, name: str) -> None:
        """Have projection ``name`` look at its pending actions now (an action was just
        asked in this process); other processes' are found within ``ACTION_POLL``."""
        worker = self._workers.get(name)
        if worker is not None:
            worker.nudge()

    async def wait_for(self, name: str, position: int, timeout: float) -> int:
        """Wait until projection ``name`` has processed ``position``; return its checkpoint.

        Woken at once when this runner commits a batch; also polls the checkpoint table, so
        it works when another process runs the projection (or after a rebuild's swap).
        Raises :class:`~cqrskit.errors.ConsistencyTimeout`. See :mod:`cqrskit.consistency`.
        """
        worker = self._workers.get(name)

        def local() -> tuple[int, asyncio.Event] | None:
            if worker is None or worker.state not in ACTIVE:
                return None
            return worker.checkpoint, worker.committed

        return await wait_for_position(self._store, self._db, name, position, timeout, local=local)

    async def status(self) -> list[ProjectionStatus]:
        """Position, head, lag and state of each projection of this runner.

        Positions come from the checkpoint table (the committed truth, also when another
        process or a rebuild moved them); state and rate from this runner.
        """
        rows = await read_checkpoints(self._db, list(self._workers))
        head, now = await self._store.head_position(), self._clock()
        return [
            await status_of(
                self._store, w.name, rows.get(w.name), head, now, state=self._state_of(w),
                events_per_second=w.meter.rate() if w.state in ACTIVE else 0.0,
                error=w.failure if w.state == "error" else None,
            )
            for w in self._workers.values()
        ]  # fmt: skip

    def _state_of(self, worker: Worker) -> str:
        """The state to report: "stalled" when the projection's task is gone (a bug that
        escaped it) though its state says it runs, or when it has not written its row
        for ``STALE_AFTER`` seconds (each batch and each idle heartbeat does). Judged by
        liveness, not by lag."""
        if worker.state in ACTIVE:
            if worker.task is None or worker.task.done():
                return "stalled" if self._started and not self._stopping else "stopped"
            if self._clock() - worker.beat > STALE_AFTER:  # a batch (or the database) hangs
                return "stalled"
        return worker.state

    # -- the loop of one projection -------------------------------------------------------------

    async def _run(self, worker: Worker) -> None:
        try:
            await self._follow(worker)
        except StoreClosed:
            log.info("projection %s: the store or database closed, stopping", worker.name)
            worker.state = "stopped"
        except Exception as exc:  # a bug in the runner itself: report it, do not vanish
            log.exception("projection %s: runner failure", worker.name)
            await worker.fail(ProjectionError(worker.name, worker.checkpoint, "", repr(exc)))

    async def _follow(self, worker: Worker) -> None:
        size = self._batch_size
        ahead = ReadAhead(self._store, size)
        try:
            while not self._stopping:
                if self._lease is not None and not await hold_lease(
                    worker, self._lease, self._lease_interval
                ):
                    await self._sleep(self._lease_interval)
                    continue
                if self._operator.due(worker):
                    await self._operate(worker)
                if worker.state == "error":
                    await self._wait_in_error(worker)
                    continue
                if worker.paused is not None:
                    await self._wait_for_action(worker)
                    continue
                try:
                    events = await ahead.read(worker.checkpoint)
                except StoreClosed:
                    raise
                except DamagedDatabase as exc:  # the log's file: retrying cannot help
                    cause = f"cannot read the log: {exc}"
                    await worker.fail(ProjectionError(worker.name, worker.checkpoint, "", cause))
                    continue
                except Exception:
                    log.warning("projection %s: reading the log failed", worker.name, exc_info=True)
                    await self._sleep(next(worker.pause))
                    continue
                if not events:
                    if worker.state == "catching_up":
                        worker.state = "running"
                        await worker.record_state()
                    await self._idle(worker)
                    continue
                state = "running"
                go: asyncio.Event | None = None
                if len(events) == size:  # catching up: read the next batch meanwhile
                    state = "catching_up"
                    go = asyncio.Event()
                    ahead.start(events[-1].position, go)
                try:
                    outcome = await worker.apply(events, state, go)
                finally:
                    if go is not None:
                        go.set()
                if outcome == "failed":
                    continue
                if outcome == "moved":
                    # Moved by someone else, or back (a read database that lost its last
                    # commits): the held streams in memory may not match the table now.
                    await worker.load_controls()
                if outcome == "applied":
                    worker.pause = infrastructure_backoff()
                    worker.state = state
                    if self._store.codec.forgets_any(events):  # see cqrskit.personal
                        await self._db.scrub()
                    if go is None:
                        # A short batch: the log ended there when it was read. Wait for
                        # news rather than read again at once (the wait looks first, so
                        # nothing appended meanwhile is missed): one log read less per
                        # batch when live.
                        await self._idle(worker)
        finally:
            await ahead.discard()

    async def _operate(self, worker: Worker) -> None:
        try:
            await self._operator.run_pending(worker)
        except StoreClosed:
            raise
        except Exception:  # the database failed: the actions stay pending, tried again
            log.warning("projection %s: could not read its actions", worker.name, exc_info=True)

    async def _wait_for_action(self, worker: Worker) -> None:
        """Paused (or in error): wait for an action, or the stop, up to ``ACTION_POLL``."""
        assert self._stop is not None
        either: set[asyncio.Future[Any]] = {worker.nudged(), self._stop}
        await asyncio.wait(either, timeout=ACTION_POLL)
        if (
            worker.state in ("paused", "error")
            and self._clock() - worker.beat >= HEARTBEAT_INTERVAL
        ):
            await worker.record_state()

    async def _wait_in_error(self, worker: Worker) -> None:
        """Stopped in error: wait for a restart. An operator's arrives as an action; a
        rebuild's swap (in any process) clears the recorded error, which is looked for
        here: either way the projection goes on from the stored checkpoint."""
        await self._wait_for_action(worker)
        if self._stopping or worker.state != "error":
            return
        try:
            row = (await self._db.read(lambda tx: read_rows(tx, [worker.name]))).get(worker.name)
        except StoreClosed:
            raise
        except Exception:
            log.warning("projection %s: could not read its row", worker.name, exc_info=True)
            return
        if row is not None and row.error is None and row.failure is None:
            log.info("projection %s: its error was cleared, restarting", worker.name)
            await self._operator.restart(worker)

    async def _idle(self, worker: Worker) -> None:
        """Wait for new events (or the stop, or an action asked in this process)."""
        assert self._stop is not None
        waiter = asyncio.ensure_future(
            self._store.wait_for_new_events(worker.checkpoint, self._idle_timeout)
        )
        either: set[asyncio.Future[Any]] = {waiter, self._stop, worker.nudged()}
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
        if worker.state in ACTIVE and self._clock() - worker.beat >= HEARTBEAT_INTERVAL:
            # Caught up and idle: say so now and then, so that a reader of the checkpoint
            # table can tell a live projection from one whose process died.
            await worker.record_state()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the runner stops."""
        assert self._stop is not None
        await asyncio.wait({self._stop}, timeout=seconds)
