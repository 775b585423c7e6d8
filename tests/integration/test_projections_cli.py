"""``cqrskit --app X projections ...``: parked events, retry, skip, pause, history, the
actions carried out by another process (a real one, running the projection); bad input
in one line with exit status 2."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cqrskit.cli import EXIT_USAGE, cli
from tests.integration import _ops_child as child
from tests.integration._ops_child import Deposited, Ledger

APP = "tests.integration._ops_child:ledger"


def invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--app", APP, "--url", url, "projections", *args])


def append_and_park(url: str, directory: Path) -> subprocess.Popen[bytes]:
    """A running projection (another process) that parked a poison event."""
    proc = subprocess.Popen(
        [sys.executable, child.__file__, str(directory)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"

    async def write() -> None:
        async with Ledger(url, run_projections=False) as app:
            await app.append("acct-a", [Deposited(13), Deposited(2)])
            await app.append("acct-b", [Deposited(5)])
            await app.wait_for(["accounts"], await app.store.head_position())

    asyncio.run(write())
    return proc


def test_parked_retry_skip_pause_and_history(tmp_path: Path) -> None:
    (tmp_path / "broken").touch()
    url = f"sqlite:///{tmp_path}"
    proc = append_and_park(url, tmp_path)
    try:
        listed = invoke(url, "list", "--json")
        assert listed.exit_code == 0, listed.output
        (row,) = json.loads(listed.stdout)
        assert (row["name"], row["state"], row["parked"], row["error"]) == (
            "accounts", "running", 2, None
        )  # fmt: skip

        parked = invoke(url, "parked", "accounts", "--json")
        assert [
            (p["position"], p["stream_id"], p["behind"]) for p in json.loads(parked.stdout)
        ] == [
            (1, "acct-a", None),
            (2, "acct-a", 1),
        ]
        table = invoke(url, "parked", "accounts")
        assert "ValueError" in table.stdout

        retried = invoke(url, "retry", "accounts", "--reason", "not yet fixed", "--by", "ops")
        assert retried.exit_code == 1
        assert "failed again at position 1" in retried.output

        (tmp_path / "broken").unlink()  # the fix
        retried = invoke(url, "retry", "accounts", "--stream", "acct-a", "--by", "ops")
        assert (retried.exit_code, retried.stdout) == (0, "retry accounts: applied 2 events\n")

        paused = invoke(url, "pause", "accounts", "--reason", "maintenance")
        assert paused.exit_code == 0, paused.output
        assert json.loads(invoke(url, "list", "--json").stdout)[0]["state"] == "paused"
        assert invoke(url, "resume", "accounts").exit_code == 0

        history = json.loads(invoke(url, "history", "accounts", "--json").stdout)
        assert [(a["action"], a["state"]) for a in history] == [
            ("resume", "done"), ("pause", "done"), ("retry", "done"), ("retry", "failed"),
        ]  # fmt: skip
        assert history[-1]["requested_by"] == "ops"
        assert history[2]["reason"] == ""
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()

    # No process runs the projection now: the action waits for the next one.
    pending = invoke(url, "pause", "accounts", "--wait", "0.2")
    assert pending.exit_code == 0
    assert "pending" in pending.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["pause", "nope"], "no projection 'nope'; the app has: accounts"),
        (["skip", "accounts", "--reason", "x"], "say which: --stream, --position or --all"),
        (["skip", "accounts", "--all", "--reason", " "], "needs a reason"),
        (["rewind", "accounts"], "give one of --to-position and --to-time"),
        (["rewind", "accounts", "--to-time", "yesterday"], "not a time"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(
    tmp_path: Path, args: list[str], says: str
) -> None:
    url = f"sqlite:///{tmp_path}"
    asyncio.run(_create(url))
    result = invoke(url, *args)
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert says in lines[0]


async def _create(url: str) -> None:
    async with Ledger(url, run_projections=False):
        pass
