"""``projections``: see and steer the projections of any app (``cqrskit --app X
projections ...``, ``social projections ...``): list, parked, history, pause, resume,
restart, retry, skip, rewind. Each action is carried out by the process that runs the
projection (see :mod:`cqrskit.operations`); this command waits for it, ``--wait`` seconds.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..actions import Action, ActionKind
from ..app import App
from ._commands import show_status
from ._run import EXIT_ERROR, EXIT_USAGE, Failure, err, run

__all__ = ["projections_commands"]

GetApp = Callable[[typer.Context], App]

Name = Annotated[str, typer.Argument(help="The projection (read model).")]
Reason = Annotated[str, typer.Option("--reason", help="Why: kept with the action.")]
By = Annotated[
    str | None, typer.Option("--by", help="Who asks (default: user@host), kept with the action.")
]
Wait = Annotated[
    float,
    typer.Option("--wait", min=0, help="Seconds to wait for the running process to do it."),
]
AsJson = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):  # no user name in a bare container: the host will do
        return socket.gethostname()


def _moment(text: str) -> float:
    """Epoch seconds, or an ISO 8601 time (with its zone; without one, local time)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise _usage(f"--to-time: not a time: {text!r} (ISO 8601 or epoch seconds)") from None


def _outcome(action: Action, wait: float) -> int:
    """One line per outcome; exit status 1 when the action failed."""
    if action.state == "done":
        print(f"{action.action} {action.projection}: {action.result}", flush=True)
        return 0
    if action.state == "failed":
        raise Failure(f"{action.action} {action.projection}: {action.result}", EXIT_ERROR)
    err.print(
        f"{action.action} {escape(action.projection)}: pending (id {action.id}): no process"
        f" running it carried it out within {wait:g}s; the next one that runs it will",
        highlight=False,
    )
    return 0


async def _act(app: App, ask: Callable[[App], Coroutine[Any, Any, Action]], wait: float) -> int:
    await app.open(run_projections=False)
    try:
        action = await ask(app)
    finally:
        await app.close()
    return _outcome(action, wait)


async def _parked(app: App, name: str, stream: str | None, limit: int, as_json: bool) -> int:
    await app.open(run_projections=False)
    try:
        events = await app.operations.parked(name, stream_id=stream, limit=limit)
    finally:
        await app.close()
    if as_json:
        print(json.dumps([e.to_dict() for e in events]), flush=True)
        return 0
    table = Table("position", "stream", "type", "attempts", "parked at", "error")
    for e in events:
        when = datetime.fromtimestamp(e.parked_at).isoformat(timespec="seconds")
        table.add_row(
            str(e.position), e.stream_id, e.event_type, str(e.attempts), when, escape(e.error)
        )
    Console().print(table)
    return 0


async def _history(app: App, name: str | None, limit: int, as_json: bool) -> int:
    await app.open(run_projections=False)
    try:
        actions = await app.operations.history(name, limit=limit)
    finally:
        await app.close()
    if as_json:
        print(json.dumps([a.to_dict() for a in actions]), flush=True)
        return 0
    table = Table("asked at", "projection", "action", "by", "reason", "state", "result")
    for a in actions:
        when = datetime.fromtimestamp(a.requested_at).isoformat(timespec="seconds")
        table.add_row(
            when,
            a.projection,
            a.action,
            escape(a.requested_by),
            escape(a.reason),
            a.state,
            escape(a.result or ""),
        )
    Console().print(table)
    return 0


