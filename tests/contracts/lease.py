"""The lease contract, as one abstract test suite every lease backend passes.

How to run it against a backend: subclass :class:`LeaseContract` in a module whose name
starts with ``test_``, with a class name starting with ``Test``, and implement
:meth:`LeaseContract.make_lease`: a new instance (a new holder) on the backend that every
instance of the test shares, so that instances compete. Put what the backend needs on
``self`` from an autouse fixture::

    class TestSqliteLease(LeaseContract):
        @pytest.fixture(autouse=True)
        def _where(self, tmp_path: Path) -> None:
            self.path = tmp_path / "read.db"

        def make_lease(self) -> ContractLease:
            return SqliteLease(self.path)

Tests get instances from ``self.open()``; the suite closes every one it made
(``dispose_lease``, override it for extra cleanup).

Expiry: every backend implements :meth:`LeaseContract.expire`, which makes one holder
lose its leases as if it had died or stopped renewing (advance a controllable clock past
the ttl, unlock its files as the kernel does at its death, kill its session).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from cqrskit import StoreClosed
from cqrskit.lease import Lease

RELEASE_TIMEOUT = 20.0
"""Seconds a backend may take to free a closed holder's leases (a PostgreSQL session ends
a moment after its client closed it)."""


class ContractLease(Lease, Protocol):
    """A lease as the backends implement it: the port, what it holds, ``close()``."""

    @property
    def held(self) -> frozenset[str]: ...

    async def close(self) -> None: ...


async def acquire_soon(lease: Lease, name: str, timeout: float = RELEASE_TIMEOUT) -> None:
    """Acquire ``name``, retrying while the backend frees it (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not await lease.acquire(name):
        assert time.monotonic() < deadline, f"{name!r} was not freed within {timeout}s"
        await asyncio.sleep(0.05)


class LeaseContract(ABC):
    """Behaviour every :class:`~cqrskit.lease.Lease` backend must have."""

    CONTENDERS = 8

    @abstractmethod
    def make_lease(self) -> ContractLease:
        """A new holder on the backend shared by every instance made in this test."""

    async def dispose_lease(self, lease: ContractLease) -> None:
        """Release what ``make_lease`` made (close() is idempotent, so it is always safe)."""
        await lease.close()

    @abstractmethod
    async def expire(self, lease: ContractLease) -> None:
        """Make ``lease`` lose every lease it holds as a holder that dies or stops renewing
        does, without calling it."""

    # -- plumbing ---------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    async def _dispose_all(self) -> AsyncIterator[None]:
        self._made: list[ContractLease] = []
        yield
        for made in self._made:
            await self.dispose_lease(made)

    def open(self) -> ContractLease:
        """A lease from ``make_lease`` that is disposed of after the test."""
        made = self.make_lease()
        self._made.append(made)
        return made

    # -- one holder at a time ---------------------------------------------------------------

    async def test_a_lease_has_one_holder(self) -> None:
        first, second = self.open(), self.open()
        assert await first.acquire("counters")
        assert not await second.acquire("counters")
        assert not await second.acquire("counters")  # asking again changes nothing
        assert first.held == {"counters"}
        assert second.held == frozenset()

    async def test_acquire_by_the_holder_again_keeps_it(self) -> None:
        holder, other = self.open(), self.open()
        assert await holder.acquire("counters")
        assert await holder.acquire("counters")
        assert await holder.renew("counters")
        assert not await other.acquire("counters")

    async def test_renew_answers_whether_one_holds_it(self) -> None:
        holder, other = self.open(), self.open()
        assert not await holder.renew("counters")  # nobody acquired it yet
        assert await holder.acquire("counters")
        assert await holder.renew("counters")
        assert await holder.renew("counters")
        assert not await other.renew("counters")
        assert not await other.acquire("counters")  # a failed renew took nothing
        assert holder.held == {"counters"}

    async def test_release_lets_another_acquire(self) -> None:
        first, second = self.open(), self.open()
        assert await first.acquire("counters")
        await first.release("counters")
        assert first.held == frozenset()
        assert not await first.renew("counters")
        assert await second.acquire("counters")
        assert not await first.acquire("counters")
        await first.release("counters")  # not its own: a no-op
        assert await second.renew("counters")

    async def test_release_by_a_non_holder_frees_nothing(self) -> None:
        holder, other = self.open(), self.open()
        assert await holder.acquire("counters")
        await other.release("counters")
        assert await holder.renew("counters")
        assert not await other.acquire("counters")

    async def test_leases_of_different_names_are_independent(self) -> None:
        first, second = self.open(), self.open()
        assert await first.acquire("counters")
        assert await second.acquire("timeline")
        assert not await first.acquire("timeline")
        assert not await second.acquire("counters")
        await first.release("counters")
        assert await second.renew("timeline")  # releasing one name leaves the other
        assert await second.acquire("counters")
        assert second.held == {"counters", "timeline"}
        assert first.held == frozenset()

    async def test_one_instance_holds_many_names(self) -> None:
        holder, other = self.open(), self.open()
        for name in ("a", "b", "c"):
            assert await holder.acquire(name)
        await holder.release("b")
        assert holder.held == {"a", "c"}
        assert await holder.renew("a")
        assert await holder.renew("c")
        assert await other.acquire("b")
        assert not await other.acquire("a")

    async def test_concurrent_acquires_have_exactly_one_winner(self) -> None:
        contenders = [self.open() for _ in range(self.CONTENDERS)]
        won = await asyncio.gather(*(lease.acquire("counters") for lease in contenders))
        assert won.count(True) == 1
        winner = contenders[won.index(True)]
        assert await winner.renew("counters")
        for lease in contenders:
            if lease is not winner:
                assert not await lease.renew("counters")
                assert lease.held == frozenset()

    # -- close --------------------------------------------------------------------------------

    async def test_close_releases_everything_it_held(self) -> None:
        holder, other = self.open(), self.open()
        assert await holder.acquire("counters")
        assert await holder.acquire("timeline")
        await holder.close()
        assert holder.held == frozenset()
        await acquire_soon(other, "counters")
        await acquire_soon(other, "timeline")
        assert other.held == {"counters", "timeline"}

    async def test_calls_after_close_raise_store_closed(self) -> None:
        lease = self.open()
        assert await lease.acquire("counters")
        await lease.close()
        with pytest.raises(StoreClosed):
            await lease.acquire("counters")
        with pytest.raises(StoreClosed):
            await lease.renew("counters")
        with pytest.raises(StoreClosed):
            await lease.release("counters")
        await lease.close()  # idempotent

    async def test_close_of_an_unused_lease(self) -> None:
        lease = self.open()
        await lease.close()
        with pytest.raises(StoreClosed):
            await lease.acquire("counters")

    # -- expiry -------------------------------------------------------------------------------

    async def test_a_holder_that_stops_renewing_loses_the_lease(self) -> None:
        holder, other = self.open(), self.open()
        assert await holder.acquire("counters")
        assert await other.acquire("timeline")
        assert not await other.acquire("counters")
        await self.expire(holder)
        assert await other.acquire("counters")
        assert not await holder.renew("counters")  # taken over: the old holder stops
        assert "counters" not in holder.held
        assert not await holder.acquire("counters")
        assert await other.renew("counters")
        assert await other.renew("timeline")  # the other holder's leases are untouched
        await other.release("counters")
        assert await holder.acquire("counters")  # and it can hold leases again
