"""Everything the service can be configured with, read once at the edge (CLI, tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cqrskit import ConfigurationError

from ..domain import ScryptParams

__all__ = [
    "DEFAULT_PG_CONNECTIONS",
    "MIN_PG_CONNECTIONS",
    "PG_DEDICATED_CONNECTIONS",
    "PgPoolSizes",
    "Settings",
]

_N = TypeVar("_N", int, float)

PG_DEDICATED_CONNECTIONS = 3
"""Connections of one process outside the two pools: the event store's NOTIFY sender and
LISTEN connection (write database), and the projections' lease (read database)."""

MIN_PG_POOL = 2
"""The smallest pool worth running: a rebuild's swap holds one read connection while its
final catch-up writes through another, and one slow call must not stall everything."""

MIN_PG_CONNECTIONS = PG_DEDICATED_CONNECTIONS + 2 * MIN_PG_POOL
"""The smallest ``pg_connections`` budget a process can work with (7)."""

DEFAULT_PG_CONNECTIONS = 12
"""Event-store pool 4, read pool 5, plus the 3 dedicated: eight processes fit in a default
server (``max_connections`` 100, of which 3 are reserved for superusers)."""


@dataclass(frozen=True)
class PgPoolSizes:
    """How one process's budget of PostgreSQL connections is split (see ``pg_pools``)."""

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


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    """SQLite files (``write.db``, ``read.db``) and ``secret.key`` live here."""
    write_url: str | None = None
    """PostgreSQL URL of the event store and write model (both URLs or neither)."""
    read_url: str | None = None
    secret: bytes | None = None
    """Token signing key; None: ``SOCIAL_SECRET``, else ``secret.key`` in the data dir."""
    token_ttl: float = 24 * 3600.0
    min_position_timeout: float = 5.0
    """How long a read waits for ``X-Min-Position`` before answering 503."""
    request_timeout: float = 8.0
    """Longest time a request may take before it answers 503 (the database may be down);
    longer than ``min_position_timeout``."""
    max_body_bytes: int = 64 * 1024
    scrypt: ScryptParams = field(default_factory=ScryptParams)
    batch_size: int = 500
    pg_connections: int = DEFAULT_PG_CONNECTIONS
    """PostgreSQL: the most connections this process opens, to both databases together
    (``SOCIAL_PG_CONNECTIONS``); split by :meth:`pg_pools`."""
    pg_pool_timeout: float = 1.0
    """PostgreSQL: seconds a call waits for a free pooled connection before it fails (503
    with ``Retry-After``; ``SOCIAL_PG_POOL_TIMEOUT``); well under ``request_timeout``."""

    def pg_pools(self) -> PgPoolSizes:
        """The split of ``pg_connections``: 3 dedicated connections, the rest halved between
        the two pools, the read pool taking the odd one (reads are most requests).
        Raises :class:`~cqrskit.ConfigurationError` for a budget too small to work with,
        or a pool timeout that would not fail before the request deadline."""
        budget = self.pg_connections
        if budget < MIN_PG_CONNECTIONS:
            raise ConfigurationError(
                f"pg_connections (SOCIAL_PG_CONNECTIONS) = {budget} is too small: a process"
                f" needs {PG_DEDICATED_CONNECTIONS} dedicated PostgreSQL connections (NOTIFY,"
                f" LISTEN, lease) and at least {MIN_PG_POOL} in each of its two pools;"
                f" give at least {MIN_PG_CONNECTIONS}"
            )
        if not 0 < self.pg_pool_timeout < self.request_timeout:
            raise ConfigurationError(
                f"pg_pool_timeout (SOCIAL_PG_POOL_TIMEOUT) = {self.pg_pool_timeout} must be"
                f" positive and shorter than the request timeout ({self.request_timeout}s)"
            )
        pools = budget - PG_DEDICATED_CONNECTIONS
        read = (pools + 1) // 2
        return PgPoolSizes(events=pools - read, read=read)

    @classmethod
    def from_env(
        cls,
        *,
        data_dir: Path | None = None,
        write_url: str | None = None,
        read_url: str | None = None,
    ) -> Settings:
        """Explicit arguments win over the environment: ``SOCIAL_DATA_DIR``,
        ``SOCIAL_WRITE_URL``, ``SOCIAL_READ_URL``, ``SOCIAL_SECRET``,
        ``SOCIAL_PG_CONNECTIONS``, ``SOCIAL_PG_POOL_TIMEOUT``."""
        env = os.environ
        secret = env.get("SOCIAL_SECRET")
        return cls(
            data_dir=data_dir or Path(env.get("SOCIAL_DATA_DIR") or "./data"),
            write_url=write_url or env.get("SOCIAL_WRITE_URL") or None,
            read_url=read_url or env.get("SOCIAL_READ_URL") or None,
            secret=secret.encode() if secret else None,
            pg_connections=_env_number(
                "SOCIAL_PG_CONNECTIONS", int, DEFAULT_PG_CONNECTIONS, "a whole number"
            ),
            pg_pool_timeout=_env_number("SOCIAL_PG_POOL_TIMEOUT", float, 1.0, "seconds"),
        )


def _env_number(name: str, kind: type[_N], default: _N, what: str) -> _N:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be {what}, not {raw!r}") from None
