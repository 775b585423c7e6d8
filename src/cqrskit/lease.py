"""The lease port: which process runs a projection, for failover between processes.

Backends: :class:`cqrskit.backends.postgres.PgAdvisoryLease` (session advisory locks),
:class:`cqrskit.backends.sqlite.SqliteLease` (a lock row with expiry beside the read
models) and :class:`cqrskit.backends.memory.MemoryLease` (one process). The same contract
suite (``tests/contracts/lease.py``) runs on each.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Lease"]


class Lease(Protocol):
    """Exclusive right to run one projection, for failover between processes.

    ``acquire`` and ``renew`` return whether this process holds the lease now. The runner
    renews every ``lease_interval`` seconds and stops applying when a renewal fails; the
    checkpoint compare keeps even an overlap of two holders from applying a batch twice.
    """

    async def acquire(self, name: str) -> bool: ...

    async def renew(self, name: str) -> bool: ...

    async def release(self, name: str) -> None: ...
