"""Cost as the log grows (``make bench-scale``): ``python -m benchmarks.scale [--sizes N,...]
[--pg-sizes N,...] [--quick] [--pg-url URL] [--out benchmarks/results/scale.json]``.

For each backend and log size, on a fresh database: seed the log by batched appends and
time the appends of its last events, load random streams, catch a projection up from
position 0, rebuild it. Each step runs in a process of its own
(:mod:`benchmarks.scale_worker`), one after the other. Each figure is printed as a JSON
line when measured; the tables (:mod:`benchmarks.scale_report`) at the end. See
docs/benchmarks.md, "Cost as the log grows".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg

from .loadgen import machine_busy_seconds
from .measure import Target
from .pg import DEFAULT_ADMIN_URL, server_version, url_for
from .scale_report import UNITS, markdown
from .scale_workload import Shape
from .stats import kernel_notes, machine_info, write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "scale.json"
SIZES = "100000,1000000,10000000"
PG_SIZES = "100000,1000000"
QUICK_SIZES = "100000,1000000"
QUICK_PG_SIZES = "100000"
STEPS = ("seed", "load", "catchup", "rebuild")
STEP_TIMEOUT = 3 * 3600.0
"""Seeding 10M events takes minutes; a step that hangs still ends the run, in hours."""


def sizes(text: str) -> list[int]:
    """``"100000,1M,10M"`` -> [100000, 1000000, 10000000]; ``""`` -> [] (none)."""
    scale = {"k": 1_000, "M": 1_000_000}
    out = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            out.append(int(part[:-1]) * scale[part[-1]] if part[-1] in scale else int(part))
    return out


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--sizes", help=f"SQLite log sizes (default {SIZES}; '' for none)")
    parser.add_argument("--pg-sizes", help=f"PostgreSQL log sizes (default {PG_SIZES})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {QUICK_SIZES} (PostgreSQL {QUICK_PG_SIZES}) unless given",
    )
    parser.add_argument("--pg-url", help=f"PostgreSQL admin URL (default {DEFAULT_ADMIN_URL})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    parser.add_argument("--workdir", type=Path, help="where SQLite's scratch directories go")
    parser.add_argument("--probe-events", type=int, default=100_000, help="appends timed")
    parser.add_argument("--loads", type=int, default=500, help="stream loads timed")
    parser.add_argument("--width", type=int, default=Shape().width, help="streams per batch")
    parser.add_argument("--stream-length", type=int, default=Shape().length)
    parser.add_argument(
        "--keep", action="store_true", help="leave the logs in place (to profile against)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="before each step, wait up to this many seconds for the machine to be idle",
    )
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def scratch(backend: str, size: int, args: argparse.Namespace) -> Iterator[Target]:
    """A fresh, empty place for one log and its read model, removed afterwards: a temp
    directory (SQLite: write.db and read.db) or the database ``bench_scale_<size>``
    (PostgreSQL: the log and the read model in one database, as one URL opens them)."""
    if backend == "sqlite":
        where = Path(tempfile.mkdtemp(prefix=f"cqrskit-scale-{size}-", dir=args.workdir))
        try:
            yield Target("sqlite", str(where / "write.db"), str(where / "read.db"))
        finally:
            if not args.keep:
                shutil.rmtree(where, ignore_errors=True)
        return
    admin = args.pg_url or DEFAULT_ADMIN_URL
    name = f"bench_scale_{size}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # a crashed run's
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = url_for(admin, name)
        yield Target("postgresql", url, url)
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cores() -> tuple[float, float, float]:
    """(wall clock, CPU seconds of the machine, CPU seconds of this process's children)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), machine_busy_seconds(), children.ru_utime + children.ru_stime


def run_step(spec: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """One step in a fresh process (stderr passes through: progress, tracebacks)."""
    argv = [sys.executable, "-m", "benchmarks.scale_worker", json.dumps(spec)]
    try:
        done = subprocess.run(
            argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=STEP_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return {}, [f"timed out after {STEP_TIMEOUT:.0f} s"]
    last = done.stdout.strip().splitlines()[-1:] or ["{}"]
    try:
        output: dict[str, Any] = json.loads(last[0])
    except json.JSONDecodeError:
        output = {}
    errors = list(output.get("errors", []))
    if done.returncode != 0 and not errors:
        errors.append(f"exit status {done.returncode}")
    return dict(output.get("figures", {})), errors


QUIET_CORES = 0.3
"""A machine busier than this (cores, over one second) between steps is running someone
else's work: the step waits for it to end (up to ``--quiet-wait``)."""


def wait_for_quiet(limit: float) -> tuple[float, float]:
    """Wait until the machine is idle or ``limit`` seconds have passed; returns (seconds
    waited, cores busy in the last second). A shared machine's bursts of other work would
    otherwise land on some sizes and not others, and the ratios would measure them."""
    began = time.perf_counter()
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)
        busy = machine_busy_seconds() - before
        waited = time.perf_counter() - began
        if busy < QUIET_CORES or waited >= limit:
            return waited, busy


class Run:
    """What a run measured, and what else kept the machine busy meanwhile."""

    def __init__(self, quiet_wait: float) -> None:
        self.quiet_wait = quiet_wait
        self.figures: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.cores: dict[str, dict[str, float]] = {}
        """Per step, cores busy on average: ``step`` (its process), ``machine`` (all of it:
        the step, PostgreSQL's backends working for it, and anyone else's work); and how
        long it waited for the machine to be idle, and how busy it was when it started."""

    def step(self, backend: str, size: int, step: str, spec: dict[str, Any]) -> bool:
        """Run one step, print its figures as JSON lines; False when it failed."""
        waited, idle = wait_for_quiet(self.quiet_wait) if self.quiet_wait > 0 else (0.0, 0.0)
        wall, machine, own = cores()
        values, failed = run_step(spec)
        wall2, machine2, own2 = cores()
        seconds = wall2 - wall
        busy = self.cores[f"{backend} {size} {step}"] = {
            "seconds": round(seconds, 1),
            "step": round((own2 - own) / seconds, 2),
            "machine": round((machine2 - machine) / seconds, 2),
            "waited": round(waited, 1),
            "busy_before": round(idle, 2),
        }
        log(f"{backend} {size:,} {step}: {busy}")
        for name, value in values.items():
            line = {"name": name, "backend": backend, "size": size, "value": value}
            line["unit"] = UNITS[name]
            print(json.dumps(line), flush=True)
            self.figures.append(line)
        self.errors += [f"{backend} {size:,} {step}: {e}" for e in failed]
        return not failed


def measure(run: Run, backend: str, size: int, args: argparse.Namespace, shape: Shape) -> None:
    """Every step at one size. A failed step skips the steps after it (they need what it
    makes)."""
    with scratch(backend, size, args) as target:
        for step in STEPS:
            spec = {
                "step": step,
                "target": asdict(target),
                "shape": asdict(shape),
                "size": size,
                "probe": args.probe_events,
                "loads": args.loads,
            }
            if not run.step(backend, size, step, spec):
                break


def run(argv: Sequence[str]) -> int:
    args = parse_args(argv)

    def chosen(given: str | None, quick: str, full: str) -> list[int]:
        return sizes(given if given is not None else quick if args.quick else full)

    plan = {
        "sqlite": chosen(args.sizes, QUICK_SIZES, SIZES),
        "postgresql": chosen(args.pg_sizes, QUICK_PG_SIZES, PG_SIZES),
    }
    pg_version = server_version(args.pg_url or DEFAULT_ADMIN_URL) if plan["postgresql"] else None
    if plan["postgresql"] and pg_version is None:
        log("PostgreSQL does not answer: SQLite only")
        plan["postgresql"] = []
    shape = Shape(args.width, args.stream_length)
    began, load_before = time.perf_counter(), os.getloadavg()
    run = Run(args.quiet_wait)
    for backend, backend_sizes in plan.items():
        for size in backend_sizes:
            measure(run, backend, size, args, shape)
    settings = {
        "plan": plan,
        "shape": asdict(shape),
        "probe_events": args.probe_events,
        "loads": args.loads,
        "durability": "seeding: SQLite synchronous=NORMAL, PostgreSQL synchronous_commit=off;"
        " the append probe: the log's default (SQLite synchronous=FULL, PostgreSQL"
        " synchronous_commit=on); catch-up and rebuild: the read database's default",
        "seconds": round(time.perf_counter() - began, 1),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cores": run.cores,
        "errors": run.errors,
    }
    document = {"machine": machine_info(pg_version), "settings": settings, "figures": run.figures}
    write_results(args.out, document)
    print(markdown(document), flush=True)
    log(f"wrote {args.out} in {settings['seconds']} s")
    for note in kernel_notes(document["machine"]["kernel"]):
        log(f"note: {note}")
    for error in run.errors:
        log(f"error: {error}")
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
