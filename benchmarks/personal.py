"""What personal data costs: commands/s and catch-up with sealed fields against the same
events in clear, on SQLite and PostgreSQL, repetitions interleaved (issue 13's target: at
most 15% slower).

The same aggregate and events twice over: ``Sealed*`` declare their email and name
personal (``cqrskit.personal``), ``Plain*`` are identical without the declaration.

- ``register``: a command per new member (the first key is made in the append's
  transaction), 32 at once: every command seals (the worst case).
- ``update``: a command per existing member: load its stream (its fields opened) and append
  a sealed change, 32 at once: every command seals.
- ``commands``: the mix of a social service, per member: the registration, a profile
  change and :data:`POSTS` posts (events in clear either way): all of them, 32 at once.
- ``catchup``: a projection writing a row per event reads that whole log from position 0.

Each figure is printed as a JSON line; ``*_ratio`` is sealed / plain (1.0: no cost).
Results: ``benchmarks/results/personal.json`` (same shape as latest.json).

    python -m benchmarks.personal [--quick] [--pg-url URL] [--repetitions N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cqrskit import (
    Aggregate,
    Codec,
    Event,
    EventStore,
    Projection,
    RecordedEvent,
    Repository,
    SqlTx,
    handles,
    rebuild,
)
from cqrskit.backends.postgres import PostgresDatabase, PostgresEventStore
from cqrskit.backends.sqlite import SqliteDatabase, SqliteEventStore
from cqrskit.readside import ReadDatabase

from .stats import Figure, machine_info, results_document, write_results

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = Path(__file__).parent / "results" / "personal.json"
CLIENTS = 32
POSTS = 8
"""Posts per member in the mix: social's posts and follows outnumber profile events."""


@dataclass(frozen=True)
class Posted(Event):
    member: str
    text: str


@dataclass(frozen=True)
class SealedJoined(Event):
    __data_subject__ = "member"
    __personal_fields__ = ("email", "name")
    member: str
    email: str
    name: str | None


@dataclass(frozen=True)
class SealedRenamed(Event):
    __data_subject__ = "member"
    __personal_fields__ = ("name",)
    member: str
    name: str | None


@dataclass(frozen=True)
class PlainJoined(Event):
    member: str
    email: str
    name: str | None


@dataclass(frozen=True)
class PlainRenamed(Event):
    member: str
    name: str | None


KINDS: dict[str, tuple[type[Event], type[Event]]] = {
    "sealed": (SealedJoined, SealedRenamed),
    "plain": (PlainJoined, PlainRenamed),
}


