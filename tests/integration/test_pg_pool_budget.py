"""PostgreSQL connections: an exhausted pool fails fast, one process keeps to its budget.

Hardening finding 11: with PostgreSQL exhausted each read waited the pool's whole timeout
(30 s, cut at the 8 s request deadline) before its 503, and one ``social`` process could
hold 27 connections. Now a call that gets no connection within ``pool_timeout`` fails with
``OperationalError`` (503 + ``Retry-After`` in social), and ``Settings.pg_connections``
bounds every connection of a process, counted here in ``pg_stat_activity``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from cqrskit import ConfigurationError, OperationalError
from cqrskit.backends.postgres import PostgresDatabase, PostgresEventStore
from cqrskit.backends.postgres.connection import PgTx
from cqrskit.backends.postgres.url import MIN_CONNECTIONS as MIN_PG_CONNECTIONS
from cqrskit.backends.postgres.url import PoolSizes as PgPoolSizes
from cqrskit.backends.postgres.url import split_budget
from social.application.commands import CreatePost, FollowUser, RegisterUser
from social.application.queries import GetUser, ListPosts
from social.domain import ScryptParams
from social.infrastructure.bootstrap import SocialApp
from social.infrastructure.settings import DEFAULT_PG_CONNECTIONS, Settings
from tests.conftest import PG_ADMIN_URL
from tests.integration._projection_child import counters_codec

pytestmark = pytest.mark.postgres

FAST = ScryptParams(n=2**10)
OLD_WAITS = (8.0, 30.0)
"""What a call waited before: the request deadline, the pool's own timeout."""


def _dbname(url: str) -> str:
    return url.rpartition("/")[2]


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        await asyncio.sleep(0.005)


class Holders:
    """Keeps every connection of a pool busy until released: through the pool's own calls
    (its threads all busy: a further call waits in the queue) or from plain threads (its
    connections all taken: a further call waits in the pool's getconn)."""

    def __init__(self, db: PostgresDatabase, count: int, via: str) -> None:
        self.release = threading.Event()
        self._entered = threading.Semaphore(0)
        self._count = count
        self.entered = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._threads: list[threading.Thread] = []
        for _ in range(count):
            if via == "calls":
                self._tasks.append(asyncio.create_task(db.read(self._hold)))
            else:
                thread = threading.Thread(target=self._hold_connection, args=(db,), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _hold(self, tx: PgTx) -> None:
        tx.fetchone("SELECT 1")
        self._enter()

    def _hold_connection(self, db: PostgresDatabase) -> None:
        with db.connection() as conn:
            conn.execute("SELECT 1")
            self._enter()

    def _enter(self) -> None:
        self.entered += 1  # under the GIL, from threads that each add one
        self.release.wait(30)

    async def busy(self) -> None:
        await _until(lambda: self.entered == self._count)

    async def done(self) -> None:
        self.release.set()
        await asyncio.gather(*self._tasks)
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 30)


# -- (a) an exhausted pool fails fast ----------------------------------------------------------


@pytest.mark.parametrize("via", ["calls", "connections"])
async def test_an_exhausted_pool_fails_fast_then_recovers(pg_url: str, via: str) -> None:
    db = PostgresDatabase(pg_url, pool_min=1, pool_max=2, pool_timeout=1.0)
    try:
        assert await db.read(lambda tx: tx.fetchone("SELECT 1")) == (1,)
        holders = Holders(db, 2, via)
        try:
            await holders.busy()
            started = time.monotonic()
            with pytest.raises(
                OperationalError,
                match=r"no free connection in cqrskit-read's pool \(2 of 2 in use\) within"
                r" 1\.0s: the pool is exhausted",
            ):
                await db.read(lambda tx: tx.fetchone("SELECT 1"))
            elapsed = time.monotonic() - started
        finally:
            await holders.done()
        # It waited its pool_timeout, not the request deadline nor the old 30 s.
        assert 0.8 <= elapsed < 3.0, elapsed
        assert elapsed < min(OLD_WAITS)
        assert await db.read(lambda tx: tx.fetchone("SELECT 2")) == (2,)  # recovered
    finally:
        await db.close()


async def test_a_call_refused_for_want_of_a_connection_never_runs(pg_url: str) -> None:
    """The 503 of a write refused this way means "not stored", not "unknown"."""
    db = PostgresDatabase(pg_url, pool_min=1, pool_max=1, pool_timeout=0.5)
    try:
        await db.write(lambda tx: tx.execute("CREATE TABLE refused (k TEXT)"))
        holders = Holders(db, 1, "calls")
        try:
            await holders.busy()
            with pytest.raises(OperationalError, match="the pool is exhausted"):
                await db.write(lambda tx: tx.execute("INSERT INTO refused VALUES ('late')"))
        finally:
            await holders.done()
        await asyncio.sleep(0.2)  # the thread has taken the abandoned call by now
        assert await db.read(lambda tx: tx.fetchone("SELECT count(*) FROM refused")) == (0,)
    finally:
        await db.close()


