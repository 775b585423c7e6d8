"""PgAdvisoryLease: one holder per projection; a SIGKILLed holder's standby takes over.

Run as a module (``python -m tests.integration.test_pg_lease WRITE_URL READ_URL``) this
file is the worker process of the failover test: a ProjectionRunner of the counters
projection with a PgAdvisoryLease, running until it is killed.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import psycopg
import pytest

from cqrskit import Event
from cqrskit.backends.postgres import PgAdvisoryLease, PostgresDatabase, PostgresEventStore
from cqrskit.runner import ProjectionRunner
from tests.integration._projection_child import (
    append_all,
    counters_codec,
    random_events,
    read_counts,
    replay,
)
from tests.integration.test_pg_readside import PgCounters

pytestmark = pytest.mark.postgres


async def test_one_holder_at_a_time_and_release_hands_over(pg_url: str) -> None:
    first, second = PgAdvisoryLease(pg_url), PgAdvisoryLease(pg_url)
    try:
        assert await first.acquire("counters")
        assert await first.acquire("counters")  # re-acquiring what one holds: still held
        assert not await second.acquire("counters")
        assert await second.acquire("other")  # leases are per name
        assert await first.renew("counters")
        assert not await second.renew("counters")
        await first.release("counters")
        assert not await first.renew("counters")
        assert await second.acquire("counters")
        assert not await first.acquire("counters")
    finally:
        await first.close()
        await second.close()


async def test_renew_fails_once_the_holders_session_is_gone(pg_url: str) -> None:
    holder, standby = PgAdvisoryLease(pg_url), PgAdvisoryLease(pg_url)
    try:
        assert await holder.acquire("counters")
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'cqrskit-lease' AND datname = current_database()"
            )
        assert not await holder.renew("counters")
        assert await standby.acquire("counters")
        assert not await holder.acquire("counters")  # reconnects, finds it taken
        await standby.close()  # closing releases
        assert await holder.acquire("counters")
    finally:
        await holder.close()
        await standby.close()


def checkpoint(read_url: str) -> int:
    with psycopg.connect(read_url, autocommit=True) as conn:
        try:
            row = conn.execute(
                "SELECT position FROM cqrskit_projections WHERE name = 'counters'"
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return 0 if row is None else int(row[0])


async def spawn(write_url: str, read_url: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.test_pg_lease",
        write_url,
        read_url,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line == b"started\n"
    return process


async def wait_until(predicate: object, timeout: float) -> float:
    """Seconds until ``predicate()`` is true (fails after ``timeout``)."""
    assert callable(predicate)
    start = time.monotonic()
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() - start < timeout, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def trickle(store: PostgresEventStore, events: list[Event]) -> int:
    """Append ``events`` 10 at a time, about 200 appends a second; returns the last position."""
    position = 0
    for i in range(0, len(events), 10):
        position = (await store.append(f"trickle-{i % 7}", events[i : i + 10])).position
        await asyncio.sleep(0.005)
    return position


async def test_sigkill_of_the_active_worker_hands_over_exactly(
    pg_url_pair: tuple[str, str],
) -> None:
    write_url, read_url = pg_url_pair
    store = await PostgresEventStore.open(write_url, counters_codec())
    workers: list[asyncio.subprocess.Process] = []
    try:
        await append_all(store, random_events(4_000, seed=11), chunk=50)
        active = await spawn(write_url, read_url)
        workers.append(active)
        await wait_until(lambda: checkpoint(read_url) > 0, 20)
        standby = await spawn(write_url, read_url)  # the lease is taken: it stands by
        workers.append(standby)
        more = asyncio.create_task(trickle(store, random_events(2_000, seed=12)))
        await asyncio.sleep(0.3)
        active.send_signal(signal.SIGKILL)  # mid-stream: it is applying what trickles in
        await active.wait()
        killed_at = checkpoint(read_url)
        takeover = await wait_until(lambda: checkpoint(read_url) > killed_at, 10)
        last = await more  # not head_position(): the head may lag behind for a moment
        await wait_until(lambda: checkpoint(read_url) == last, 30)
        print(f"standby took over {takeover:.2f}s after the SIGKILL")
        db = PostgresDatabase(read_url)
        try:
            counts = await read_counts(db)
        finally:
            await db.close()
        logged = [store.codec.decode(e) for e in await store.read_all(0, limit=1_000_000)]
        assert len(logged) == 6_000
        assert counts == replay(logged)  # `events` per counter: a double apply would show
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGKILL)
                await worker.wait()
        await store.close()


async def _worker(write_url: str, read_url: str) -> None:
    store = await PostgresEventStore.open(write_url, counters_codec(), pool_max=2)
    db = PostgresDatabase(read_url)
    lease = PgAdvisoryLease(read_url)
    runner = ProjectionRunner(
        store, db, [PgCounters()], batch_size=25, lease=lease, lease_interval=0.2
    )
    try:
        async with runner:
            print("started", flush=True)
            await asyncio.Event().wait()  # until killed
    finally:
        await lease.close()
        await db.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(_worker(sys.argv[1], sys.argv[2]))