class Member(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.name: str | None = None

    def apply(self, event: Event) -> None:
        self.name = getattr(event, "name", None)


class Names(Projection):
    name = "names"
    tables = ("bench_names",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS bench_names (id TEXT PRIMARY KEY, name TEXT)")

    @handles(SealedJoined, PlainJoined, SealedRenamed, PlainRenamed, Posted)
    def on_named(self, tx: SqlTx, event: Event, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO bench_names (id, name) VALUES (?, ?)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            (getattr(event, "member"), getattr(event, "name", None)),  # noqa: B009
        )


def codec() -> Codec:
    return Codec([Posted, *(cls for pair in KINDS.values() for cls in pair)])


async def _clients(n: int, work: object) -> float:
    """``n`` commands by :data:`CLIENTS` concurrent clients; commands per second."""
    queue = iter(range(n))

    async def client() -> None:
        for i in queue:
            await work(i)  # type: ignore[operator]

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return n / (time.perf_counter() - start)


async def measure(store: EventStore, db: ReadDatabase, kind: str, n: int) -> dict[str, float]:
    joined, renamed = KINDS[kind]
    members = Repository.for_type(store, Member)
    ids = [f"{kind}-{uuid.uuid4().hex[:10]}-{i}" for i in range(n)]

    async def register(i: int) -> None:
        member = Member(ids[i])
        member.record(joined(ids[i], f"m{i}@example.org", f"Member {i}"))  # type: ignore[call-arg]
        await members.save(member)

    async def update(i: int) -> None:
        member = await members.load(ids[i])
        member.record(renamed(ids[i], f"Renamed {i}"))  # type: ignore[call-arg]
        await members.save(member)

    async def post(i: int) -> None:
        await store.append(f"post-{ids[i % n]}-{i}", [Posted(ids[i % n], f"post {i}")])

    started = time.perf_counter()
    registered = await _clients(n, register)
    updated = await _clients(n, update)
    await _clients(n * POSTS, post)
    mix = n * (2 + POSTS) / (time.perf_counter() - started)
    started = time.perf_counter()
    result = await rebuild(store, db, Names())
    caught_up = result.events / (time.perf_counter() - started)
    return {"register": registered, "update": updated, "commands": mix, "catchup": caught_up}


async def _sqlite(kind: str, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteEventStore.open(Path(tmp) / "write.db", codec())
        db = SqliteDatabase(Path(tmp) / "read.db")
        try:
            return await measure(store, db, kind, n)
        finally:
            await store.close()
            await db.close()


async def _postgres(admin: str, kind: str, n: int) -> dict[str, float]:
    name = f"bench_personal_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin.rsplit('/', 1)[0]}/{name}"
    try:
        store = await PostgresEventStore.open(url, codec(), pool_max=CLIENTS + 1)
        db = PostgresDatabase(url)
        try:
            return await measure(store, db, kind, n)
        finally:
            await store.close()
            await db.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(backends: Sequence[str], admin: str, n: int, repetitions: int) -> list[Figure]:
    samples: dict[tuple[str, str, str], list[float]] = {}
    kinds = list(KINDS)
    for rep in range(repetitions):
        for backend in backends:
            for kind in kinds[rep % 2 :] + kinds[: rep % 2]:  # rotate who goes first
                job = _sqlite(kind, n) if backend == "sqlite" else _postgres(admin, kind, n)
                rates = asyncio.run(job)
                for figure, rate in rates.items():
                    samples.setdefault((figure, kind, backend), []).append(rate)
                shown = ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items())
                print(f"  {backend:10} {kind:6}: {shown}", flush=True)
    figures = [
        Figure(f"personal_{figure}_per_s", kind, backend, statistics.median(v), min(v), max(v),
               "per s", len(v))
        for (figure, kind, backend), v in sorted(samples.items())
    ]  # fmt: skip
    for backend in backends:
        for figure in ("commands", "catchup", "register", "update"):
            sealed = samples[(figure, "sealed", backend)]
            plain = samples[(figure, "plain", backend)]
            ratios = [s / p for s, p in zip(sealed, plain, strict=True)]
            figures.append(
                Figure(f"personal_{figure}_ratio", "cqrskit", backend,
                       statistics.median(ratios), min(ratios), max(ratios), "x", len(ratios))
            )  # fmt: skip
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000 members, not 4,000")
    parser.add_argument("--pg-url", default=DEFAULT_URL)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    backends = ["sqlite"]
    pg_version = None
    try:
        with psycopg.connect(args.pg_url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        backends.append("postgresql")
        pg_version = str(row[0]) if row else None
    except psycopg.Error as exc:
        print(f"personal: PostgreSQL at {args.pg_url} does not answer ({exc}); SQLite only")
    n = 1_000 if args.quick else 4_000
    figures = run(backends, args.pg_url, n, args.repetitions)
    for f in figures:
        if f.name.endswith("_ratio"):
            line = {"name": f.name, "backend": f.backend, "median": round(f.median, 3),
                    "min": round(f.min, 3), "max": round(f.max, 3),
                    "samples": f.samples}  # fmt: skip
            print(json.dumps(line))
    settings = {"quick": args.quick, "members": n, "posts": POSTS, "clients": CLIENTS}
    write_results(args.out, results_document(machine_info(pg_version), figures, settings))


if __name__ == "__main__":
    main()
