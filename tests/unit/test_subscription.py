"""cqrskit.subscription: catch-up, then live, in log order, with nothing lost or repeated."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cqrskit import Codec, Event
from cqrskit.backends.memory import MemoryEventStore
from cqrskit.subscription import subscribe


@dataclass(frozen=True)
class Ticked(Event):
    n: int


async def test_catches_up_then_follows_live_events_in_order() -> None:
    store = MemoryEventStore(Codec([Ticked]))
    for n in range(25):
        await store.append(f"s-{n % 3}", [Ticked(n)])
    stop = asyncio.Event()
    seen: list[int] = []

    async def consume() -> None:
        async for record in subscribe(store, 5, batch_size=7, idle_timeout=0.05, stop=stop):
            seen.append(record.position)
            if record.position == 40:
                stop.set()

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.01)  # caught up, now waiting live
    for n in range(25, 40):
        await store.append("live", [Ticked(n)])
        await asyncio.sleep(0)
    await asyncio.wait_for(consumer, 5)
    assert seen == list(range(6, 41))


async def test_stop_ends_an_idle_subscription() -> None:
    store = MemoryEventStore(Codec([Ticked]))
    stop = asyncio.Event()

    async def consume() -> list[int]:
        return [r.position async for r in subscribe(store, stop=stop, idle_timeout=0.02)]

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    stop.set()
    assert await asyncio.wait_for(consumer, 2) == []
