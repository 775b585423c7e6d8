"""``worker``, ``rebuild`` and ``status`` on any :class:`~cqrskit.App`: coroutines that
:func:`~cqrskit.cli.run` runs, each returning the exit status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table

from ..app import App
from ..connect import parse
from ..errors import ConfigurationError
from ..rebuild import RebuildProgress
from ._run import EXIT_USAGE, Failure, err
from ._serve import STOP_SIGNALS

__all__ = ["STATUS_FIELDS", "existing", "rebuild_with_progress", "show_status", "work"]

STATUS_FIELDS = (
    "name",
    "position",
    "head",
    "lag_events",
    "lag_seconds",
    "state",
    "events_per_second",
    "parked",
    "error",
)
"""What ``status --json`` shows of each :class:`~cqrskit.ProjectionStatus`."""


def existing(app: App, option: str = "--url") -> App:
    """``app``, for a command that reads what ``serve`` wrote: on SQLite, a directory that
    does not exist is refused in one line (a typo would otherwise create an empty one and
    report on nothing)."""
    try:
        location = parse(app.url, app.read_url)
    except ConfigurationError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    if location.scheme == "sqlite" and not Path(location.path).is_dir():
        raise Failure(f"no database directory at {location.path}: is {option} right?", EXIT_USAGE)
    return app


async def work(app: App) -> int:
    """The projections only, until SIGTERM or SIGINT; then each finishes its batch."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    await app.open(run_projections=True)
    try:
        names = ", ".join(p.name for p in app.projections)
        print(f"Running projections: {names}", flush=True)
        await stop.wait()
    finally:
        await app.close()  # lets the runner finish its batch
    return 0


async def rebuild_with_progress(app: App, name: str | None) -> int:
    """Rebuild one read model (or all) with a progress bar each on stderr, then one line
    each on stdout."""
    await app.open(run_projections=False)
    try:
        if name:
            app.projection(name)  # an unknown name fails before the bars
        columns = (
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9.0f} events/s"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err) as progress:
            tasks: dict[str, TaskID] = {}

            def report(projection: str, p: RebuildProgress) -> None:
                if projection not in tasks:
                    tasks[projection] = progress.add_task(projection, total=None, rate=0.0)
                task = tasks[projection]
                progress.update(task, completed=p.done, total=p.total, rate=p.events_per_second)

            for result in await app.rebuild(name, on_progress=report):
                print(
                    f"Rebuilt {result.name}: {result.events} events up to position"
                    f" {result.position} in {result.seconds:.2f}s",
                    flush=True,
                )
    finally:
        await app.close()
    return 0


async def show_status(app: App, as_json: bool, fields: Sequence[str] = STATUS_FIELDS) -> int:
    """Each read model's position, head, lag and state: a table, or JSON rows of
    ``fields``."""
    await app.open(run_projections=False)
    try:
        statuses = await app.status()
    finally:
        await app.close()
    rows = [s.to_dict(fields) for s in statuses]
    if as_json:
        print(json.dumps(rows), flush=True)
        return 0
    table = Table(
        Column("projection", no_wrap=True), "position", "head", "lag (events)", "lag (s)",
        Column("state", no_wrap=True), "events/s", "parked", "error",
    )  # fmt: skip
    for status in statuses:
        e = status.error
        table.add_row(
            status.name,
            str(status.position),
            str(status.head),
            str(status.lag_events),
            f"{status.lag_seconds:.2f}",
            status.state,
            f"{status.events_per_second:.0f}",
            str(status.parked),
            "" if e is None else escape(f"at {e.position} {e.event_type}: {e.message}"),
        )
    Console().print(table)
    return 0
