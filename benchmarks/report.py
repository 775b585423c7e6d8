"""The results as a table: medians with [min-max], and cqrskit's ratios to the others;
then the HTTP figures of ``social serve --workers 2`` against one worker, with their ratio.

``python -m benchmarks.report [benchmarks/results/latest.json]`` prints the table of a past
run in Markdown (what docs/benchmarks.md shows).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import BACKENDS, SYSTEMS
from .stats import LOWER_IS_BETTER, UNITS

DEFAULT_RESULTS = Path(__file__).parent / "results" / "latest.json"


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


COUNTS = frozenset({"requests", "connections"})
"""Units of figures that count things: shown as whole numbers."""


def _cell(figure: Mapping[str, Any] | None) -> str:
    if figure is None:
        return "-"
    fmt = (lambda v: f"{v:,.0f}") if figure.get("unit") in COUNTS else _fmt
    return f"{fmt(figure['median'])} [{fmt(figure['min'])}-{fmt(figure['max'])}]"


def _ratio(name: str, ours: Mapping[str, Any] | None, other: Mapping[str, Any] | None) -> str:
    """cqrskit / other on medians; for ms and MB (lower is better) the inverse, so that
    above 1 always means cqrskit is ahead."""
    if ours is None or other is None or not ours["median"] or not other["median"]:
        return "-"
    ratio = ours["median"] / other["median"]
    if name in LOWER_IS_BETTER:
        ratio = 1 / ratio
    return f"{ratio:.2f}x"


def rows(document: Mapping[str, Any]) -> list[list[str]]:
    """One row per (figure, backend): name, backend, unit, one cell per system, ratios."""
    index = {(f["name"], f["system"], f["backend"]): f for f in document["figures"]}
    out = []
    for name, unit in UNITS.items():
        for backend in BACKENDS:
            cells = [index.get((name, s, backend)) for s in SYSTEMS]
            if all(c is None for c in cells):
                continue
            ours, es, raw = cells
            out.append(
                [
                    name,
                    backend,
                    unit,
                    *(_cell(c) for c in cells),
                    _ratio(name, ours, es),
                    _ratio(name, ours, raw),
                ]
            )
    return out


HEADERS = [
    "figure",
    "backend",
    "unit",
    *(f"{s} median [min-max]" for s in SYSTEMS),
    "cqrskit/eventsourcing",
    "cqrskit/raw",
]


WORKERS_SUFFIX = "_w2"
"""``NAME_w2``: figure ``NAME`` against ``social serve --workers 2`` (stats.UNITS)."""

WORKERS_HEADERS = [
    "figure",
    "backend",
    "unit",
    "1 worker median [min-max]",
    "2 workers median [min-max]",
    "2 workers / 1 worker",
]


def workers_rows(document: Mapping[str, Any]) -> list[list[str]]:
    """One row per (figure, backend) measured with both worker counts (cqrskit only): the
    two cells and the plain ratio of medians, 2 workers over 1 (not inverted for ms)."""
    index = {(f["name"], f["backend"]): f for f in document["figures"] if f["system"] == "cqrskit"}
    out = []
    for name, unit in UNITS.items():
        if name + WORKERS_SUFFIX not in UNITS:
            continue
        for backend in BACKENDS:
            one, two = index.get((name, backend)), index.get((name + WORKERS_SUFFIX, backend))
            if one is None or two is None:
                continue
            ratio = f"{two['median'] / one['median']:.2f}x" if one["median"] else "-"
            out.append([name, backend, unit, _cell(one), _cell(two), ratio])
    return out


def _table(title: str, headers: list[str], body: list[list[str]]) -> Table:
    table = Table(title=title)
    for header in headers:
        table.add_column(header, justify="left" if header in ("figure", "backend") else "right")
    for row in body:
        table.add_row(*row)
    return table


def print_table(document: Mapping[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    title = "cqrskit vs eventsourcing vs raw SQL (ratios: >1 = cqrskit ahead)"
    console.print(_table(title, HEADERS, rows(document)))
    scaling = workers_rows(document)
    if scaling:
        title = "social serve --workers 2 vs 1 worker, same run (ratio: 2 workers / 1)"
        console.print(_table(title, WORKERS_HEADERS, scaling))


def markdown_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines (the benchmark reports' and ``scale_report``'s)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def markdown(document: Mapping[str, Any]) -> str:
    """The main table; then, when the run measured both, 2 workers against 1."""
    lines = markdown_table(HEADERS, rows(document))
    scaling = workers_rows(document)
    if scaling:
        lines += ["", *markdown_table(WORKERS_HEADERS, scaling)]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_RESULTS
    print(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
