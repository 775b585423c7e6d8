"""Carrying out operators' actions (:mod:`cqrskit.actions`) in the process that runs the
projection, in the projection's own task: never beside one of its batches.

Retrying a parked event applies it and removes it from the parked table in ONE write
transaction of the read database, under the checkpoint row's lock (so a rebuild's swap
cannot slip between): killed anywhere, the event is applied once or still parked. A held
stream's events are retried in log order and the retry of a stream stops at the first
that fails again, so a stream's events are never applied out of order. Skipping removes
parked events in one transaction. A rewind is a rebuild up to a position
(:func:`cqrskit.rebuild.rebuild` with ``until``), swapped in like any rebuild.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from ._applier import HandlerFailed
from ._parking import ParkedEvent, Parking
from ._worker import Worker
from .actions import Action, add_progress, finish_action, pending_actions, read_action
from .checkpoints import add_parked, clear_error, lock_position, record_paused
from .errors import CqrsKitError, StoreClosed
from .eventstore import EventStore
from .readside import ReadDatabase
from .rebuild import rebuild
from .sql import SqlTx

__all__ = ["ACTION_POLL", "ActionFailed", "Operator"]

log = logging.getLogger("cqrskit.operations")

ACTION_POLL = 0.5
"""How often (seconds) a projection looks for actions asked in other processes (one read
of an indexed table); an action asked in this process wakes it at once."""


class ActionFailed(CqrsKitError):
    """An action could not be carried out; the message says why (recorded as its result)."""


class Operator:
    """Carries out the pending actions of the projections of one runner."""

    def __init__(
        self,
        store: EventStore,
        db: ReadDatabase,
        clock: Callable[[], float],
        batch_size: int,
    ) -> None:
        self._store = store
        self._db = db
        self._clock = clock
        self._batch_size = batch_size

    def due(self, worker: Worker) -> bool:
        return worker.take_nudge() or time.monotonic() - worker.actions_checked >= ACTION_POLL

    async def run_pending(self, worker: Worker) -> None:
        """Carry out ``worker``'s pending actions, oldest first, recording each outcome."""
        worker.actions_checked = time.monotonic()
        actions = await self._db.read(lambda tx: pending_actions(tx, worker.name))
        for action in actions:
            try:
                state, result = "done", await self._carry_out(worker, action)
            except StoreClosed:
                raise
            except ActionFailed as exc:
                state, result = "failed", str(exc)
            except Exception as exc:
                log.warning("projection %s: %s failed", worker.name, action.action, exc_info=True)
                state, result = "failed", f"{type(exc).__name__}: {exc}"
            now = self._clock()
            finish = functools.partial(finish_action, action_id=action.id, state=state)
            await self._db.write(functools.partial(finish, result=result, now=now))
            log.info(
                "projection %s: %s asked by %s (%s): %s: %s",
                worker.name,
                action.action,
                action.requested_by or "?",
                action.reason or "no reason given",
                state,
                result,
            )

    async def _carry_out(self, worker: Worker, action: Action) -> str:
        kind, args = action.action, action.args
        if kind == "pause":
            return await self._pause(worker, action)
        if kind == "resume":
            return await self._resume(worker)
        if kind == "restart":
            return await self._restart(worker)
        if kind == "retry":
            return await self._retry(worker, action.id, args.get("stream_id"))
        if kind == "skip":
            return await self._skip(worker, action.id, args)
        if kind == "rewind":
            return await self._rewind(worker, int(args["position"]))
        raise ActionFailed(f"unknown action {kind!r}")

    # -- pause, resume, restart ----------------------------------------------------------------

    async def _pause(self, worker: Worker, action: Action) -> str:
        if worker.paused is not None:
            return "already paused"
        paused: dict[str, Any] = {
            "by": action.requested_by,
            "reason": action.reason,
            "since": self._clock(),
        }
        await self._db.write(lambda tx: record_paused(tx, worker.name, paused))
        worker.paused = paused
        if worker.state != "error":
            worker.state = "paused"
            await worker.record_state()
        return f"paused at position {worker.checkpoint}"

    async def _resume(self, worker: Worker) -> str:
        if worker.paused is None:
            return "not paused"
        await self._db.write(lambda tx: record_paused(tx, worker.name, None))
        worker.paused = None
        if worker.state != "error":
            worker.state = "running"
            await worker.record_state()
        return f"resumed at position {worker.checkpoint}"

    async def _restart(self, worker: Worker) -> str:
        if worker.state != "error":
            return f"not in error ({worker.state}): nothing to restart"
        await self._db.write(lambda tx: clear_error(tx, worker.name))
        await self.restart(worker)
        return f"restarted at position {worker.checkpoint}"

    async def restart(self, worker: Worker) -> None:
        """Leave the error state: from the stored checkpoint (which a rebuild may have
        moved), checked against the log like at start."""
        worker.error = None
        worker.failure = None
        worker.state = "running"
        await worker.start_from_checkpoint()
        if worker.state == "error":
            return
        if worker.paused is not None:
            worker.state = "paused"
        await worker.record_state()

    # -- parked events -------------------------------------------------------------------------

    def _parking(self, worker: Worker) -> Parking:
        if worker.parking is None:
            raise ActionFailed(
                f"projection {worker.name!r} does not park events (its on_failure is 'stop')"
            )
        return worker.parking

    async def _retry(self, worker: Worker, action_id: str, stream_id: str | None) -> str:
        parking = self._parking(worker)
        rows = await self._db.read(lambda tx: parking.rows(tx, stream_id))
        failed: dict[str, str] = {}
        for row in rows:  # log order
            if row.stream_id in failed:
                continue  # its stream stays held behind the event that failed again
            cause = await self._retry_one(worker, parking, row, action_id)
            if cause is not None:
                failed[row.stream_id] = f"position {row.position}: {cause}"
        await self._reload(worker, parking)
        result = await self._progress(action_id, "applied")
        if failed:
            causes = "; ".join(f"stream {s} failed again at {c}" for s, c in failed.items())
            raise ActionFailed(f"{result}; {causes}")
        return result

    async def _retry_one(
        self, worker: Worker, parking: Parking, row: ParkedEvent, action_id: str
    ) -> str | None:
        """Apply one parked event (unless no longer parked); None, or why it failed again."""
        found = await self._store.read_all(row.position - 1, 1)
        if not found or found[0].event_id != row.event_id:
            raise ActionFailed(
                f"the log has no event {row.event_id} at position {row.position}: it does"
                " not follow this log; rebuild the projection"
            )
        record = found[0]

        def apply(tx: SqlTx) -> bool:
            lock_position(tx, worker.name)  # the checkpoint row's lock: see the docstring
            if not parking.unpark(tx, row.position):
                return False
            add_parked(tx, worker.name, -1)
            add_progress(tx, action_id, 1)
            worker.applier.apply(tx, [record], pipelined=False)
            return True

        try:
            await self._db.write(apply)
            return None
        except HandlerFailed as exc:
            cause = repr(exc.cause)
        await self._db.write(lambda tx: parking.failed_again(tx, row.position, cause, 1))
        return cause

    async def _skip(self, worker: Worker, action_id: str, args: dict[str, Any]) -> str:
        parking = self._parking(worker)
        stream_id: str | None = args.get("stream_id")
        position: int | None = args.get("position")
        through = int(args.get("through", 0))

        def skip(tx: SqlTx) -> int:
            lock_position(tx, worker.name)
            skipped = 0
            for row in parking.rows(tx, stream_id):
                if row.position > through or (position is not None and row.position != position):
                    continue
                if parking.unpark(tx, row.position):
                    skipped += 1
            add_parked(tx, worker.name, -skipped)
            add_progress(tx, action_id, skipped)
            return skipped

        await self._db.write(skip)
        await self._reload(worker, parking)
        return await self._progress(action_id, "skipped")

    async def _progress(self, action_id: str, verb: str) -> str:
        """What the action did, in all the runs that carried it out (see ``progress``)."""
        action = await self._db.read(lambda tx: read_action(tx, action_id))
        done = 0 if action is None else action.progress
        return f"{verb} {done} event{'' if done == 1 else 's'}"

    async def _reload(self, worker: Worker, parking: Parking) -> None:
        parking.held = await self._db.read(parking.load)

    # -- rewind --------------------------------------------------------------------------------

    async def _rewind(self, worker: Worker, position: int) -> str:
        result = await rebuild(
            self._store,
            self._db,
            worker.projection,
            batch_size=self._batch_size,
            clock=self._clock,
            until=position,
        )
        worker.moved_to(result.position)
        if worker.state == "error":
            await self.restart(worker)  # the swap cleared the recorded error
        else:
            await worker.load_controls()
        return f"rewound to position {result.position} ({result.events} events replayed)"
