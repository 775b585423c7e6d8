"""Figures, their summaries (median, min, max over repetitions) and the results file."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

UNITS: dict[str, str] = {
    "commands_per_s_1": "commands/s",
    "commands_per_s_32": "commands/s",
    "catchup_events_per_s": "events/s",
    "catchup_stop_events_per_s": "events/s",
    "catchup_park_events_per_s": "events/s",
    "catchup_park_ratio": "x",
    "rebuild_events_per_s": "events/s",
    "rebuild_peak_mb": "MB",
    "lag_p50_ms": "ms",
    "lag_p99_ms": "ms",
    "http_get_rps": "requests/s",
    "http_get_rps_w2": "requests/s",
    "http_get_p99_ms": "ms",
    "http_get_p99_ms_w2": "ms",
    "http_post_rps": "requests/s",
    "http_post_rps_w2": "requests/s",
    "http_post_p99_ms": "ms",
    "http_post_p99_ms_w2": "ms",
    "http_post_keyed_rps": "requests/s",
    "http_post_keyed_p99_ms": "ms",
    "http_post_keyed_ratio": "x",
    "http_post_keyed_rps_w2": "requests/s",
    "http_post_keyed_p99_ms_w2": "ms",
    "http_post_keyed_ratio_w2": "x",
    "slow_base_p50_ms": "ms",
    "slow_base_p99_ms": "ms",
    "slow_under_p50_ms": "ms",
    "slow_under_p99_ms": "ms",
    "slow_p99_ratio": "x",
    "slow_failed_requests": "requests",
    "slow_closed_connections": "connections",
    "slow_held_connections": "connections",
    "slow_closed_after_s": "s",
    "relay_events_per_s": "events/s",
    "relay_ratio": "x",
    "relay_lag_p50_ms": "ms",
    "relay_lag_p99_ms": "ms",
}
"""Every figure the suite can produce, in the order the table shows them. ``NAME_w2`` is
figure ``NAME`` measured against ``social serve --workers 2`` (``NAME``: one worker)."""

LOWER_IS_BETTER = frozenset(n for n, unit in UNITS.items() if unit in ("ms", "MB"))


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    system: str
    backend: str
    median: float
    min: float
    max: float
    unit: str
    samples: int


def summarize(name: str, system: str, backend: str, values: Sequence[float]) -> Figure:
    """Median with min and max of the repetitions of one figure."""
    if not values:
        raise ValueError(f"no samples for {name} ({system}, {backend})")
    return Figure(
        name=name,
        system=system,
        backend=backend,
        median=float(statistics.median(values)),
        min=float(min(values)),
        max=float(max(values)),
        unit=UNITS[name],
        samples=len(values),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Samples:
    """Collects the values of every (figure, system, backend) across repetitions."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str, str], list[float]] = {}

    def add(self, system: str, backend: str, figures: Mapping[str, float]) -> None:
        for name, value in figures.items():
            if name not in UNITS:
                raise ValueError(f"unknown figure {name!r}")
            self._values.setdefault((name, system, backend), []).append(float(value))

    def figures(self) -> list[Figure]:
        order = {name: i for i, name in enumerate(UNITS)}
        keys = sorted(self._values, key=lambda k: (order[k[0]], k[2], k[1]))
        return [summarize(n, s, b, self._values[(n, s, b)]) for n, s, b in keys]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def kernel_settings(sys_root: Path = Path("/sys")) -> dict[str, Any]:
    """The kernel's settings that move these figures, None where the machine has no such
    thing (another OS, or the driver absent):

    - ``cpuidle_driver``, and ``halt_poll_ns`` when it is ``haltpoll``: how long an idle
      virtual CPU polls before it halts. At 0 (a VM whose kernel command line says
      ``haltpoll.guest_halt_poll_ns=0``) every wake-up of a sleeping thread costs an
      interrupt to a halted CPU: measured, that alone moves SQLite's ``commands_per_s_1``
      ratio from 1.17-1.54x to 0.96-1.08x (see docs/benchmarks.md).
    - ``page_reclaim``: the actions of DAMON's running schemes (``pageout`` pushes pages
      nobody touched for a while out of the page cache, which makes loads of a large
      log's streams read the disk).
    """
    cpuidle = _read(sys_root / "devices/system/cpu/cpuidle/current_driver")
    halt_poll = _read(sys_root / "module/haltpoll/parameters/guest_halt_poll_ns")
    actions: list[str] = []
    kdamonds = sys_root / "kernel/mm/damon/admin/kdamonds"
    for state in sorted(kdamonds.glob("*/state")):
        if _read(state) != "on":
            continue
        for action in sorted(state.parent.glob("contexts/*/schemes/*/action")):
            text = _read(action)
            if text is not None:
                actions.append(text)
    return {
        "cpuidle_driver": cpuidle,
        "halt_poll_ns": int(halt_poll) if cpuidle == "haltpoll" and halt_poll else None,
        "page_reclaim": sorted(set(actions)) or None,
    }


def kernel_notes(kernel: Mapping[str, Any]) -> list[str]:
    """One line per :func:`kernel_settings` value known to move figures, for whoever
    compares this run with another machine's."""
    notes = []
    if kernel.get("halt_poll_ns") == 0:
        notes.append(
            "this machine halts an idle CPU at once (haltpoll, guest_halt_poll_ns=0): waking"
            " a thread costs more, SQLite commands_per_s_1 most (docs/benchmarks.md,"
            ' "The machine")'
        )
    if "pageout" in (kernel.get("page_reclaim") or ()):
        notes.append(
            "DAMON pages out what was not touched for a while: a large log's cold stream"
            ' loads read the disk (docs/benchmarks.md, "Cost as the log grows")'
        )
    return notes


def machine_info(pg_version: str | None) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite_version": sqlite3.sqlite_version,
        "pg_version": pg_version,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "kernel": kernel_settings(),
    }


def results_document(
    machine: Mapping[str, Any], figures: Iterable[Figure], settings: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "machine": dict(machine),
        "settings": dict(settings),
        "figures": [asdict(f) for f in figures],
    }


def write_results(path: Path, document: Mapping[str, Any]) -> None:
    """Write atomically: a crashed run never leaves a half-written latest.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)
