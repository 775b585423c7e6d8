"""A projection's batch transaction: where exactly-once comes from.

The stored checkpoint is compared with the one the batch was read from, the handlers run
and the checkpoint moves, all in ONE write transaction of the read database. A batch read
by a runner whose checkpoint another runner (or a rebuild's swap, in any process) moved
meanwhile is discarded, never applied twice.

Two orders, one guarantee:

- **Statement by statement** (SQLite; PostgreSQL for projections that read), the
  checkpoint is looked at first, row-locked (:func:`~cqrskit.checkpoints.lock_position`),
  and a moved one ends the transaction before any handler runs.
- **Deferred** (PostgreSQL, ``pipelined`` projections: the whole batch goes out without
  waiting for answers, a short one in one round trip), the compare-and-set comes last
  (:func:`~cqrskit.checkpoints.advance_position`) and fails the transaction when the
  checkpoint moved; the failure then arrives like a handler's, at the commit, and
  :func:`deferred_failure` tells the two apart by reading the checkpoint. A projection's
  first batch (from 0) looks first, which makes its checkpoint row.

A projection that parks (``on_failure = "park"``, see :mod:`cqrskit._parking`) parks the
events of held streams in that same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._applier import Applier, HandlerFailed
from ._parking import Parking
from .checkpoints import add_parked, advance_position, lock_position, read_mark, write_position
from .errors import OperationalError, PersistenceError, StoreClosed
from .messages import RecordedEvent
from .readside import ReadDatabase
from .sql import SqlTx

__all__ = ["commit_batch", "deferred_failure"]


def commit_batch(
    tx: SqlTx,
    *,
    name: str,
    checkpoint: int,
    applier: Applier,
    parking: Parking | None,
    events: Sequence[RecordedEvent],
    state: str,
    now: float,
    rate: float,
    go: Callable[[], object] | None,
) -> int | None:
    """The batch transaction; returns None when applied, else the moved checkpoint."""
    compare_last = tx.deferred and checkpoint > 0
    if not compare_last:
        stored = lock_position(tx, name)
        if stored != checkpoint:
            return stored
    pipelined = tx.deferred
    if parking is not None and parking.held:
        # Events of held streams wait behind their stream's parked event, in order;
        # parked here, they are processed as far as the checkpoint goes.
        ready, held = Parking.split(events, parking.held)
        applier.apply(tx, ready, pipelined=pipelined)
        if held:
            parking.park_held(tx, held, now)
            add_parked(tx, name, len(held))
    else:
        applier.apply(tx, events, pipelined=pipelined)
    # Skipped events move the checkpoint too: they are processed (by doing nothing).
    last = events[-1]
    if compare_last:
        advance_position(tx, name, checkpoint, last.position, state, now, rate, last.event_id)
    else:
        write_position(tx, name, last.position, state, now, rate, last.event_id)
    if go is not None:
        # Handlers done: let the next batch be read while this one commits (the commit
        # waits on the disk without the GIL, so the read costs the writer nothing).
        # Reading it any earlier, beside the handlers, slows them down more than it
        # saves: both threads contend for the GIL.
        go()
    return None


async def deferred_failure(
    db: ReadDatabase, name: str, checkpoint: int, exc: Exception
) -> int | HandlerFailed | None:
    """After a deferred batch failed with ``exc`` at its commit, where a handler's error
    and a moved checkpoint both arrive: the position the checkpoint moved to (another
    runner committed: nothing is wrong), a handler's failure (blaming no event: the batch
    is bisected down to the one that fails alone), or None when the database itself
    failed."""
    if not isinstance(exc, PersistenceError) or isinstance(exc, OperationalError):
        return None
    try:
        stored = await db.read(lambda tx: read_mark(tx, name)[0])
    except StoreClosed:
        raise
    except Exception:
        return None
    return stored if stored != checkpoint else HandlerFailed(None, exc)
