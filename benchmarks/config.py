"""Sizes of a run: the full run and the QUICK one differ only in these numbers; and the
PostgreSQL pools each system gets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cqrskit.backends.postgres.url import split_budget
from cqrskit.connect import Options

READ_DURABILITY_ENV = "CQRSKIT_BENCH_READ_DURABILITY"
"""How the orchestrator tells its workers the durability of cqrskit's read database
(``--read-durability``: ``relaxed`` or ``strict``); unset: cqrskit's default."""

CQRSKIT_PG_POOLS = split_budget(Options().connections)
"""cqrskit's PostgreSQL pools: those an application gets by default (``cqrskit.connect``
splits its budget of 12 connections: 4 for the event store, 5 for the read database).
Its clients are asyncio tasks that hold a connection only while a statement runs, so its
pools are sized for the machine and the server, not for the number of clients: on this
2-core machine 32 connections ran 30-45% slower than 4 to 12 (docs/benchmarks.md)."""

ES_PG_POOL = 32
"""eventsourcing's pool: each of its client threads holds a connection for a whole
command, so one per client (32); it ran 10-27% slower with 8."""


@dataclass(frozen=True, slots=True)
class Sizes:
    repetitions: int
    command_seconds: float
    """How long each commands_per_s measurement runs."""
    catchup_events: int
    rebuild_events: int
    replay_time_cap: float
    """A catch-up or rebuild that would take longer is measured over what it did in this
    many seconds (the rate stays a rate; only slow systems hit the cap)."""
    lag_samples: int
    lag_time_cap: float
    """A lag run stops after this many seconds even if it has fewer samples (a backend that
    makes each command wait long for visibility would otherwise take minutes)."""
    http_seconds: float
    slow_seed_events: int
    pg_seed_events: int
    """Length of the logs seeded on PostgreSQL. cqrskit's appends there run at ~1,500/s on
    this machine, so a 1,000,000-event log would take over ten minutes to seed; replay
    rates are measured over what fits in ``replay_time_cap`` anyway."""
    """Length of the log seeded for eventsourcing, whose per-event transactions cannot get
    past this many events within ``replay_time_cap`` (seeding it a longer log only costs
    time: its catch-up and rebuild rates are measured over what fits in the cap)."""
    http_connections: int = 64

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Sizes(
    repetitions=3,
    command_seconds=3.0,
    catchup_events=100_000,
    rebuild_events=1_000_000,
    replay_time_cap=20.0,
    lag_samples=400,
    lag_time_cap=15.0,
    http_seconds=5.0,
    slow_seed_events=100_000,
    pg_seed_events=100_000,
)

QUICK = Sizes(
    repetitions=3,
    command_seconds=0.75,
    catchup_events=20_000,
    rebuild_events=100_000,
    replay_time_cap=2.0,
    lag_samples=100,
    lag_time_cap=3.0,
    http_seconds=1.0,
    slow_seed_events=20_000,
    pg_seed_events=20_000,
)
