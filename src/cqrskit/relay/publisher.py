"""The port the relay publishes through, and the in-memory double that tests use.

A publisher appends messages to one broker stream *only where the relay expects the
stream to end*: each message of a batch is stored only if the stream's last sequence is
still the one the message before it got (JetStream: the ``Nats-Expected-Last-Sequence``
header). So whatever happens (a relay killed mid-batch, two relays at once, a connection
lost with messages in flight) the stream holds a gap-free prefix of the log in log order,
and its last message says where the log continues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import BrokerUnavailable, StreamMoved
from .message import RelayMessage, position_of

__all__ = ["MemoryPublisher", "Publisher", "StreamEnd"]


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Where a broker stream ends: its last message's sequence (0: empty) and the log
    position that message carries (0: none, relay from the start of the log)."""

    sequence: int = 0
    position: int = 0


class Publisher(Protocol):
    """A broker stream the relay appends to (:class:`~cqrskit.relay.JetStreamPublisher`,
    :class:`MemoryPublisher`)."""

    stream: str
    """The broker's name of the stream (the lease is ``relay:<stream>``)."""
    where: str
    """The broker, for messages (``nats://127.0.0.1:4222``), without credentials."""

    async def open(self) -> None:
        """Connect (if not connected) and create the stream if it is missing. Raises
        :class:`~cqrskit.relay.BrokerUnavailable` or :class:`~cqrskit.relay.BrokerRefused`."""

    async def end(self) -> StreamEnd:
        """Where the stream ends now, read from the broker."""

    async def publish(self, messages: Sequence[RelayMessage], after: StreamEnd) -> StreamEnd:
        """Store ``messages`` in order right after ``after``, each only if the stream still
        ends where the one before left it; return the new end once the broker has
        acknowledged them all. Raises :class:`~cqrskit.relay.StreamMoved` when the stream
        did not end at ``after``, :class:`~cqrskit.relay.BrokerUnavailable` when the
        acknowledgements did not come: either way a prefix of the batch may be stored."""

    async def close(self) -> None:
        """Disconnect; :meth:`open` connects again."""


@dataclass
class MemoryPublisher:
    """A :class:`Publisher` in this process's memory, with the broker's guarantees.

    ``stored`` is the stream (shared between publishers given the same list, as relays
    share a broker); ``down`` makes every call fail with
    :class:`~cqrskit.relay.BrokerUnavailable`; ``fail_after`` stores that many more
    messages, then fails (a broker lost mid-batch).
    """

    stream: str = "EVENTS"
    stored: list[RelayMessage] = field(default_factory=list)
    where: str = "memory"
    down: bool = False
    fail_after: int | None = None
    opened: int = 0
    """How many times :meth:`open` succeeded."""

    async def open(self) -> None:
        self._check()
        self.opened += 1

    async def end(self) -> StreamEnd:
        self._check()
        if not self.stored:
            return StreamEnd()
        return StreamEnd(len(self.stored), position_of(self.stored[-1].body))

    async def publish(self, messages: Sequence[RelayMessage], after: StreamEnd) -> StreamEnd:
        self._check()
        for message in messages:
            if len(self.stored) != after.sequence:
                raise StreamMoved(f"stream {self.stream} ends at {len(self.stored)}")
            if self.fail_after is not None:
                if self.fail_after <= 0:
                    self.fail_after, self.down = None, True
                    self._check()
                else:
                    self.fail_after -= 1
            self.stored.append(message)
            after = StreamEnd(len(self.stored), message.position)
        return after

    async def close(self) -> None:
        pass

    def _check(self) -> None:
        if self.down:
            raise BrokerUnavailable(f"broker {self.where} is down")
