"""The scale benchmark's results as tables: the figures per log size, and each figure at
size N against the smallest size of its backend, with the targets of issue 15.

``python -m benchmarks.scale_report [benchmarks/results/scale.json]`` prints them in
Markdown (what docs/benchmarks.md shows).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .report import markdown_table

DEFAULT_RESULTS = Path(__file__).parent / "results" / "scale.json"

UNITS: dict[str, str] = {
    "append_events_per_s": "events/s",
    "catchup_events_per_s": "events/s",
    "stream_load_ms": "ms",
    "stream_load_p99_ms": "ms",
    "stream_load_cached_ms": "ms",
    "rebuild_events_per_s": "events/s",
    "rebuild_s": "s",
    "rebuild_peak_mb": "MB",
    "rebuild_rss_mb": "MB",
    "seed_s": "s",
    "log_mb": "MB",
}
"""Every figure, in table order. ``seed_s`` and ``log_mb`` describe the run (how long the
log took to write, how much disk it takes); they have no target."""

FLAT = (
    "append_events_per_s",
    "catchup_events_per_s",
    "stream_load_ms",
    "stream_load_cached_ms",
    "rebuild_events_per_s",
    "rebuild_peak_mb",
    "rebuild_rss_mb",
)
"""The figures whose per-event cost must stay flat: at the largest size, at least 0.8x
their value at the smallest (for ms and MB, where lower is better, the inverse)."""

LOWER_IS_BETTER = frozenset(
    {"stream_load_ms", "stream_load_p99_ms", "stream_load_cached_ms"}
    | {"rebuild_peak_mb", "rebuild_rss_mb"}
)
FLAT_RATIO = 0.8
REBUILD_LIMIT_S = 120.0
"""A 10M-event SQLite rebuild must take less than 2 minutes."""


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _size(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n:,}"


Index = dict[tuple[str, int], dict[str, float]]


def index(document: Mapping[str, Any]) -> Index:
    """(backend, size) -> {figure: value}, in the order measured."""
    out: Index = {}
    for figure in document["figures"]:
        out.setdefault((figure["backend"], figure["size"]), {})[figure["name"]] = figure["value"]
    return out


def ratio(name: str, value: float, base: float) -> float:
    """Value at N against the smallest size: above 1 is better, whatever the unit."""
    if not value or not base:
        return 0.0
    return base / value if name in LOWER_IS_BETTER else value / base


def figure_rows(document: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    names = [n for n in UNITS if any(n in f for f in index(document).values())]
    headers = ["backend", "events", *(f"{n} ({UNITS[n]})" for n in names)]
    body = [
        [backend, _size(size), *(_fmt(f[n]) if n in f else "-" for n in names)]
        for (backend, size), f in index(document).items()
    ]
    return headers, body


def ratio_rows(document: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each size of a backend against its smallest: the flat-cost figures' ratios."""
    by = index(document)
    headers = ["backend", "events", *(f"{n} vs smallest" for n in FLAT)]
    body = []
    for (backend, size), figures in by.items():
        smallest = min(s for b, s in by if b == backend)
        base = by[(backend, smallest)]
        cells = [
            f"{ratio(n, figures[n], base[n]):.2f}x" if n in figures and n in base else "-"
            for n in FLAT
        ]
        body.append([backend, f"{_size(size)} / {_size(smallest)}", *cells])
    return headers, body


def targets(document: Mapping[str, Any]) -> list[str]:
    """One line per target, for the largest size of each backend: met or missed."""
    by = index(document)
    lines = []
    for backend in dict.fromkeys(b for b, _ in by):
        sizes = sorted(s for b, s in by if b == backend)
        small, large = by[(backend, sizes[0])], by[(backend, sizes[-1])]
        if len(sizes) > 1:
            for name in FLAT:
                if name in small and name in large:
                    r = ratio(name, large[name], small[name])
                    met = "met" if r >= FLAT_RATIO else "MISSED"
                    lines.append(
                        f"{backend} {name}: {_size(sizes[-1])} / {_size(sizes[0])} = {r:.2f}x"
                        f" (target >= {FLAT_RATIO}x): {met}"
                    )
        if backend == "sqlite" and "rebuild_s" in large:
            met = "met" if large["rebuild_s"] < REBUILD_LIMIT_S else "MISSED"
            lines.append(
                f"sqlite rebuild of {_size(sizes[-1])} events: {large['rebuild_s']:.1f} s"
                f" (target < {REBUILD_LIMIT_S:.0f} s at 10M): {met}"
            )
    return lines


def markdown(document: Mapping[str, Any]) -> str:
    lines = markdown_table(*figure_rows(document))
    lines += ["", *markdown_table(*ratio_rows(document))]
    lines += ["", *(f"- {line}" for line in targets(document))]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_RESULTS
    print(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
