"""Leases within one process: :class:`MemoryLease` on a shared :class:`LeaseRegistry`.

Instances that share a registry exclude each other, as processes on one PostgreSQL server
or one SQLite file do, so two runners in one process (a test) take turns per projection.
Each instance is one holder. With a ``ttl`` a holder that stops renewing loses the lease
``ttl`` seconds after it last acquired or renewed it (by the registry's clock): another
instance may then take it, and the old holder's ``renew`` answers False. Without one a
lease is held until released. Every operation runs without awaiting, so none interleaves
with another on the event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ...errors import StoreClosed

__all__ = ["LeaseRegistry", "MemoryLease"]


class LeaseRegistry:
    """The leases that the :class:`MemoryLease` instances sharing it compete for.

    ``clock`` (seconds, monotonic by default) times the leases' expiry; a test passes a
    clock it controls.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._leases: dict[str, tuple[object, float]] = {}
        """name -> (holder, expires_at)."""

    def take(self, name: str, holder: object, ttl: float) -> bool:
        """Hold ``name`` for ``ttl`` more seconds if it is free, expired or ``holder``'s."""
        now = self.clock()
        current = self._leases.get(name)
        if current is not None and current[0] is not holder and current[1] < now:
            current = None  # expired: free for whoever asks first
        if current is not None and current[0] is not holder:
            return False
        self._leases[name] = (holder, now + ttl)
        return True

    def extend(self, name: str, holder: object, ttl: float) -> bool:
        """Hold ``name`` for ``ttl`` more seconds if ``holder`` still has it.

        A holder past its expiry that nobody took over keeps it: nobody held it meanwhile.
        """
        current = self._leases.get(name)
        if current is None or current[0] is not holder:
            return False
        self._leases[name] = (holder, self.clock() + ttl)
        return True

    def drop(self, name: str, holder: object) -> None:
        """Free ``name`` if ``holder`` has it."""
        current = self._leases.get(name)
        if current is not None and current[0] is holder:
            del self._leases[name]

    def drop_all(self, holder: object) -> None:
        """Free every lease ``holder`` has."""
        for name in [n for n, (h, _) in self._leases.items() if h is holder]:
            del self._leases[name]


class MemoryLease:
    """:class:`~cqrskit.lease.Lease` held in ``registry`` (by default one of its own).

    One instance is one holder. ``close()`` releases what it holds; calls after it raise
    :class:`~cqrskit.errors.StoreClosed`.
    """

    def __init__(self, registry: LeaseRegistry | None = None, *, ttl: float | None = None) -> None:
        if ttl is not None and not ttl > 0:
            raise ValueError("ttl must be positive")
        self.registry = registry if registry is not None else LeaseRegistry()
        self.ttl = ttl
        self._span = math.inf if ttl is None else ttl
        self._held: set[str] = set()
        self._closed = False

    @property
    def held(self) -> frozenset[str]:
        """The leases this instance believes it holds (``renew`` checks the registry)."""
        return frozenset(self._held)

    async def acquire(self, name: str) -> bool:
        self._check_open()
        if self.registry.take(name, self, self._span):
            self._held.add(name)
            return True
        self._held.discard(name)
        return False

    async def renew(self, name: str) -> bool:
        self._check_open()
        if self.registry.extend(name, self, self._span):
            self._held.add(name)
            return True
        self._held.discard(name)
        return False

    async def release(self, name: str) -> None:
        self._check_open()
        self._held.discard(name)
        self.registry.drop(name, self)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._held.clear()
        self.registry.drop_all(self)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the lease is closed")
