"""What ``memory://`` opens: a store and a read database in this process, gone at close
(tests and examples). No lease: nothing outside this process can run its projections."""

from __future__ import annotations

from ...codec import Codec
from ...connect import Backend, Location, Options
from ...projection import Projection
from .database import MemoryDatabase
from .store import MemoryEventStore

__all__ = ["open_location"]


async def open_location(
    location: Location, codec: Codec, inline: list[Projection], options: Options
) -> Backend:
    if location.path.strip("/"):
        raise location.refuse("memory:// takes nothing after the scheme")
    return Backend(store=MemoryEventStore(codec, inline=inline), db=MemoryDatabase())