def projections_commands(get_app: GetApp) -> typer.Typer:
    """The ``projections`` command group, on the app ``get_app`` gives for a context."""
    group = typer.Typer(
        no_args_is_help=True,
        help="See and steer projections: parked events, pause, retry, skip, rewind.",
    )

    def app_of(ctx: typer.Context) -> App:
        return get_app(ctx)

    @group.command("list")
    def list_(ctx: typer.Context, as_json: AsJson = False) -> None:
        """Each projection's position, lag, state, parked events and error."""
        run(show_status(app_of(ctx), as_json))

    @group.command()
    def parked(
        ctx: typer.Context,
        name: Name,
        stream: Annotated[str | None, typer.Option(help="One stream's only.")] = None,
        limit: Annotated[int, typer.Option(min=1)] = 100,
        as_json: AsJson = False,
    ) -> None:
        """The events a projection parked, in log order, with their errors."""
        run(_parked(app_of(ctx), name, stream, limit, as_json))

    @group.command()
    def history(
        ctx: typer.Context,
        name: Annotated[str | None, typer.Argument(help="One projection's (default: all).")] = None,
        limit: Annotated[int, typer.Option(min=1)] = 50,
        as_json: AsJson = False,
    ) -> None:
        """Who did what to the projections, when, why, and what came of it."""
        run(_history(app_of(ctx), name, limit, as_json))

    def simple(kind: ActionKind, summary: str) -> None:
        """``pause``, ``resume``, ``restart``: a projection's name and who asks, why."""

        def command(
            ctx: typer.Context, name: Name, reason: Reason = "", by: By = None, wait: Wait = 10.0
        ) -> None:
            ops_by = _who(by)
            run(
                _act(
                    app_of(ctx),
                    lambda a: a.operations.request(
                        name, kind, {}, by=ops_by, reason=reason, wait=wait
                    ),
                    wait,
                )
            )

        command.__doc__ = summary
        group.command(kind)(command)

    simple("pause", "Stop applying events until resumed (kept across restarts).")
    simple("resume", "Apply events again after a pause.")
    simple("restart", "Start a projection stopped in error again, from its checkpoint.")

    @group.command()
    def retry(
        ctx: typer.Context,
        name: Name,
        stream: Annotated[str | None, typer.Option(help="One stream's (default: all).")] = None,
        reason: Reason = "",
        by: By = None,
        wait: Wait = 10.0,
    ) -> None:
        """Apply parked events again, in log order (after fixing their cause)."""
        ops_by = _who(by)
        run(
            _act(
                app_of(ctx),
                lambda a: a.operations.retry(
                    name, stream_id=stream, by=ops_by, reason=reason, wait=wait
                ),
                wait,
            )
        )

    @group.command()
    def skip(
        ctx: typer.Context,
        name: Name,
        reason: Annotated[str, typer.Option("--reason", help="Why (required).")],
        stream: Annotated[str | None, typer.Option(help="One stream's parked events.")] = None,
        position: Annotated[int | None, typer.Option(help="One parked event.")] = None,
        every: Annotated[bool, typer.Option("--all", help="Every parked event.")] = False,
        by: By = None,
        wait: Wait = 10.0,
    ) -> None:
        """Give up on parked events: they are never applied."""
        if not every and stream is None and position is None:
            raise _usage("skip: say which: --stream, --position or --all")
        ops_by = _who(by)
        run(
            _act(
                app_of(ctx),
                lambda a: a.operations.skip(
                    name, stream_id=stream, position=position, by=ops_by, reason=reason, wait=wait
                ),
                wait,
            )
        )

    @group.command()
    def rewind(
        ctx: typer.Context,
        name: Name,
        to_position: Annotated[int | None, typer.Option(min=0, help="A position.")] = None,
        to_time: Annotated[
            str | None, typer.Option(help="A time: ISO 8601 or epoch seconds.")
        ] = None,
        reason: Reason = "",
        by: By = None,
        wait: Annotated[
            float, typer.Option("--wait", min=0, help="Seconds to wait for it to be done.")
        ] = 600.0,
    ) -> None:
        """Take a read model back to a position or a time (rebuilt up to there, swapped
        in), then on from there."""
        if (to_position is None) == (to_time is None):
            raise _usage("rewind: give one of --to-position and --to-time")
        ops_by = _who(by)
        moment = None if to_time is None else _moment(to_time)
        run(
            _act(
                app_of(ctx),
                lambda a: a.operations.rewind(
                    name, position=to_position, to_time=moment, by=ops_by, reason=reason, wait=wait
                ),
                wait,
            )
        )

    return group


def _usage(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(EXIT_USAGE)
