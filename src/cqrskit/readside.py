"""The read database as the projection runner, the rebuild and the query handlers see it.

Backends: :class:`cqrskit.backends.sqlite.SqliteDatabase` (a file, one writer thread) and a
PostgreSQL one. Handlers are synchronous functions of a :class:`~cqrskit.sql.SqlTx`; the
database runs them off the event loop, each inside one transaction.

A blue/green rebuild needs one more thing from a backend: a fresh, empty place where a
projection's tables can be built from position 0 *under their plain names* (the
projection's SQL never changes), while the live tables keep serving, and then a way to
swap the built tables in atomically. :meth:`ReadDatabase.open_rebuild` gives that place as
a :class:`RebuildTarget` (SQLite: a separate database file; PostgreSQL: a fresh schema
first on the search path).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from ._parking import Parking, parked_table
from ._relays import ensure_relays_table
from .actions import ensure_actions_table
from .checkpoints import ensure_table, read_position
from .errors import ConfigurationError, DamagedDatabase
from .projection import Projection
from .sql import SqlTx

__all__ = [
    "ReadDatabase",
    "RebuildTarget",
    "SwapDeclined",
    "create_read_models",
    "create_schema",
    "owned_tables",
    "tables_to_rebuild",
]

T = TypeVar("T")

log = logging.getLogger("cqrskit.readside")


class RebuildTarget(Protocol):
    """Fresh, empty tables of one projection, built beside the live ones."""

    async def write(self, fn: Callable[[SqlTx], T], *, pipeline: bool = False) -> T:
        """Run ``fn`` in a write transaction where the projection's plain table names
        resolve to the fresh tables."""
        ...

    async def swap(self, decide: Callable[[SqlTx], bool]) -> bool:
        """Replace the live tables by the fresh ones, atomically, if ``decide`` agrees.

        In ONE write transaction on the live database: call ``decide(tx)`` while holding
        the write lock (it compares and moves the checkpoint); when it returns False roll
        back and return False (the fresh tables stay, to catch up further); otherwise
        replace the projection's live tables, indexes included, by the fresh ones and
        commit. Readers see either the old tables and checkpoint or the new ones.
        """
        ...

    async def discard(self) -> None:
        """Drop the fresh tables (after a swap, or when the rebuild failed)."""
        ...


class ReadDatabase(Protocol):
    """Where read models live. ``read`` sees one consistent snapshot; ``write`` is one
    transaction (any exception rolls it back; driver errors come out as
    :mod:`cqrskit.errors` persistence errors)."""

    async def read(self, fn: Callable[[SqlTx], T]) -> T: ...

    async def write(self, fn: Callable[[SqlTx], T], *, pipeline: bool = False) -> T:
        """One write transaction. ``pipeline=True`` lets a backend with round trips send
        the statements without waiting for each answer (see ``Projection.pipelined``)."""
        ...

    async def write_schema(self, fn: Callable[[SqlTx], T]) -> T:
        """One write transaction that changes the schema (``CREATE TABLE IF NOT EXISTS``
        and the like), taking turns with every other such transaction on this database,
        in whichever process: processes starting together on a fresh database would
        otherwise race on the catalog (PostgreSQL fails the losers with a unique
        violation). SQLite's write lock already makes them take turns."""
        ...

    async def close(self) -> None: ...

    async def set_aside(self) -> str | None:
        """Move a damaged database out of the way and start on a fresh, empty one; return
        where the old one went, or None when this backend cannot (PostgreSQL repairs its
        own storage; an in-memory database is never damaged)."""
        ...

    async def open_rebuild(self, projection: Projection) -> RebuildTarget:
        """A fresh, empty target for this projection's tables (see :class:`RebuildTarget`)."""
        ...

    async def scrub(self) -> None:
        """After a batch that forgot someone (:mod:`cqrskit.personal`): clear what the
        database's files still hold of the rows it deleted, where the backend can (SQLite
        checkpoints its WAL and truncates it; its writer zeroes deleted rows in place).
        PostgreSQL and memory have nothing to do here: see ``docs/personal-data.md``."""
        ...


async def create_read_models(db: ReadDatabase, projections: Sequence[Projection]) -> dict[str, int]:
    """Create the checkpoint table, the actions' and the relays' (``cqrskit._relays``), and
    these projections' tables, unless present; return each projection's checkpoint.

    The one place read-side schemas are created (the runner's start, the rebuild, an API
    process that runs no projection), in one ``write_schema`` transaction: processes
    starting together on a fresh database take turns.

    A damaged read database is set aside (:meth:`ReadDatabase.set_aside`) and replaced by
    an empty one, where the projections start from position 0: the read side is derived
    from the log, so nothing is lost but the time to replay it.
    """

    def create(tx: SqlTx) -> dict[str, int]:
        ensure_table(tx)
        ensure_actions_table(tx)
        ensure_relays_table(tx)
        for projection in projections:
            create_schema(projection, tx)
        return {p.name: read_position(tx, p.name) for p in projections}

    try:
        return await db.write_schema(create)
    except DamagedDatabase as exc:
        moved = await db.set_aside()
        if moved is None:
            raise
        log.warning("%s; moved it to %s: the read models are rebuilt from the log", exc, moved)
        return await db.write_schema(create)


def create_schema(projection: Projection, tx: SqlTx) -> None:
    """The projection's tables, and its parked table when it parks (``on_failure``)."""
    projection.create_schema(tx)
    if projection.on_failure == "park":
        Parking(projection.name).create(tx)


def owned_tables(projection: Projection) -> tuple[str, ...]:
    """The tables that make up the read model: its own, and its parked table."""
    if projection.on_failure == "park":
        return (*projection.tables, parked_table(projection.name))
    return projection.tables


def tables_to_rebuild(projection: Projection) -> tuple[str, ...]:
    """The tables a rebuild of ``projection`` replaces (every backend's ``open_rebuild``
    asks): one that declares none cannot be rebuilt."""
    if not projection.tables:
        raise ConfigurationError(
            f"projection {projection.name!r} declares no tables: nothing to rebuild into"
        )
    return owned_tables(projection)


class SwapDeclined(Exception):
    """Raised by a backend's swap inside its transaction when ``decide`` said no: the
    transaction rolls back, the fresh tables stay, and ``swap`` answers False."""
