"""Everything the service can be configured with, read once at the edge (CLI, tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..domain import ScryptParams

__all__ = ["Settings"]


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

    @classmethod
    def from_env(
        cls,
        *,
        data_dir: Path | None = None,
        write_url: str | None = None,
        read_url: str | None = None,
    ) -> Settings:
        """Explicit arguments win over the environment: ``SOCIAL_DATA_DIR``,
        ``SOCIAL_WRITE_URL``, ``SOCIAL_READ_URL``, ``SOCIAL_SECRET``."""
        env = os.environ
        secret = env.get("SOCIAL_SECRET")
        return cls(
            data_dir=data_dir or Path(env.get("SOCIAL_DATA_DIR") or "./data"),
            write_url=write_url or env.get("SOCIAL_WRITE_URL") or None,
            read_url=read_url or env.get("SOCIAL_READ_URL") or None,
            secret=secret.encode() if secret else None,
        )
