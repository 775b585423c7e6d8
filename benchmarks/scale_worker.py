"""One step of the scale benchmark in a process of its own:
``python -m benchmarks.scale_worker '<json spec>'``; prints ``{"figures": ..., "errors": ...}``
as its last stdout line (progress goes to stderr).

Steps: ``seed`` (the log, then the append probe), ``load`` (stream loads), ``catchup``
and ``rebuild``. Each runs in a fresh process so that none inherits another's caches,
threads or memory: the rebuild's peak RSS is its own, not the seeding's.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from cqrskit import EventStore, ProjectionRunner, ReadDatabase, Repository, rebuild
from cqrskit.backends.postgres import PostgresDatabase, PostgresEventStore
from cqrskit.backends.sqlite import SqliteDatabase, SqliteEventStore

from .measure import PeakSampler, Target
from .scale_workload import Account, Balances, LogWriter, Shape, codec
from .stats import percentile


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def open_store(target: Target, *, durable: bool = True) -> EventStore:
    """The log with its default durability, or (``durable=False``, seeding only) without
    waiting for the disk at each commit: SQLite ``synchronous=NORMAL`` (WAL synced at
    checkpoints only), PostgreSQL ``synchronous_commit=off``."""
    if target.backend == "sqlite":
        if durable:
            return await SqliteEventStore.open(target.write, codec())
        return await SqliteEventStore.open(target.write, codec(), synchronous="NORMAL")
    url = target.write
    if not durable:
        url += ("&" if "?" in url else "?") + "options=-c%20synchronous_commit%3Doff"
    return await PostgresEventStore.open(url, codec(), pool_timeout=30.0)


def open_read_db(target: Target) -> ReadDatabase:
    if target.backend == "sqlite":
        return SqliteDatabase(target.read)  # the read side's default durability
    return PostgresDatabase(target.read, pool_timeout=30.0)


async def _append(store: EventStore, writer: LogWriter, events: int) -> None:
    """Append ``events`` more events, one append_streams call at a time. (Two or four
    calls in flight seed no faster on SQLite, measured: the process is bound by its CPU.
    On PostgreSQL they would run on two connections, and a batch expecting the versions
    the previous one leaves could commit first and fail.)"""
    end = writer.written + events
    while writer.written < end:
        await store.append_streams(writer.batch(end - writer.written))
        if writer.written % 1_000_000 == 0:
            log(f"  appended {writer.written:,} events")


async def seed(target: Target, size: int, probe: int, shape: Shape) -> dict[str, float]:
    """Seed ``size - probe`` events fast, then append the last ``probe`` events with the
    default durability, timed: the append rate at that log size."""
    writer = LogWriter(shape)
    probe = max(1, min(probe, size))
    began = time.perf_counter()
    store = await open_store(target, durable=False)
    try:
        await _append(store, writer, size - probe)
    finally:
        await store.close()
    seeded = time.perf_counter() - began
    store = await open_store(target)
    try:
        start = time.perf_counter()
        await _append(store, writer, probe)
        elapsed = time.perf_counter() - start
    finally:
        await store.close()
    return {
        "append_events_per_s": probe / elapsed,
        "seed_s": seeded + elapsed,
        "log_mb": log_mb(target),
    }


def log_mb(target: Target) -> float:
    """Space the log takes: the SQLite file and its WAL, or PostgreSQL's events table with
    its indexes."""
    if target.backend == "sqlite":
        files = [Path(target.write + suffix) for suffix in ("", "-wal")]
        return sum(f.stat().st_size for f in files if f.exists()) / 1e6
    with psycopg.connect(target.write) as conn:
        row = conn.execute("SELECT pg_total_relation_size('cqrskit_events')").fetchone()
    return float(row[0] if row else 0) / 1e6


async def load(target: Target, shape: Shape, size: int, samples: int) -> dict[str, float]:
    """Time to load an aggregate (read its stream, decode, apply) whose stream is the one
    of a random event of the log's complete generations (each holds ``shape.length``
    events): median and p99 over ``samples`` streams as the machine has them (their pages
    in the OS cache or not), then the median of loading the same streams again (cached)."""
    store = await open_store(target)
    try:
        repository = Repository.for_type(store, Account)
        head = await store.head_position()
        complete = (size // shape.generation) * shape.generation or size
        span = max(1, head * complete // size)  # positions of complete streams (PG: gaps)
        rng = random.Random(size)
        ids = []
        for _ in range(samples + samples // 10):  # the first tenth warms up, untimed
            (record,) = await store.read_all(rng.randrange(span), 1)
            ids.append(record.aggregate_id)
        warmup, ids = ids[: samples // 10], ids[samples // 10 :]
        for account_id in warmup:
            await repository.load(account_id)
        found = [await _timed_load(repository, i, shape, size) for i in ids]
        again = [await _timed_load(repository, i, shape, size) for i in ids]
    finally:
        await store.close()
    return {
        "stream_load_ms": statistics.median(found),
        "stream_load_p99_ms": percentile(found, 99),
        "stream_load_cached_ms": statistics.median(again),
    }


async def _timed_load(
    repository: Repository[Account], account_id: str, shape: Shape, size: int
) -> float:
    """Milliseconds to load one account (checked to hold its whole stream)."""
    start = time.perf_counter()
    account = await repository.load(account_id)
    elapsed = time.perf_counter() - start
    if size >= shape.generation and account.version != shape.length:
        raise AssertionError(f"{account_id}: {account.version} events, not {shape.length}")
    return elapsed * 1000


async def catchup(target: Target) -> dict[str, float]:
    """The projection runner from position 0 to the head, on an empty read model."""
    store = await open_store(target)
    db = open_read_db(target)
    try:
        head = await store.head_position()
        events = await store.lag_events(0, head)
        runner = ProjectionRunner(store, db, [Balances()], batch_size=1000)
        start = time.perf_counter()
        await runner.start()
        try:
            await runner.wait_for(Balances.name, head, timeout=7200)
            elapsed = time.perf_counter() - start
        finally:
            await runner.stop()
        await check_read_model(db, events)
    finally:
        await db.close()
        await store.close()
    return {"catchup_events_per_s": events / elapsed}


async def check_read_model(db: ReadDatabase, events: int) -> None:
    """Every event was applied once: the deposits counted add up to the log's length."""
    row = await db.read(lambda tx: tx.fetchone("SELECT sum(deposits) FROM scale_balances"))
    if row is None or int(row[0]) != events:
        raise AssertionError(f"read model counts {row and row[0]} deposits, log has {events}")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM): all it ever held, rebuild included."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


