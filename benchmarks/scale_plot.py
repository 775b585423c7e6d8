"""The scale benchmark's curves as a PNG: ``python -m benchmarks.scale_plot [RESULTS] [--out
PNG]`` (default: benchmarks/results/scale.json to docs/images/bench-scale.png).

Three panels against the log's size (log x-axis): the rates (append, catch-up, rebuild;
flat lines are the target), the stream-load time, and the rebuild's peak memory. SQLite
solid, PostgreSQL dashed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, whatever the environment says

import matplotlib.pyplot as plt

from .scale_report import DEFAULT_RESULTS

DEFAULT_PNG = Path(__file__).resolve().parent.parent / "docs" / "images" / "bench-scale.png"

PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Rates (higher is better)",
        "events/s",
        (
            ("append_events_per_s", "append"),
            ("catchup_events_per_s", "catch-up"),
            ("rebuild_events_per_s", "rebuild"),
        ),
    ),
    (
        "Loading a 100-event stream",
        "ms",
        (
            ("stream_load_ms", "median"),
            ("stream_load_p99_ms", "p99"),
            ("stream_load_cached_ms", "median, cached"),
        ),
    ),
    (
        "Rebuild memory",
        "MB",
        (("rebuild_rss_mb", "peak RSS"), ("rebuild_peak_mb", "peak growth")),
    ),
)
STYLES = {"sqlite": "-", "postgresql": "--"}
MARKERS = ("o", "s", "^")


def series(document: Mapping[str, Any], name: str, backend: str) -> tuple[list[int], list[float]]:
    """(sizes, values) of one figure on one backend, by size."""
    points = sorted(
        (f["size"], f["value"])
        for f in document["figures"]
        if f["name"] == name and f["backend"] == backend
    )
    return [p[0] for p in points], [p[1] for p in points]


def plot(document: Mapping[str, Any], out: Path) -> None:
    backends = list(dict.fromkeys(f["backend"] for f in document["figures"]))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.6))
    for ax, (title, unit, lines) in zip(axes, PANELS, strict=True):
        for backend in backends:
            for (name, label), marker in zip(lines, MARKERS, strict=False):
                xs, ys = series(document, name, backend)
                if xs:
                    ax.plot(
                        xs, ys, STYLES.get(backend, ":"), marker=marker, label=f"{label}, {backend}"
                    )
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("events in the log")
        ax.set_ylabel(unit)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    date = document.get("machine", {}).get("date", "")
    fig.suptitle(f"cqrskit: cost as the log grows (make bench-scale, {date})")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_plot", description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_PNG)
    args = parser.parse_args(argv)
    plot(json.loads(args.results.read_text()), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
