"""How far behind the log the broker stream is: from the running relay, or from any process
(``cqrskit relay --status``), which reads the stream's end from the broker itself."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from ..eventstore import EventStore
from ..lease import Lease
from ..monitoring import lag_seconds
from .publisher import Publisher

__all__ = ["RelayStatus", "measure", "relay_status"]


@dataclass(frozen=True, slots=True)
class RelayStatus:
    stream: str
    position: int | None
    """The log position the broker stream ends at (None: unknown, the broker not reached)."""
    head: int
    """The log's last position."""
    lag_events: int | None
    """Events of the log the broker has not acknowledged yet."""
    lag_seconds: float | None
    """Age of the oldest of them (0 when caught up)."""
    state: str
    """The relay's (see :attr:`Relay.state`); from another process: ``running`` (a
    process holds the relay's lease) or ``stopped`` (none does)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for a log or a terminal."""
        if self.position is None:
            return f"relay {self.stream}: {self.state}, position unknown, head {self.head}"
        return (
            f"relay {self.stream}: {self.state}, position {self.position} of {self.head},"
            f" {self.lag_events} events ({self.lag_seconds or 0.0:.2f}s) behind"
        )


async def measure(store: EventStore, stream: str, position: int | None, state: str) -> RelayStatus:
    """The status of a stream that ends at log ``position``."""
    head = await store.head_position()
    if position is None:
        return RelayStatus(stream, None, head, None, None, state)
    behind = await store.lag_events(position, head)
    seconds = await lag_seconds(store, position, head, time.time())
    return RelayStatus(stream, position, head, behind, round(seconds, 3), state)


async def relay_status(
    store: EventStore, publisher: Publisher, lease: Lease | None = None
) -> RelayStatus:
    """The status from any process: the stream's end as the broker tells it, and whether a
    relay runs (holds the lease ``relay:<stream>``: taken and given back at once if free)."""
    state = "unknown"
    if lease is not None:
        name = f"relay:{publisher.stream}"
        if await lease.acquire(name):
            await lease.release(name)
            state = "stopped"
        else:
            state = "running"
    await publisher.open()
    try:
        end = await publisher.end()
    finally:
        await publisher.close()
    return await measure(store, publisher.stream, end.position, state)
