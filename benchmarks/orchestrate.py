"""The run: seed one store per system and backend, then repeat every measurement,
interleaving systems (their order rotates each repetition) so noise hits all alike."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from . import BACKENDS, SYSTEMS
from .config import CQRSKIT_PG_POOLS, ES_PG_POOL, FULL, QUICK, READ_DURABILITY_ENV, Sizes
from .measure import Target
from .pg import DEFAULT_ADMIN_URL, ScratchDatabases, server_version
from .report import print_table
from .stats import UNITS, Samples, kernel_notes, machine_info, results_document, write_results

RESULTS = Path(__file__).parent / "results" / "latest.json"
ROOT = Path(__file__).resolve().parent.parent

GROUPS: dict[str, tuple[str, ...]] = {
    "commands": ("commands_per_s_1", "commands_per_s_32"),
    "lag": ("lag_p50_ms", "lag_p99_ms"),
    "catchup": (
        "catchup_events_per_s",
        "catchup_stop_events_per_s",
        "catchup_park_events_per_s",
        "catchup_park_ratio",
    ),
    "rebuild": ("rebuild_events_per_s", "rebuild_peak_mb"),
    "http": tuple(n for n in UNITS if n.startswith("http_")),
    "slow": tuple(n for n in UNITS if n.startswith("slow_")),
    "relay": tuple(n for n in UNITS if n.startswith("relay_")),
}

console = Console(stderr=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 3.5 minutes)")
    parser.add_argument(
        "--pg-url",
        help=f"PostgreSQL admin URL (scratch databases are created and dropped there);"
        f" default: {DEFAULT_ADMIN_URL} when it answers",
    )
    parser.add_argument(
        "--only",
        help="comma-separated names to run: figure groups (commands, lag, catchup, rebuild,"
        " http, slow, relay), figure names, systems (cqrskit, eventsourcing, raw) or backends"
        " (sqlite, postgresql)",
    )
    parser.add_argument("--repetitions", type=int, help="override the number of repetitions")
    parser.add_argument(
        "--read-durability",
        choices=("relaxed", "strict"),
        default="relaxed",
        help="cqrskit's read database: relaxed (its default: SQLite synchronous=NORMAL,"
        " PostgreSQL synchronous_commit=off in its transactions) or strict (FULL, on);"
        " the event stores are always FULL/on",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    return parser.parse_args(argv)


class Selection:
    """What ``--only`` keeps: each dimension not named stays whole."""

    def __init__(self, only: str | None) -> None:
        names = {n.strip() for n in (only or "").split(",") if n.strip()}
        known = set(GROUPS) | set(UNITS) | set(SYSTEMS) | set(BACKENDS)
        unknown = names - known
        if unknown:
            raise SystemExit(f"--only: unknown names {sorted(unknown)}; known: {sorted(known)}")
        groups = {g for g in GROUPS if g in names}
        groups |= {g for g, figs in GROUPS.items() if names & set(figs)}
        self.groups = groups or set(GROUPS)
        self.systems = [s for s in SYSTEMS if s in names] or list(SYSTEMS)
        self.backends = [b for b in BACKENDS if b in names] or list(BACKENDS)


class Run:
    def __init__(self, sizes: Sizes, pg_admin: str | None, workdir: Path) -> None:
        self.sizes = sizes
        self.pg_admin = pg_admin
        self.workdir = workdir
        self.scratch = ScratchDatabases(pg_admin) if pg_admin else None
        self.samples = Samples()
        self.errors: list[str] = []
        self.settings: dict[str, Any] = {}
        """Settings of parts that have their own (the slow-client check), for the results."""
        self._n = 0

    # -- targets ------------------------------------------------------------------------------

    def fresh(self, system: str, backend: str, kind: str) -> str:
        """A new empty database: a SQLite file path or a PostgreSQL URL."""
        self._n += 1
        if backend == "sqlite":
            return str(self.workdir / f"{system}-{kind}-{self._n}.db")
        assert self.scratch is not None
        return self.scratch.create(f"{system[:4]}_{kind}")

    def discard(self, backend: str, where: str) -> None:
        if backend == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(where + suffix).unlink(missing_ok=True)
            for rebuild_file in Path(where).parent.glob(Path(where).name + "*"):
                rebuild_file.unlink(missing_ok=True)
        else:
            assert self.scratch is not None
            self.scratch.drop(where)

    # -- workers ------------------------------------------------------------------------------

    def worker(
        self, system: str, backend: str, jobs: list[dict[str, Any]], timeout: float
    ) -> dict[str, float]:
        spec = {"system": system, "sizes": self.sizes.as_dict(), "jobs": jobs}
        argv = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
        return self._subprocess(argv, timeout, f"{system}/{backend}")

    def _subprocess(
        self,
        argv: list[str],
        timeout: float,
        label: str,
        output_out: dict[str, Any] | None = None,
    ) -> dict[str, float]:
        """The figures of the process's last stdout line (``{"figures": ...}``); the whole
        line is also copied into ``output_out`` when given."""
        try:
            done = subprocess.run(
                argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            self.errors.append(f"{label}: timed out after {timeout:.0f} s")
            console.print(f"[red]{label}: timed out[/red]")
            return {}
        last = done.stdout.strip().splitlines()[-1:] or ["{}"]
        try:
            output: dict[str, Any] = json.loads(last[0])
        except json.JSONDecodeError:
            output = {}
        if output_out is not None:
            output_out.update(output)
        for error in output.get("errors", []):
            self.errors.append(f"{label}: {error}")
        if done.returncode != 0:
            if not output.get("errors"):
                lines = done.stderr.strip().splitlines() or ["(no output)"]
                cause = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1])
                self.errors.append(f"{label}: exit {done.returncode}: {cause.strip()}")
            console.print(f"[red]{label} failed:[/red]\n{done.stderr[-3000:]}")
        figures: dict[str, float] = output.get("figures", {})
        return figures

    def seed_all(self, plan: dict[tuple[str, str], int]) -> dict[tuple[str, str], str | None]:
        """Seed every (system, backend) store at once: seeding is not measured, and running
        the seeders side by side overlaps their fsync and round-trip waits."""
        began = time.perf_counter()
        running = {}
        for (system, backend), events in plan.items():
            where = self.fresh(system, backend, "seed")
            job = {
                "kind": "seed",
                "events": events,
                "target": asdict(Target(backend, where, where)),
            }
            spec = {"system": system, "sizes": self.sizes.as_dict(), "jobs": [job]}
            argv = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
            process = subprocess.Popen(
                argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            running[(system, backend)] = (where, process)
        seeded: dict[tuple[str, str], str | None] = {}
        for (system, backend), (where, process) in running.items():
            _, err = process.communicate(timeout=1800)
            if process.returncode != 0:
                lines = err.strip().splitlines() or ["(no output)"]
                self.errors.append(f"seed {system}/{backend}: {lines[-1]}")
                console.print(f"[red]seed {system}/{backend} failed:[/red]\n{err[-3000:]}")
                seeded[(system, backend)] = None
            else:
                seeded[(system, backend)] = where
        console.print(
            f"seeded {len(plan)} stores ({max(plan.values()):,} events at most)"
            f" in {time.perf_counter() - began:.1f} s"
        )
        return seeded

    def measure(
        self, system: str, backend: str, groups: set[str], seeded: str | None
    ) -> dict[str, float]:
        """The core jobs in one process, the rebuild alone in another."""
        used: list[str] = []

        def target(kind: str, write: str | None = None) -> dict[str, str]:
            read = self.fresh(system, backend, f"{kind}r")
            used.append(read)
            if write is None:
                write = self.fresh(system, backend, kind)
                used.append(write)
            return asdict(Target(backend, write, read))

        figures: dict[str, float] = {}
        try:
            jobs = []
            if "commands" in groups:
                jobs.append({"kind": "commands", "target": target("cmd")})
            if "lag" in groups:
                jobs.append({"kind": "lag", "target": target("lag")})
            if "catchup" in groups and seeded is not None:
                jobs.append({"kind": "catchup", "target": target("cu", seeded)})
            if jobs:
                figures.update(self.worker(system, backend, jobs, timeout=900))
            if "rebuild" in groups and seeded is not None:
                job = {"kind": "rebuild", "target": target("rb", seeded)}
                figures.update(self.worker(system, backend, [job], timeout=1800))
        finally:
            for where in used:
                self.discard(backend, where)
        return figures

    def close(self) -> None:
        if self.scratch is not None:
            self.scratch.close()


def run(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repetitions:
        sizes = Sizes(**{**sizes.as_dict(), "repetitions": args.repetitions})
    selection = Selection(args.only)
    admin = args.pg_url or DEFAULT_ADMIN_URL
    pg_version = server_version(admin) if "postgresql" in selection.backends else None
    backends = [b for b in selection.backends if b == "sqlite" or pg_version is not None]
    if "postgresql" in selection.backends and pg_version is None:
        console.print(f"[yellow]PostgreSQL at {admin} does not answer: SQLite only[/yellow]")
    began = time.perf_counter()
    os.environ[READ_DURABILITY_ENV] = args.read_durability  # for the workers
    workdir = Path(tempfile.mkdtemp(prefix="cqrskit-bench-"))
    state = Run(sizes, admin if pg_version else None, workdir)
    try:
        execute(state, selection, backends, quick=args.quick, rounds=args.repetitions)
    finally:
        state.close()
        shutil.rmtree(workdir, ignore_errors=True)
    settings = {
        "quick": args.quick,
        "sizes": sizes.as_dict(),
        "backends": backends,
        "durability": "SQLite: WAL + synchronous=FULL for every system;"
        " PostgreSQL: fsync=on, synchronous_commit=on; except cqrskit's read database"
        + (
            " (strict: the same)"
            if args.read_durability == "strict"
            else " (relaxed, its default: synchronous=NORMAL on SQLite,"
            " synchronous_commit=off in its transactions on PostgreSQL)"
        ),
        "read_durability": args.read_durability,
        "postgresql_pools": {
            "cqrskit": {"events": CQRSKIT_PG_POOLS.events, "read": CQRSKIT_PG_POOLS.read},
            "eventsourcing": ES_PG_POOL,
            "raw": "one connection per client thread",
        },
        "seconds": round(time.perf_counter() - began, 1),
        "errors": state.errors,
        **state.settings,
    }
    document = results_document(machine_info(pg_version), state.samples.figures(), settings)
    write_results(args.out, document)
    out = Console()
    print_table(document, out if out.is_terminal else Console(width=200))
    console.print(f"wrote {args.out} in {settings['seconds']} s")
    for note in kernel_notes(document["machine"]["kernel"]):
        console.print(f"note: {note}", markup=False)
    for error in state.errors:
        console.print(f"[red]error:[/red] {error}")
    return 1 if state.errors else 0


def seed_length(sizes: Sizes, system: str, backend: str) -> int:
    """Events seeded for one store: the rebuild's log, shortened where the shorter log is
    all the time cap can reach (see :class:`Sizes`), never below the catch-up's."""
    events = sizes.rebuild_events
    if system == "eventsourcing":
        events = min(events, sizes.slow_seed_events)
    if backend == "postgresql":
        events = min(events, sizes.pg_seed_events)
    return max(events, sizes.catchup_events)


