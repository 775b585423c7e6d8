"""PostgreSQL appends/s: cqrskit's gap-free store vs the table-lock approach, same run.

The table-lock approach (what the `eventsourcing` library does on PostgreSQL) takes
``LOCK TABLE ... IN EXCLUSIVE MODE`` in every append so that positions commit in order;
writers then commit one at a time, one WAL flush each. cqrskit allocates positions with
the transaction id in a microsecond critical section instead and lets commits overlap
(see ``cqrskit/backends/postgres/store.py``). Both run here on the same store code,
differing only in that, with 1 and 32 concurrent writers, repetitions interleaved, each on a
fresh database. Results: ``benchmarks/results/pg_appends.json`` (same shape as latest.json).

    python -m benchmarks.pg_appends [--quick] [--pg-url URL] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from cqrskit import Codec, Event, RecordedEvent
from cqrskit.backends.postgres import PostgresEventStore
from cqrskit.backends.postgres._append import Appender, appended_records
from cqrskit.backends.postgres._statements import APPEND, append_params

from .stats import Figure, machine_info, results_document, write_results

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = Path(__file__).parent / "results" / "pg_appends.json"


@dataclass(frozen=True)
class Happened(Event):
    n: int
    text: str = "x" * 100


class TableLockAppender(Appender):
    """The same append statement, run after ``LOCK TABLE`` in one transaction (``BEGIN``,
    ``LOCK``, the statement, ``COMMIT``: three round trips more than cqrskit's autocommit
    statement; pipelining them measured slower still)."""

    def _try_append(
        self,
        stream_id: str,
        wanted: int | None,
        ids: list[str],
        encoded: list[tuple[str, int, bytes]],
        meta: bytes,
        events: Sequence[Event],
        keys: Mapping[str, bytes] | None,
    ) -> list[RecordedEvent]:
        params = append_params(stream_id, wanted, ids, meta=meta, encoded=encoded)
        with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
            conn.execute("LOCK TABLE cqrskit_events IN EXCLUSIVE MODE")
            rows = sorted(conn.execute(APPEND, params).fetchall(), key=lambda r: int(r[1]))
        return appended_records(stream_id, ids, encoded, meta, rows) if rows else []


class TableLockStore(PostgresEventStore):
    """cqrskit's store with :class:`TableLockAppender` for its appends."""

    def __init__(self, url: str, codec: Codec, **options: Any) -> None:
        super().__init__(url, codec, **options)
        self._appender = TableLockAppender(self._pool, self._inline_handlers)


SYSTEMS: dict[str, type[PostgresEventStore]] = {
    "cqrskit": PostgresEventStore,
    "table-lock": TableLockStore,
}


async def appends_per_s(
    cls: type[PostgresEventStore], url: str, writers: int, secs: float
) -> float:
    store = await cls.open(url, Codec([Happened]), pool_min=min(writers, 32), pool_max=writers + 1)
    count = 0
    deadline = time.perf_counter() + secs

    async def writer(w: int) -> None:
        nonlocal count
        i = 0
        while time.perf_counter() < deadline:
            await store.append(f"s-{w}-{i % 10}", [Happened(i)])
            i += 1
            count += 1

    start = time.perf_counter()
    try:
        await asyncio.gather(*(writer(w) for w in range(writers)))
    finally:
        await store.close()
    return count / (time.perf_counter() - start)


def _database(admin: str) -> tuple[str, str]:
    name = f"bench_appends_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{admin.rsplit('/', 1)[0]}/{name}"


def _drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(admin: str, *, secs: float, repetitions: int) -> list[Figure]:
    samples: dict[tuple[str, int], list[float]] = {}
    order = list(SYSTEMS)
    for rep in range(repetitions):
        for writers in (1, 32):
            for system in order[rep % 2 :] + order[: rep % 2]:  # rotate who goes first
                name, url = _database(admin)
                try:
                    rate = asyncio.run(appends_per_s(SYSTEMS[system], url, writers, secs))
                finally:
                    _drop(admin, name)
                samples.setdefault((system, writers), []).append(rate)
                print(f"  {system:10} writers={writers:2}: {rate:8.0f} appends/s", flush=True)
    return [
        Figure(
            name=f"appends_per_s_{writers}",
            system=system,
            backend="postgresql",
            median=float(statistics.median(values)),
            min=min(values),
            max=max(values),
            unit="appends/s",
            samples=len(values),
        )
        for (system, writers), values in sorted(samples.items())
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 s per measurement, not 4")
    parser.add_argument("--pg-url", default=DEFAULT_URL)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        with psycopg.connect(args.pg_url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        print(f"pg_appends: PostgreSQL at {args.pg_url} does not answer ({exc}); skipped")
        return
    secs = 1.0 if args.quick else 4.0
    figures = run(args.pg_url, secs=secs, repetitions=args.repetitions)
    doc = results_document(
        machine_info(str(row[0]) if row else None), figures, {"quick": args.quick, "secs": secs}
    )
    write_results(args.out, doc)
    by = {(f.system, f.name): f.median for f in figures}
    for writers in (1, 32):
        ours, locked = (
            by[("cqrskit", f"appends_per_s_{writers}")],
            by[("table-lock", f"appends_per_s_{writers}")],
        )
        print(
            f"appends/s, {writers:2} writers: cqrskit {ours:8.0f}  table-lock {locked:8.0f}"
            f"  ratio {ours / locked:5.2f}x"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
