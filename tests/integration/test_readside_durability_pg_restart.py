"""An unclean stop of the PostgreSQL server (``pg_ctlcluster ... stop -m immediate``, what
a crash of the server leaves) while a projection catches up with ``synchronous_commit =
off`` (the read database's default): the read model may step back (the commits whose WAL
was not flushed yet are lost, rows and checkpoint together), the projection, in a process
that kept running, resumes by itself, and at the end the read model equals a from-scratch
run of the same projection over the same log: nothing applied twice, nothing skipped.

The server is down about as long as its crash recovery takes, once: other tests on the
machine share it (as ``tests/e2e/test_pg_restart.py``, whose helpers this reuses)."""

from __future__ import annotations

import asyncio
import functools
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from cqrskit.backends.postgres import PostgresDatabase, PostgresEventStore
from cqrskit.runner import ProjectionRunner
from tests.e2e.test_pg_restart import _cluster, _wait_ready
from tests.integration._projection_child import append_all, counters_codec, random_events
from tests.integration._readside_durability_child import LEDGER, Ledger, expected, read_ledger
from tests.integration.test_readside_durability import EVENTS, checkpoint, spawn, started

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class Watch(threading.Thread):
    """Reads the ledger's checkpoint in a loop on its own connection until the server goes
    away: the last position the read model was seen at (an asynchronous commit is visible
    to others at once, before its WAL is flushed)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen = 0
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                self.ready.set()
                while True:
                    row = conn.execute(
                        "SELECT position FROM cqrskit_projections WHERE name = %s", (LEDGER,)
                    ).fetchone()
                    self.seen = max(self.seen, 0 if row is None else int(row[0]))
                    time.sleep(0.0005)
        except psycopg.Error:
            return  # the server went away
        finally:
            self.ready.set()


def crash_and_restart(cluster: list[str], between: Callable[[], object]) -> tuple[float, float]:
    """``stop -m immediate`` (no shutdown checkpoint, WAL buffers not flushed: the server
    recovers from its WAL at start), ``between()``, then start at once; always brought back
    and waited for. Returns the seconds the stop took and the seconds the server was
    unavailable."""
    began = time.monotonic()
    stopped = began
    try:
        subprocess.run(
            [*cluster, "stop", "-m", "immediate"], check=True, timeout=60, capture_output=True
        )
        stopped = time.monotonic()
        between()
    finally:
        subprocess.run([*cluster, "start"], check=False, timeout=60, capture_output=True)
        _wait_ready()
    return stopped - began, time.monotonic() - began


async def test_unclean_stop_of_postgres_mid_catch_up_applies_every_event_once(
    pg_url_pair: tuple[str, str], pg_url: str, tmp_path: Path
) -> None:
    cluster = _cluster()
    write_url, read_url = pg_url_pair
    events = random_events(EVENTS, seed=17)
    store = await PostgresEventStore.open(write_url, counters_codec())
    try:
        assert await append_all(store, events, chunk=200) == EVENTS
    finally:
        await store.close()

    # A checkpoint of the server now keeps its crash recovery (the WAL replayed since the
    # last checkpoint) short: the outage is then mostly the stop and the start.
    with psycopg.connect(write_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    process = await spawn("postgresql", write_url, read_url, 3)
    try:
        assert await started(process) == "synchronous_commit=off"
        watch = Watch(read_url)
        watch.start()
        assert watch.ready.wait(10)
        await asyncio.sleep(0.5)  # mid-catch-up: 20,000 events in batches of 3 take longer
        # The child is frozen once the server is down (it has met the crash mid-batch),
        # until the recovered checkpoint has been read: else it could move it on first.
        freeze = functools.partial(process.send_signal, signal.SIGSTOP)
        stopping, down = await asyncio.to_thread(crash_and_restart, cluster, freeze)
        watch.join(10)
        seen = watch.seen
        db = PostgresDatabase(read_url, durability="strict", pool_max=1)
        try:
            after, _ = await checkpoint(db)
            rows, _ = await read_ledger(db)
        finally:
            await db.close()
            process.send_signal(signal.SIGCONT)
        # Whatever was lost went whole: the rows are exactly those up to the checkpoint.
        positions, totals = expected(events)
        assert rows == [p for p in positions if p <= after]
        assert 0 < after < EVENTS, "the crash did not land mid-catch-up"
        # The child kept running through the outage and finishes by itself.
        out, _ = await asyncio.wait_for(process.communicate(), 180)
        assert process.returncode == 0, out
        assert out.splitlines()[-1] == b"done", out
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGKILL)
            await process.communicate()

    store = await PostgresEventStore.open(write_url, counters_codec())
    live = PostgresDatabase(read_url, durability="strict")
    fresh = PostgresDatabase(pg_url)
    try:
        assert await read_ledger(live) == (positions, totals)
        assert await checkpoint(live) == (EVENTS, "stopped")
        # A from-scratch run of the same projection over the same log gives the same.
        runner = ProjectionRunner(store, fresh, [Ledger()], batch_size=500)
        async with runner:
            await runner.wait_for(LEDGER, EVENTS, timeout=120)
        assert await read_ledger(fresh) == await read_ledger(live)
    finally:
        await fresh.close()
        await live.close()
        await store.close()
    print(
        f"\npg unclean stop mid-catch-up: checkpoint last seen {seen}, after recovery {after}"
        f" (stepped back {seen - after}), server unavailable {down:.2f} s"
        f" (of which the stop {stopping:.2f} s)"
    )
