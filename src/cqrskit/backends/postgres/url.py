"""What ``postgresql://…`` opens: the event store (and write model) in its database, the
read models in the same database or in ``read_url``'s, and an advisory-lock lease there,
all within one budget of connections per process."""

from __future__ import annotations

from dataclasses import dataclass

from ...codec import Codec
from ...connect import Backend, Location, Options
from ...errors import ConfigurationError
from ...projection import Projection
from .database import PostgresDatabase
from .lease import PgAdvisoryLease
from .store import PostgresEventStore

__all__ = ["DEDICATED_CONNECTIONS", "MIN_CONNECTIONS", "PoolSizes", "open_location", "split_budget"]

DEDICATED_CONNECTIONS = 3
"""Connections of one process outside the two pools: the event store's NOTIFY sender and
LISTEN connection (write database), and the projections' lease (read database)."""

MIN_POOL = 2
"""The smallest pool worth running: a rebuild's swap holds one read connection while its
final catch-up writes through another, and one slow call must not stall everything."""

MIN_CONNECTIONS = DEDICATED_CONNECTIONS + 2 * MIN_POOL
"""The smallest budget a process can work with (7)."""


@dataclass(frozen=True)
class PoolSizes:
    """How one process's budget of connections is split (see :func:`split_budget`)."""

    events: int
    """The event store's pool (write database; the store adds its 2 dedicated ones)."""
    read: int
    """The read database's pool (the lease adds its 1 dedicated one)."""

    @property
    def write_database(self) -> int:
        """The most connections of the process to the write database."""
        return self.events + 2

    @property
    def read_database(self) -> int:
        """The most connections of the process to the read database."""
        return self.read + 1


def split_budget(connections: int) -> PoolSizes:
    """3 dedicated connections, the rest halved between the two pools, the read pool
    taking the odd one (reads are most requests). Refuses a budget under 7."""
    if connections < MIN_CONNECTIONS:
        raise ConfigurationError(
            f"a budget of {connections} PostgreSQL connections is too small: a process needs"
            f" {DEDICATED_CONNECTIONS} dedicated ones (NOTIFY, LISTEN, lease) and at least"
            f" {MIN_POOL} in each of its two pools; give at least {MIN_CONNECTIONS}"
        )
    pools = connections - DEDICATED_CONNECTIONS
    read = (pools + 1) // 2
    return PoolSizes(events=pools - read, read=read)


async def open_location(
    location: Location, codec: Codec, inline: list[Projection], options: Options
) -> Backend:
    pools = split_budget(options.connections)  # refused before connecting
    read_url = location.read_url or location.url
    store = await PostgresEventStore.open(
        location.url,
        codec,
        inline=inline,
        pool_min=1,
        pool_max=pools.events,
        pool_timeout=options.pool_timeout,
    )
    db = PostgresDatabase(
        read_url,
        durability=options.read_durability,
        pool_min=1,
        pool_max=pools.read,
        pool_timeout=options.pool_timeout,
    )
    return Backend(store=store, db=db, lease=PgAdvisoryLease(read_url))
