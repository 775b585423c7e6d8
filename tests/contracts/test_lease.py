"""The lease contract on every backend: memory, SQLite, PostgreSQL."""

from __future__ import annotations

import asyncio
import fcntl
import time
from pathlib import Path

import psycopg
import pytest

from cqrskit.backends.memory import LeaseRegistry, MemoryLease
from cqrskit.backends.postgres import PgAdvisoryLease
from cqrskit.backends.sqlite import SqliteLease
from tests.contracts.lease import ContractLease, LeaseContract

TTL = 10.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ClockedLeaseContract(LeaseContract):
    """Backends whose leases expire ``TTL`` seconds after the last acquire or renew, by a
    clock the tests control (``self.clock``, shared by every instance of a test)."""

    clock: Clock

    async def expire(self, lease: ContractLease) -> None:
        self.clock.advance(TTL + 1)

    async def test_a_lease_is_held_until_its_ttl_has_passed(self) -> None:
        holder, other = self.open(), self.open()
        assert await holder.acquire("counters")
        self.clock.advance(TTL * 0.9)
        assert not await other.acquire("counters")
        self.clock.advance(TTL * 0.2)
        assert await other.acquire("counters")
        assert not await holder.renew("counters")

    async def test_renew_and_reacquire_extend_the_lease(self) -> None:
        holder, other = self.open(), self.open()
        assert await holder.acquire("counters")
        self.clock.advance(TTL * 0.6)
        assert await holder.renew("counters")
        self.clock.advance(TTL * 0.6)
        assert not await other.acquire("counters")  # 1.2 ttl after the acquire
        assert await holder.acquire("counters")
        self.clock.advance(TTL * 0.6)
        assert not await other.acquire("counters")
        self.clock.advance(TTL * 0.6)
        assert await other.acquire("counters")

    async def test_an_expired_lease_nobody_took_renews(self) -> None:
        holder, other = self.open(), self.open()
        assert await holder.acquire("counters")
        self.clock.advance(TTL * 3)
        assert await holder.renew("counters")  # nobody held it meanwhile
        assert not await other.acquire("counters")


class TestMemoryLease(ClockedLeaseContract):
    @pytest.fixture(autouse=True)
    def _registry(self) -> None:
        self.clock = Clock(1_000.0)
        self.registry = LeaseRegistry(self.clock)

    def make_lease(self) -> ContractLease:
        return MemoryLease(self.registry, ttl=TTL)


async def test_memory_lease_without_ttl_never_expires() -> None:
    clock = Clock(0.0)
    registry = LeaseRegistry(clock)
    holder, other = MemoryLease(registry), MemoryLease(registry)
    assert await holder.acquire("counters")
    clock.advance(1e12)
    assert not await other.acquire("counters")
    assert await holder.renew("counters")


async def test_memory_leases_without_a_shared_registry_do_not_compete() -> None:
    first, second = MemoryLease(), MemoryLease()
    assert await first.acquire("counters")
    assert await second.acquire("counters")


class TestSqliteLease(LeaseContract):
    @pytest.fixture(autouse=True)
    def _where(self, tmp_path: Path) -> None:
        self.path = tmp_path / "read.db"

    def make_lease(self) -> ContractLease:
        return SqliteLease(self.path)

    async def expire(self, lease: ContractLease) -> None:
        """Unlock the holder's files behind its back, as the kernel does when its process
        dies (the descriptors stay open: closing them here could close a reused number)."""
        assert isinstance(lease, SqliteLease)
        for fd in lease._held.values():
            fcntl.flock(fd, fcntl.LOCK_UN)

    async def test_leases_are_lock_files_beside_the_database(self) -> None:
        lease = self.open()
        assert isinstance(lease, SqliteLease)
        assert await lease.acquire("a/b c")
        assert [p.name for p in lease.directory.iterdir()] == ["a%2Fb%20c.lock"]
        assert lease.directory == self.path.with_name("read.db-leases")

    async def test_a_removed_lock_file_makes_its_holder_stop(self) -> None:
        holder, other = self.open(), self.open()
        assert isinstance(holder, SqliteLease)
        assert await holder.acquire("counters")
        holder.lock_file("counters").unlink()
        assert await other.acquire("counters")  # a new file: nothing holds it
        assert not await holder.renew("counters")
        assert "counters" not in holder.held


@pytest.mark.postgres
class TestPgAdvisoryLease(LeaseContract):
    @pytest.fixture(autouse=True)
    def _where(self, pg_url: str) -> None:
        self.url = pg_url

    def make_lease(self) -> ContractLease:
        return PgAdvisoryLease(self.url)

    async def expire(self, lease: ContractLease) -> None:
        """End the holder's session on the server, and wait until it is gone (its advisory
        locks go with it)."""
        assert isinstance(lease, PgAdvisoryLease)
        conn = lease._conn
        assert conn is not None
        assert not conn.closed
        pid = conn.info.backend_pid
        await asyncio.to_thread(self._terminate, pid)

    def _terminate(self, pid: int) -> None:
        with psycopg.connect(self.url, autocommit=True) as admin:
            row = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
            assert row == (True,)
            deadline = time.monotonic() + 30
            while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                assert time.monotonic() < deadline, "the terminated session did not end"
                time.sleep(0.02)
