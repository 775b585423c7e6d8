"""The ``cqrskit`` command on the to-do app (tests/integration/_cli_app.py): --version,
status, rebuild and worker through ``--app``, and a bad ``--app`` (or a ``serve`` that
cannot start) reported in one line with the exit status that says why."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cqrskit.cli import EXIT_CANNOT_LISTEN, EXIT_DATABASE, EXIT_USAGE, STATUS_FIELDS, cli
from tests.integration._cli_app import CliTodo
from tests.integration.test_app import AddTask

ROOT = Path(__file__).resolve().parents[2]
CQRSKIT = Path(sys.executable).with_name("cqrskit")
APP = "tests.integration._cli_app:api"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def one_error_line(result: Result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture(autouse=True)
def fresh_app_module() -> None:
    """``--url`` configures the module's App: each test imports the module anew (as each
    real command does), so that one test's URL does not stay for the next."""
    sys.modules.pop("tests.integration._cli_app", None)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data'}"


def add_tasks(url: str, *titles: str) -> int:
    """Write through the app itself (no projection running here); the last position."""

    async def write() -> int:
        position = 0
        async with CliTodo(url, run_projections=False) as todo:
            for title in titles:
                position = (await todo.dispatch(AddTask(title))).position
        return position

    return asyncio.run(write())


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"cqrskit {version('cqrskit')}"


def test_the_script_is_installed_and_says_its_version() -> None:
    done = subprocess.run([str(CQRSKIT), "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cqrskit {version('cqrskit')}"


def test_importing_cqrskit_loads_no_command_line_library() -> None:
    """typer, rich and uvicorn are the command's extra: the framework never needs them."""
    code = (
        "import sys, cqrskit, cqrskit.fastapi, cqrskit.testing; "
        "print(sorted(m for m in ('typer', 'click', 'rich', 'uvicorn', 'cqrskit.cli')"
        " if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_status_and_rebuild_through_app(url: str) -> None:
    head = add_tasks(url, "milk", "bread")
    result = invoke("--app", APP, "--url", url, "status", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["tasks", "task_count"]
    assert set(rows[0]) == set(STATUS_FIELDS)
    assert (rows[0]["error"], rows[0]["parked"]) == (None, 0)
    assert all(r["head"] == head and r["lag_events"] == head for r in rows), rows

    rebuilt = invoke("--app", APP, "--url", url, "rebuild", "tasks")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert f"Rebuilt tasks: 2 events up to position {head} in " in rebuilt.stdout
    everything = invoke("--app", APP, "--url", url, "rebuild")
    assert everything.exit_code == 0, everything.output
    assert everything.stdout.count("Rebuilt ") == 2, everything.stdout

    table = invoke("--app", APP, "--url", url, "status")
    assert table.exit_code == 0, table.output
    assert "task_count" in table.stdout
    after = json.loads(invoke("--app", APP, "--url", url, "status", "--json").stdout)
    assert all(r["position"] == head and r["lag_events"] == 0 for r in after), after


def test_rebuilding_an_unknown_read_model_is_a_usage_error(url: str) -> None:
    Path(url.removeprefix("sqlite:///")).mkdir()
    result = invoke("--app", APP, "--url", url, "rebuild", "nope")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "no read model named 'nope'" in one_error_line(result)


@pytest.mark.parametrize(
    "spec",
    [
        "tests.integration._cli_app:api",  # a FastAPI app connected to an App
        "tests.integration._cli_app:todo",  # the bare App
        "tests.integration._cli_app:make_api",  # a factory of a connected FastAPI app
        "tests.integration._cli_app:CliTodo",  # an App class (made with no argument)
    ],
)
def test_every_kind_of_app_and_the_environment(url: str, spec: str) -> None:
    env = {"CQRSKIT_APP": spec, "CQRSKIT_URL": url}
    Path(url.removeprefix("sqlite:///")).mkdir()
    result = invoke("status", "--json", env=env)
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.stdout)] == ["tasks", "task_count"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "give the application: --app MODULE:ATTR"),
        (["--app", "nothing"], "--app must be MODULE:ATTR"),
        (["--app", "no.such.module:api"], "no module named 'no'"),
        (["--app", "tests.integration.no_such:api"], "no module named 'tests.integration.no_such'"),
        (["--app", "tests.integration._cli_app:nope"], "has no attribute 'nope'"),
        (["--app", "tests.integration._cli_app:not_connected"], "not connected to a cqrskit App"),
        (["--app", "tests.integration._cli_app:a_number"], "is a int"),
        (["--app", "tests.integration._cli_app:needs_an_argument"], "must take no argument"),
        (["--app", "tests.integration.test_app:Task"], "is the class Task"),
        (["--app", APP, "--url", "mysql://x/y"], "unknown kind of database"),
    ],
)
def test_a_bad_app_is_one_line_and_exit_2(
    url: str, args: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CQRSKIT_APP", raising=False)
    result = invoke(*args, "status")
    assert result.exit_code == EXIT_USAGE, result.output
    assert expected in one_error_line(result)


def test_status_refuses_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    typo = tmp_path / "dtaa"
    result = invoke("--app", APP, "--url", f"sqlite:///{typo}", "status")
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"no database directory at {typo}: is --url right?" in one_error_line(result)
    assert not typo.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--app", "tests.integration._cli_app:todo", "serve"], "serve needs an ASGI app"),
        (["--app", APP, "serve", "--workers", "2"], "memory:// lives in one process"),
        (["--app", APP, "serve", "--workers", "0"], "--workers must be at least 1"),
        (["--app", APP, "serve", "--header-timeout", "0"], "--header-timeout must be positive"),
        (["--app", APP, "serve", "--log-level", "loud"], "--log-level must be one of"),
    ],
)
def test_serve_refuses_what_cannot_be_served(args: list[str], expected: str) -> None:
    result = invoke(*args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert expected in one_error_line(result)


def test_serve_on_a_busy_port_says_so_in_one_line(url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke("--app", APP, "--url", url, "serve", "--port", str(port))
    assert result.exit_code == EXIT_CANNOT_LISTEN, result.output
    assert (
        one_error_line(result)
        == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_an_unreachable_database_is_one_line_and_exit_3(workers: str) -> None:
    """With --workers, each worker fails to open it: the parent reports one of them."""
    done = subprocess.run(
        [str(CQRSKIT), "--app", APP, "--url", "postgresql://nobody@127.0.0.1:1/none",
         "serve", "--port", "0", "--workers", workers],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_DATABASE, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    assert "127.0.0.1" in lines[0], done.stderr


def test_worker_runs_the_projections_until_sigterm(url: str, tmp_path: Path) -> None:
    head = add_tasks(url, "milk", "bread", "eggs")
    out = tmp_path / "worker.out"
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [str(CQRSKIT), "--app", APP, "--url", url, "worker"],
            stdout=stdout, stderr=subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            status = invoke("--app", APP, "--url", url, "status", "--json")
            if status.exit_code == 0:
                rows = json.loads(status.stdout)
                if all(r["position"] == head and r["state"] == "running" for r in rows):
                    break
            time.sleep(0.1)
        assert all(r["position"] == head and r["state"] == "running" for r in rows), rows
        assert out.read_text() == "Running projections: tasks, task_count\n"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = json.loads(invoke("--app", APP, "--url", url, "status", "--json").stdout)
    assert all(r["state"] == "stopped" for r in after), after
