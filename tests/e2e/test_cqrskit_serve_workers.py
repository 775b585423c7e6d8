"""``serve --workers 2`` as a real process tree, on SQLite and on PostgreSQL: one port, one
``Listening on`` line, two processes answering, each projection run by one of them at a
time; writes read back with ``X-Min-Position`` whichever process answers; SIGTERM exits 0
and leaves no process behind; a worker killed with SIGKILL is replaced while the other
serves and takes over its projections. Then ``social serve --workers 2``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e._support import ListeningProcess

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
APP = "tests.integration._cli_app:api"
PROJECTIONS = {"tasks", "task_count"}


class Tree(ListeningProcess):
    """One ``serve --workers 2`` parent process: its stdout read by a thread, its stderr
    in a file."""

    def fail_start(self) -> None:
        self.kill()

    def client(self) -> httpx.Client:
        """A new connection per request: the kernel hands each to one worker or another."""
        limits = httpx.Limits(max_keepalive_connections=0)
        return httpx.Client(base_url=self.url, timeout=15, limits=limits)

    def children(self) -> set[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids = {int(p) for p in path.read_text().split()} if path.exists() else set()
        return {p for p in pids if "spawn_main" in _cmdline(p)}  # not the resource tracker

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"no exit within 20 s of SIGTERM\n{self.stderr()}") from None
        self._close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            for pid in self.children():
                _kill(pid)
            self.proc.kill()
            self.proc.wait(10)
        self._close()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "sqlite":
        return ["--url", f"sqlite:///{tmp_path / 'data'}"]
    write, read = request.getfixturevalue("pg_url_pair")
    return ["--url", write, "--read-url", read]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[list[str]], Tree]]:
    trees: list[Tree] = []

    def run(command: list[str]) -> Tree:
        trees.append(Tree(command, tmp_path / f"serve-{len(trees)}.stderr"))
        return trees[-1]

    try:
        yield run
    finally:
        for tree in trees:
            tree.kill()


def cqrskit(database_args: list[str], *args: str) -> list[str]:
    return [str(BIN / "cqrskit"), "--app", APP, *database_args, *args]


def views(tree: Tree, want: int = 2, tries: int = 200) -> dict[int, dict[str, str]]:
    """Each process's own view of the projections (``{pid: {name: state}}``), asked over
    new connections until ``want`` processes answered."""
    seen: dict[int, dict[str, str]] = {}
    with tree.client() as http:
        for _ in range(tries):
            body = http.get("/projections").json()
            seen[body["pid"]] = {p["name"]: p["state"] for p in body["projections"]}
            if len(seen) >= want:
                break
    return seen


def run_once_each(tree: Tree, pids: set[int], timeout: float = 10.0) -> dict[int, dict[str, str]]:
    """Wait until each projection runs in exactly one of ``pids``, the others standing by."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {pid: v for pid, v in views(tree, len(pids)).items() if pid in pids}
        states = [v for v in seen.values()]
        if len(seen) == len(pids) and all(
            sorted(v[name] for v in states) == ["running"] + ["standby"] * (len(pids) - 1)
            for name in PROJECTIONS
        ):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"projections not run once each: {seen}")
        time.sleep(0.2)


def write_and_read_everywhere(tree: Tree, titles: list[str]) -> int:
    """POST each title, then read them all back with X-Min-Position from both processes."""
    with tree.client() as http:
        position = 0
        for title in titles:
            resp = http.post("/tasks", json={"title": title})
            assert resp.status_code == 201, resp.text
            position = int(resp.headers["X-Position"])
        answered: set[str] = set()
        for _ in range(100):
            resp = http.get("/tasks", headers={"X-Min-Position": str(position)})
            assert resp.status_code == 200, resp.text
            assert set(titles) <= set(resp.json()), resp.text
            answered.add(resp.headers["X-Pid"])
            if len(answered) == 2:
                break
    assert len(answered) == 2, answered
    return position


def test_two_workers_share_the_port_and_the_projections(
    start: Callable[[list[str]], Tree], database_args: list[str]
) -> None:
    tree = start(cqrskit(database_args, "serve", "--port", "0", "--workers", "2"))
    workers = tree.children()
    assert len(workers) == 2, workers
    assert set(views(tree)) == workers
    run_once_each(tree, workers)

    position = write_and_read_everywhere(tree, [f"task {i}" for i in range(10)])
    done = subprocess.run(
        cqrskit(database_args, "status", "--json"),
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert set(rows) == PROJECTIONS
    assert all(r["state"] == "running" and r["head"] == position for r in rows.values()), rows

    assert tree.stop() == 0, tree.stderr()
    assert tree.lines == [f"Listening on {tree.url}"]
    assert not any(_alive(pid) for pid in workers)
    assert "Traceback" not in tree.stderr(), tree.stderr()


def test_a_killed_worker_is_replaced_while_the_other_serves(
    start: Callable[[list[str]], Tree], database_args: list[str]
) -> None:
    tree = start(cqrskit(database_args, "serve", "--port", "0", "--workers", "2"))
    workers = tree.children()
    seen = run_once_each(tree, workers)
    holder = next(pid for pid, v in seen.items() if v["tasks"] == "running")
    os.kill(holder, signal.SIGKILL)

    # The other one answers at once, and takes the projections over: writes read back.
    survivor = (workers - {holder}).pop()
    with tree.client() as http:
        resp = http.post("/tasks", json={"title": "after the kill"})
        assert resp.status_code == 201, resp.text
        read = http.get("/tasks", headers={"X-Min-Position": resp.headers["X-Position"]})
        assert read.status_code == 200, read.text
        assert "after the kill" in read.json()

    # The parent said so in one line and started another worker in its place.
    deadline = time.monotonic() + 15
    while len(tree.children() - {holder}) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    now = tree.children() - {holder}
    assert survivor in now, (now, tree.stderr())
    assert len(now) == 2, (now, tree.stderr())
    died = [line for line in tree.stderr().splitlines() if "killed by SIGKILL" in line]
    assert len(died) == 1, tree.stderr()
    assert f"(pid {holder}) killed by SIGKILL; starting another" in died[0]
    run_once_each(tree, now)
    write_and_read_everywhere(tree, ["one", "two", "three"])

    assert tree.stop() == 0, tree.stderr()
    assert tree.lines == [f"Listening on {tree.url}"]
    assert not any(_alive(pid) for pid in now | {holder})


def test_social_serve_with_two_workers(start: Callable[[list[str]], Tree], tmp_path: Path) -> None:
    social = str(BIN / "social")
    tree = start([social, "serve", "--port", "0", "--workers", "2", "--data-dir", str(tmp_path)])
    workers = tree.children()
    assert len(workers) == 2, workers
    with tree.client() as http:
        body: dict[str, Any] = {"email": "ann@example.com", "password": "correct-horse-battery"}
        created = http.post("/users", json=body)
        assert created.status_code == 201, created.text
        user_id, position = created.json()["id"], created.headers["X-Position"]
        for _ in range(10):  # whichever process answers, with one secret for the tokens
            login = http.post("/sessions", json=body)
            assert login.status_code == 200, login.text
            auth = {"Authorization": f"Bearer {login.json()['token']}"}
            read = http.get(f"/users/{user_id}", headers={"X-Min-Position": position, **auth})
            assert read.status_code == 200, read.text
    states = json.loads(
        subprocess.run(
            [social, "status", "--json", "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    )  # fmt: skip
    assert {s["state"] for s in states} == {"running"}, states
    assert tree.stop() == 0, tree.stderr()
    assert tree.lines == [f"Listening on {tree.url}"]
    assert not any(_alive(pid) for pid in workers)