async def test_a_call_behind_threads_busy_with_queued_calls_still_fails_fast(pg_url: str) -> None:
    """The thread of the one connection finishes a call and takes one that was queued
    behind it, which then holds it: a call made now fails at its deadline. (The pool
    counted that thread idle, so the call skipped its deadline's timer and waited until
    a thread came free: here, 30 s.)"""
    db = PostgresDatabase(pg_url, pool_min=1, pool_max=1, pool_timeout=0.5)
    first, second = threading.Event(), threading.Event()
    entered = threading.Semaphore(0)

    def holding(until: threading.Event) -> Callable[[PgTx], None]:
        def hold(tx: PgTx) -> None:
            tx.fetchone("SELECT 1")
            entered.release()
            until.wait(30)

        return hold

    try:
        a = asyncio.create_task(db.read(holding(first)))
        assert await asyncio.to_thread(entered.acquire, True, 10)
        b = asyncio.create_task(db.read(holding(second)))  # queued behind a
        await asyncio.sleep(0.05)
        first.set()  # well before b's deadline: the thread takes b
        await a
        assert await asyncio.to_thread(entered.acquire, True, 10)
        started = time.monotonic()
        with pytest.raises(OperationalError, match="the pool is exhausted"):
            await db.read(lambda tx: tx.fetchone("SELECT 1"))
        assert 0.4 <= time.monotonic() - started < 3.0
        second.set()
        await b
    finally:
        first.set()
        second.set()
        await db.close()


@pytest.fixture
def limited_role(pg_url: str) -> Iterator[str]:
    """A login role that may hold ONE connection: a server out of connections for it."""
    role = f"cqrskit_budget_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
    try:
        yield make_conninfo(pg_url, user=role)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')  # it owns nothing


async def test_a_server_without_connections_to_spare_fails_fast(limited_role: str) -> None:
    db = PostgresDatabase(limited_role, pool_min=1, pool_max=4, pool_timeout=1.0)
    try:
        holders = Holders(db, 1, "calls")  # the one connection the server grants
        try:
            await holders.busy()
            started = time.monotonic()
            with pytest.raises(
                OperationalError,
                match=r"\(1 of 4 in use\) within 1\.0s: it could not open another connection",
            ):
                await db.read(lambda tx: tx.fetchone("SELECT 1"))
            elapsed = time.monotonic() - started
        finally:
            await holders.done()
        assert 0.8 <= elapsed < 3.0, elapsed
    finally:
        await db.close()


async def test_the_event_store_pool_fails_fast_too(pg_url: str) -> None:
    store = await PostgresEventStore.open(
        pg_url, counters_codec(), pool_min=1, pool_max=1, pool_timeout=0.5
    )
    release = threading.Event()
    try:
        holder = asyncio.create_task(store.query(lambda tx: release.wait(30)))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(OperationalError, match="cqrskit-events's pool"):
            await store.head_position()
        assert time.monotonic() - started < 2.0
        release.set()
        assert await holder
        assert store.max_connections == 3  # its pool, the notifier's and the listener's
    finally:
        release.set()
        await store.close()


# -- (b) one social process keeps to its budget ------------------------------------------------


