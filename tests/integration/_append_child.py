"""Child process of test_append_durability: appends events one by one, acknowledging each.

Usage: ``python _append_child.py DB_PATH``. After every append has returned it prints
``<position> <n>`` and flushes, so each line the parent reads is an acknowledged append
(``n`` is the event's payload). It runs until the parent kills it.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from cqrskit import Codec, Event
from cqrskit.backends.sqlite import SqliteEventStore


@dataclass(frozen=True)
class Tick(Event):
    n: int


async def main(path: str) -> None:
    store = await SqliteEventStore.open(path, Codec([Tick]))
    version = await store.stream_version("ticks")
    while True:
        result = await store.append("ticks", [Tick(version + 1)], expected_version=version)
        version = result.version
        sys.stdout.write(f"{result.position} {version}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
