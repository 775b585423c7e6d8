"""The events this store committed last, kept to answer a live reader without a round trip.

A projection that follows the log live reads, after each commit, the very events its
process has just appended: a round trip that computes the visibility horizon, and two
thread hops (0.5 ms of a live event's 1.5 ms, measured). The store already holds those
events when its append returns, envelope for envelope as a read gives them (the
position, version and ``recorded_at`` the database returned, the payload and metadata as
stored). So :meth:`Tail.read` answers ``read_all(after)`` from memory when ``after + 1``
is kept and the events kept from there reach the highest position the store knows to be
committed (its own appends and the notifications it heard).

Why that is exact. It serves ``after + 1, after + 2, ...`` only while each is kept, so
every position in the range served is a committed event, and no event can appear later
inside the range (a position belongs to one event): a reader that moves its checkpoint to
the end of the range misses nothing above its old checkpoint, the one guarantee the proof
in :mod:`.store` gives readers. A position missing (another process's append, a hole left
by a rollback, an event not kept) ends the range; the database answers instead. A commit
elsewhere that this store has not heard of yet is not in the answer, as it may not be in
the database's either while an older append runs (the proof's price): the notification
that names it wakes the reader, whose next read asks the database.

Kept: only events whose payload is plain. A sealed payload (personal data) is opened at
each read with its subject's key as the database holds it then, which memory cannot know.
Bounded: between :data:`KEEP` and twice as many of the events added last.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...messages import RecordedEvent

__all__ = ["KEEP", "Tail"]

KEEP = 4096
"""Events kept at least, once added: a live reader is seldom further behind (a
projection's batch is 1,000). At most twice as many are kept."""


class Tail:
    """The last committed events of one store, by position (see the module docstring).

    Used on the event loop only (appends add after their commit returned, reads look
    there before going to a pool thread).
    """

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: dict[int, RecordedEvent] = {}

    def add(self, records: Iterable[RecordedEvent]) -> None:
        """Keep ``records``, committed (never before the commit returned)."""
        events = self._events
        for record in records:
            if 36 not in record.payload:  # no "$": no seal mark (see _sealing.open_records)
                events[record.position] = record
        if len(events) > 2 * KEEP:
            # In bulk (a dict pops from its front in time that grows with what it popped):
            # the KEEP added last, in the order added.
            self._events = dict(list(events.items())[-KEEP:])

    def read(self, after: int, limit: int, head: int) -> list[RecordedEvent] | None:
        """``limit`` events from ``after + 1`` on, or fewer ending at ``head``, when all are
        kept; None (ask the database) otherwise."""
        events = self._events
        found: list[RecordedEvent] = []
        position = after + 1
        while len(found) < limit and position <= head:
            record = events.get(position)
            if record is None:
                return None
            found.append(record)
            position += 1
        return found if found else None