class Sampler:
    """Counts, every few milliseconds from the admin database, the client connections to
    the given databases by application_name; keeps the peaks."""

    def __init__(self, databases: list[str]) -> None:
        self._databases = databases
        self._stop = threading.Event()
        self.peak = 0
        self.peak_by_name: dict[str, int] = {}
        self.samples = 0
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def count(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        rows = conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity"
            " WHERE datname = ANY(%s) AND backend_type = 'client backend'"
            " GROUP BY application_name",
            (self._databases,),
        ).fetchall()
        return {str(name): int(n) for name, n in rows}

    def _main(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            while not self._stop.is_set():
                counts = self.count(conn)
                self.samples += 1
                self.peak = max(self.peak, sum(counts.values()))
                for name, n in counts.items():
                    self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), n)
                time.sleep(0.003)

    def now(self) -> int:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            return sum(self.count(conn).values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def test_one_social_process_never_holds_more_than_its_budget(
    pg_url_pair: tuple[str, str], tmp_path: Path
) -> None:
    budget = 10  # pools: events 3, read 4; plus NOTIFY, LISTEN and the lease
    write_url, read_url = pg_url_pair
    settings = Settings(
        data_dir=tmp_path,
        write_url=write_url,
        read_url=read_url,
        secret=b"s" * 32,
        scrypt=FAST,
        batch_size=7,
        pg_connections=budget,
    )
    assert split_budget(settings.pg_connections) == PgPoolSizes(events=3, read=4)
    sampler = Sampler([_dbname(write_url), _dbname(read_url)])
    try:
        app = SocialApp(settings)
        try:
            await app.open()
            assert sampler.now() <= budget  # right after start
            ids = [
                (
                    await app.commands.dispatch(RegisterUser(f"u{i}@example.com", "password1"))
                ).value.id
                for i in range(4)
            ]
            written = (await app.commands.dispatch(FollowUser(ids[0], ids[1]))).position
            await app.wait_for([p.name for p in app.projections], written)

            async def slow_write_side() -> None:
                await app.store.query(lambda tx: tx.execute("SELECT pg_sleep(0.15)"))

            async def slow_read_side() -> None:
                await app.db.read(lambda tx: tx.execute("SELECT pg_sleep(0.15)"))

            # More concurrency than the pools have connections (the old pools, 16 and 8,
            # would have opened one per call): both pools fill up, with the notifier, the
            # listener and the lease connected.
            results = await asyncio.gather(
                *(slow_write_side() for _ in range(12)),
                *(slow_read_side() for _ in range(12)),
                *(app.commands.dispatch(CreatePost(ids[i % 4], f"post {i}")) for i in range(12)),
                *(app.queries.ask(GetUser(ids[i % 4])) for i in range(12)),
                *(app.queries.ask(ListPosts(ids[i % 4])) for i in range(12)),
                return_exceptions=True,
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            # Any failure is the fail-fast answer to a full pool, nothing else.
            assert all(isinstance(f, OperationalError) for f in failures), failures
            head = await app.store.head_position()
            await app.wait_for([p.name for p in app.projections], head)
        finally:
            await app.close()  # stopping the listener must not open a connection either
    finally:
        sampler.stop()
    assert sampler.samples > 10
    assert sampler.peak <= budget, sampler.peak_by_name
    # The budget is the real maximum: every connection it counts was open at once.
    assert sampler.peak == budget, sampler.peak_by_name
    assert sampler.peak_by_name.get("cqrskit-events", 0) <= 3, sampler.peak_by_name
    assert sampler.peak_by_name.get("cqrskit-read", 0) <= 4, sampler.peak_by_name
    for dedicated in ("cqrskit-notify", "cqrskit-listen", "cqrskit-lease"):
        assert sampler.peak_by_name.get(dedicated) == 1, sampler.peak_by_name


# -- (c) a budget too small is refused ---------------------------------------------------------


def test_the_budget_is_split_deterministically_and_too_small_is_refused() -> None:
    assert DEFAULT_PG_CONNECTIONS == 12
    assert split_budget(Settings().pg_connections) == PgPoolSizes(events=4, read=5)
    assert split_budget(MIN_PG_CONNECTIONS) == PgPoolSizes(2, 2)
    assert split_budget(20) == PgPoolSizes(events=8, read=9)
    for budget in (MIN_PG_CONNECTIONS + 1, 12, 31):
        pools = split_budget(budget)
        assert pools.write_database + pools.read_database == budget
    with pytest.raises(ConfigurationError, match=r"budget of 6 .* too small.*give at least 7"):
        split_budget(MIN_PG_CONNECTIONS - 1)
    with pytest.raises(ConfigurationError, match="shorter than the request timeout"):
        SocialApp(
            Settings(write_url="postgresql://x/w", read_url="postgresql://x/r", pg_pool_timeout=8.0)
        )


def test_the_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIAL_PG_CONNECTIONS", "20")
    monkeypatch.setenv("SOCIAL_PG_POOL_TIMEOUT", "0.5")
    settings = Settings.from_env()
    assert (settings.pg_connections, settings.pg_pool_timeout) == (20, 0.5)
    monkeypatch.setenv("SOCIAL_PG_CONNECTIONS", "many")
    with pytest.raises(ConfigurationError, match="SOCIAL_PG_CONNECTIONS must be a whole number"):
        Settings.from_env()


async def test_bootstrap_refuses_a_budget_too_small_before_connecting(
    pg_url_pair: tuple[str, str], tmp_path: Path
) -> None:
    write_url, read_url = pg_url_pair
    settings = Settings(
        data_dir=tmp_path, write_url=write_url, read_url=read_url, secret=b"s" * 32,
        pg_connections=MIN_PG_CONNECTIONS - 1,
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match="too small"):
        await SocialApp(settings).open()
    with psycopg.connect(write_url, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('cqrskit_events')").fetchone()
    assert row == (None,)  # not even migrated
