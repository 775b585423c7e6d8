"""What ``sqlite:///DIR`` opens: ``DIR/write.db`` (events and the write model) and
``DIR/read.db`` (read models), with lock-file leases beside ``read.db``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ...codec import Codec
from ...connect import Backend, Location, Options
from ...projection import Projection
from .database import SqliteDatabase
from .lease import SqliteLease
from .store import SqliteEventStore

__all__ = ["open_location"]


async def open_location(
    location: Location, codec: Codec, inline: list[Projection], options: Options
) -> Backend:
    """Both files in the directory (created 0700 when missing)."""
    if location.read_url is not None:
        raise location.refuse("SQLite keeps both databases in its directory: give one URL")
    directory = Path(location.path)
    await asyncio.to_thread(directory.mkdir, mode=0o700, parents=True, exist_ok=True)
    store = await SqliteEventStore.open(directory / "write.db", codec, inline=inline)
    return Backend(
        store=store,
        db=SqliteDatabase(directory / "read.db", durability=options.read_durability),
        lease=SqliteLease(directory / "read.db"),
        directory=directory,
    )
