"""The results as a table: medians with [min-max], and cqrskit's ratios to the others.

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


def print_table(document: Mapping[str, Any], console: Console | None = None) -> None:
    table = Table(title="cqrskit vs eventsourcing vs raw SQL (ratios: >1 = cqrskit ahead)")
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("figure", "backend") else "right")
    for row in rows(document):
        table.add_row(*row)
    (console or Console()).print(table)


def markdown(document: Mapping[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(document)]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_RESULTS
    print(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