async def rebuild_step(target: Target) -> dict[str, float]:
    """A blue/green rebuild over the read model the catch-up left (its live tables are
    replaced at the swap), with the RSS sampled meanwhile."""
    store = await open_store(target)
    db = open_read_db(target)
    try:
        events = await store.lag_events(0, await store.head_position())
        gc.collect()
        with PeakSampler() as sampler:
            start = time.perf_counter()
            result = await rebuild(store, db, Balances())
            elapsed = time.perf_counter() - start
        await check_read_model(db, events)
    finally:
        await db.close()
        await store.close()
    return {
        "rebuild_events_per_s": result.events / elapsed,
        "rebuild_s": elapsed,
        "rebuild_peak_mb": sampler.growth_mb,
        "rebuild_rss_mb": peak_rss_mb(),
    }


def run_step(spec: dict[str, Any]) -> dict[str, float]:
    target = Target(**spec["target"])
    shape = Shape(**spec["shape"])
    steps: dict[str, Callable[[], Any]] = {
        "seed": lambda: seed(target, spec["size"], spec["probe"], shape),
        "load": lambda: load(target, shape, spec["size"], spec["loads"]),
        "catchup": lambda: catchup(target),
        "rebuild": lambda: rebuild_step(target),
    }
    figures: dict[str, float] = asyncio.run(steps[spec["step"]]())
    return figures


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    errors: list[str] = []
    figures: dict[str, float] = {}
    try:
        figures = run_step(spec)
    except Exception as exc:
        traceback.print_exc()
        errors.append(f"{spec['step']}: {type(exc).__name__}: {exc}")
    print(json.dumps({"figures": figures, "errors": errors}), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
