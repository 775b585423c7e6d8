"""Everything the service can be configured with, read once at the edge (CLI, tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, get_args

from cqrskit import ConfigurationError, ReadDurability

from ..domain import ScryptParams

__all__ = ["DEFAULT_PG_CONNECTIONS", "Settings"]

_N = TypeVar("_N", int, float)

MIN_OPS_TOKEN = 16
"""As cqrskit.fastapi.operations_router requires: the token is the only lock on /ops."""

DEFAULT_PG_CONNECTIONS = 12
"""Event-store pool 4, read pool 5, plus the 3 dedicated: eight processes fit in a default
server (``max_connections`` 100, of which 3 are reserved for superusers)."""


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
    (``SOCIAL_PG_CONNECTIONS``); split by cqrskit's PostgreSQL backend (``split_budget``)."""
    pg_pool_timeout: float = 1.0
    """PostgreSQL: seconds a call waits for a free pooled connection before it fails (503
    with ``Retry-After``; ``SOCIAL_PG_POOL_TIMEOUT``); well under ``request_timeout``."""
    read_durability: ReadDurability = "relaxed"
    """Whether the read database's commits wait for the disk (``SOCIAL_READ_DURABILITY``:
    ``relaxed``, the default, or ``strict``; see cqrskit's ``Options.read_durability``)."""
    ops_token: str | None = None
    """The operator token (``SOCIAL_OPS_TOKEN``, at least 16 characters): opens the
    ``/ops`` routes and console (docs/operations-console.md); None: they answer 404."""

    def url(self) -> str:
        """The event store's URL: PostgreSQL's when given (with ``read_url`` for the read
        models), else SQLite files in the data directory."""
        if self.write_url or self.read_url:
            if not (self.write_url and self.read_url):
                raise ConfigurationError("give both --write-url and --read-url, or neither")
            return self.write_url
        return f"sqlite:///{self.data_dir.absolute()}"

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
        ``SOCIAL_PG_CONNECTIONS``, ``SOCIAL_PG_POOL_TIMEOUT``, ``SOCIAL_READ_DURABILITY``,
        ``SOCIAL_OPS_TOKEN``."""
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
            read_durability=_read_durability(),
            ops_token=_ops_token(),
        )


def _read_durability() -> ReadDurability:
    value = os.environ.get("SOCIAL_READ_DURABILITY", "").strip() or "relaxed"
    for known in get_args(ReadDurability):
        if value == known:
            return known  # type: ignore[no-any-return]
    names = ", ".join(get_args(ReadDurability))
    raise ConfigurationError(f"SOCIAL_READ_DURABILITY must be one of {names}, not {value!r}")


def _ops_token() -> str | None:
    token = os.environ.get("SOCIAL_OPS_TOKEN", "").strip()
    if token and len(token) < MIN_OPS_TOKEN:
        raise ConfigurationError(f"SOCIAL_OPS_TOKEN must be at least {MIN_OPS_TOKEN} characters")
    return token or None


def _env_number(name: str, kind: type[_N], default: _N, what: str) -> _N:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be {what}, not {raw!r}") from None