def execute(
    state: Run,
    selection: Selection,
    backends: list[str],
    quick: bool = False,
    rounds: int | None = None,
) -> None:
    sizes = state.sizes
    seeds: dict[tuple[str, str], str | None] = {}
    if selection.groups & {"catchup", "rebuild"}:
        seeds = state.seed_all(
            {
                (system, backend): seed_length(sizes, system, backend)
                for backend in backends
                for system in selection.systems
            }
        )
    http: Callable[[str, int], dict[str, float]] | None = None
    http_workers: tuple[int, ...] = ()
    if "http" in selection.groups and "cqrskit" in selection.systems:
        from .http_bench import WORKERS, http_figures

        http = lambda backend, workers: http_figures(state, backend, workers)  # noqa: E731
        http_workers = WORKERS
    for rep in range(sizes.repetitions):
        order = selection.systems[rep % len(selection.systems) :]
        order += selection.systems[: rep % len(selection.systems)]
        if not selection.groups & {"commands", "lag", "catchup", "rebuild"}:
            order = []  # only HTTP or the slow-client check: no worker to start
        for backend in backends:
            for system in order:
                began = time.perf_counter()
                figures = state.measure(
                    system, backend, selection.groups, seeds.get((system, backend))
                )
                state.samples.add(system, backend, figures)
                console.print(
                    f"rep {rep + 1}/{sizes.repetitions} {system}/{backend}"
                    f" ({time.perf_counter() - began:.1f} s): "
                    + ", ".join(f"{k}={v:,.1f}" for k, v in figures.items())
                )
            if http is not None:
                # One server per worker count, a fresh one each, the order alternating
                # by repetition (1 then 2 workers, then 2 then 1) like the systems'.
                turn = rep % len(http_workers)
                for workers in http_workers[turn:] + http_workers[:turn]:
                    began = time.perf_counter()
                    figures = http(backend, workers)
                    state.samples.add("cqrskit", backend, figures)
                    console.print(
                        f"rep {rep + 1}/{sizes.repetitions} http/{backend} --workers {workers}"
                        f" ({time.perf_counter() - began:.1f} s): "
                        + ", ".join(f"{k}={v:,.1f}" for k, v in figures.items())
                    )
    if "slow" in selection.groups and "cqrskit" in selection.systems and "sqlite" in backends:
        slow_clients(state, quick, rounds)
    if "relay" in selection.groups and "cqrskit" in selection.systems and "sqlite" in backends:
        from .relay_bench import run_rounds  # the relay against raw nats-py (NATS at 4222)

        run_rounds(state, quick, rounds, console.print)


def slow_clients(state: Run, quick: bool, rounds: int | None) -> None:
    """The slow-client check (benchmarks/slow_clients.py): its own server and its own
    interleaved rounds, one sample per round; SQLite only."""
    from .slow_clients import FULL as SLOW_FULL
    from .slow_clients import QUICK as SLOW_QUICK
    from .slow_clients import run_check

    check = SLOW_QUICK if quick else SLOW_FULL
    if rounds:
        check = replace(check, rounds=rounds)
    began = time.perf_counter()
    result = run_check(check, state.workdir, log=console.print)
    for figures in result.rounds:
        state.samples.add("cqrskit", "sqlite", figures)
    state.errors.extend(result.errors)
    state.settings["slow_clients"] = {"check": check.as_dict(), "holders": result.holders}
    console.print(f"slow clients/sqlite: {time.perf_counter() - began:.1f} s")
