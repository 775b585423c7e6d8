"""A small app for the relay's tests, and a writer process that appends to its log.

- ``app``: an :class:`~cqrskit.App` with three event types and no read model, for
  ``cqrskit --app tests.integration._relay_app:app --url URL relay ...``;
- ``python -m tests.integration._relay_app URL COUNT [WRITERS]``: appends COUNT events
  (``Noted``, with an old-schema ``Renamed`` and a ``Tagged`` among them) from WRITERS
  concurrent tasks, prints ``done HEAD`` and exits.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from cqrskit import App, Event, Metadata


@dataclass(frozen=True)
class Noted(Event):
    n: int
    text: str


@dataclass(frozen=True)
class Renamed(Event):
    """Schema 2 (``name`` was ``title`` in schema 1): the relay publishes it upcast."""

    __schema_version__ = 2
    n: int
    name: str


@dataclass(frozen=True)
class Tagged(Event):
    __event_type__ = "notes.Tagged v2"  # not a plain subject token: published as notes_Tagged_v2
    n: int


def _title_to_name(data: dict[str, Any]) -> dict[str, Any]:
    return {"n": data["n"], "name": data.pop("title")}


class RelayedApp(App):
    events: ClassVar = (Noted, Renamed, Tagged)
    upcasters: ClassVar = (("Renamed", 1, _title_to_name),)


app = RelayedApp("memory://")


def event(n: int) -> Event:
    if n % 50 == 7:
        return Renamed(n, f"name {n}")
    if n % 50 == 13:
        return Tagged(n)
    return Noted(n, f"note {n}")


async def write(url: str, count: int, writers: int = 4) -> int:
    """Append ``count`` events (one or two per append) from ``writers`` tasks; the head."""
    writer_app = RelayedApp(url, run_projections=False)
    async with writer_app:
        numbers = iter(range(count))

        async def one(w: int) -> None:
            for n in numbers:
                meta = Metadata(correlation_id=f"writer-{w}")
                await writer_app.store.append(f"note-{w}-{n % 7}", [event(n)], metadata=meta)

        await asyncio.gather(*(one(w) for w in range(writers)))
        return await writer_app.store.head_position()


if __name__ == "__main__":
    head = asyncio.run(
        write(sys.argv[1], int(sys.argv[2]), int(sys.argv[3:4][0] if sys.argv[3:] else 4))
    )
    print(f"done {head}", flush=True)
