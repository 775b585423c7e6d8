"""Does a read model follow this log? Its checkpoint says which event it applied last.

A read database is derived from one log. Restore the log from a backup and keep the read
database (or point it at another log), and its checkpoints describe events this log does
not have: the checkpoint is beyond the head, or the event at its position is another one
(the restored log was written to since). Followed blindly, every new write would look
applied already (its position is below the checkpoint) and never be read. The checkpoint
row keeps the id of the event at its position; this compares it with the log's.
"""

from __future__ import annotations

from .eventstore import EventStore

__all__ = ["divergence"]


async def divergence(store: EventStore, position: int, event_id: str | None) -> str | None:
    """Why a read model whose checkpoint is ``position`` (the event ``event_id``, None
    when not recorded) does not follow ``store``'s log; None when it does.

    Read the checkpoint first, then call this: the log only grows, so an event the read
    model applied is in any later read of the same log.
    """
    if position == 0:
        return None
    found = await store.read_all(position - 1, 1)
    if not found or found[0].position != position:
        head = await store.head_position()
        if head < position:
            return (
                f"its checkpoint {position} is beyond the log, which ends at {head}"
                " (the log was restored from a backup, or is another one)"
            )
        return f"the log has no event at its checkpoint {position} (it is another log)"
    if event_id is not None and found[0].event_id != event_id:
        return (
            f"the event at its checkpoint {position} is not the one it applied"
            " (the log was restored from a backup and written since, or is another one)"
        )
    return None
