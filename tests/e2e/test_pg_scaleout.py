"""Scale-out on PostgreSQL: two `social serve` and two `social worker` processes on the same
write and read databases, each projection run by exactly one of them at a time (a lease:
a session advisory lock in the read database), the others standing by.

Who holds a lease is read from the server itself (`pg_locks` joined with
`pg_stat_activity`), and the holder's session is traced back to one of our processes by
its TCP port, so the test knows exactly which process is active. Writes go through one API
process, and each read, with `X-Min-Position`, through the OTHER one: it must see its write
whichever process projects. The active processes are SIGKILLed during the stream of
writes; a standby must take over within a few seconds, and the counters end exact and
equal to what `social rebuild` gives."""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cqrskit.backends.postgres.lease import lease_key
from tests.e2e._support import (
    REPORT,
    Server,
    ServerPool,
    Storage,
    User,
    Worker,
    all_posts,
    at,
    create_post,
    expect,
    follow,
    get_user,
    register,
    run_cli,
    snapshot,
)

pytestmark = [pytest.mark.postgres]

TAKEOVER_LIMIT = 5.0
"""Seconds within which a standby must have taken over and caught up after a SIGKILL (the
lease is retried every second; the rest is one batch and the probe's round trips)."""

_HOLDERS = """
SELECT l.classid::int8, l.objid::int8, a.client_port
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until it is true; return the seconds it took, fail after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def _socket_inodes(port: int) -> set[str]:
    """Inodes of this host's TCP sockets whose LOCAL port is ``port`` (the client side)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _owner(port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` has the client socket of local port ``port`` open."""
    inodes = {f"socket:[{i}]" for i in _socket_inodes(port)}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except FileNotFoundError:
                continue
    return None


def lease_holders(read_url: str, names: list[str], pids: list[int]) -> dict[str, int | None]:
    """For each projection, the pid (among ``pids``) whose session holds its lease; None
    when nobody holds it, or a process outside ``pids`` does."""
    wanted = {lease_key(n) & 0xFFFF_FFFF_FFFF_FFFF: n for n in names}
    holders: dict[str, int | None] = dict.fromkeys(names)
    with psycopg.connect(read_url, autocommit=True) as conn:
        rows = conn.execute(_HOLDERS).fetchall()
    for classid, objid, port in rows:
        name = wanted.get((int(classid) << 32) | int(objid))
        if name is not None and port is not None:
            holders[name] = _owner(int(port), pids)
    return holders


def checkpoints(read_url: str) -> dict[str, int]:
    with psycopg.connect(read_url, autocommit=True) as conn:
        rows = conn.execute("SELECT name, position FROM cqrskit_projections").fetchall()
    return {str(name): int(pos) for name, pos in rows}


def states(server: Server) -> dict[str, str]:
    with server.client() as http:
        return {r["name"]: r["state"] for r in expect(http.get("/projections"), 200)}


class Stream(threading.Thread):
    """A stream of writes, each one through one API process and read back, with
    X-Min-Position, through another: each new user registers, follows the target and
    posts once. ``lock`` is held for one user's writes (a kill of an API process takes it,
    so that no acknowledged-or-not write is left in doubt)."""

    def __init__(self, apis: list[Server], target: User) -> None:
        super().__init__(daemon=True)
        self.apis = apis
        self.target = target
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.users: list[User] = []
        self.posts: dict[str, str] = {}
        self.last_position = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        i = 0
        try:
            while not self.stopping.is_set():
                with self.lock:
                    count = len(self.apis)
                    self._one(i, self.apis[i % count], self.apis[(i + 1) % count])
                i += 1
        except BaseException as exc:
            self.errors.append(exc)

    def _one(self, i: int, writer: Server, reader: Server) -> None:
        with writer.client(timeout=15) as w, reader.client(timeout=15) as r:
            user = register(w)
            assert get_user(r, user.id, user.position)["id"] == user.id
            pos = follow(w, user, self.target.id)
            assert get_user(r, user.id, pos)["following_count"] == 1
            post_id, pos = create_post(w, user, f"post {i}")
            assert [p["id"] for p in all_posts(r, user.id, pos)] == [post_id]
        self.users.append(user)
        self.posts[user.id] = post_id
        self.last_position = max(self.last_position, pos)

    def wait_for_users(self, count: int, timeout: float = 60.0) -> None:
        wait_until(
            lambda: len(self.users) >= count or bool(self.errors),
            timeout,
            f"{count} users written by the stream",
        )
        assert not self.errors, self.errors


def _followers(http: httpx.Client, user_id: str, min_pos: int) -> list[str]:
    ids: list[str] = []
    params: dict[str, str] = {}
    while True:
        page = expect(
            http.get(f"/users/{user_id}/followers", params=params, headers=at(min_pos)), 200
        )
        ids.extend(item["id"] for item in page["items"])
        if page["next"] is None:
            return ids
        params = {"before": page["next"]}


def _normalised(state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state)
    for key, value in state.items():
        if key.startswith(("followers ", "following ")):
            out[key] = {**value, "items": sorted(value["items"], key=lambda i: i["id"])}
    return out


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[tuple[ServerPool, list[Worker]]]:
    pool = ServerPool(lambda: pytest.fail("every process names its storage"), tmp_path / "logs")
    workers: list[Worker] = []
    try:
        yield pool, workers
    finally:
        for worker in workers:
            worker.kill()
        pool.close()


def test_two_apis_two_workers_one_active_per_projection_and_takeover_after_sigkill(
    pg_url_pair: tuple[str, str],
    tmp_path: Path,
    processes: tuple[ServerPool, list[Worker]],
) -> None:
    write_url, read_url = pg_url_pair
    pool, workers = processes
    storage = Storage(
        "postgres",
        ("--write-url", write_url, "--read-url", read_url, "--data-dir", str(tmp_path / "data")),
    )
    status = run_cli(["status", "--json", *storage.args])
    assert status.returncode == 0, status.stderr
    names = [row["name"] for row in json.loads(status.stdout)]
    assert len(names) >= 3, names

    # Worker A starts alone and takes every lease; the three processes started after it
    # stand by.
    first = Worker(storage, tmp_path / "logs").start()
    workers.append(first)
    wait_until(
        lambda: set(lease_holders(read_url, names, [first.pid]).values()) == {first.pid},
        15,
        "the first worker holds every lease",
    )
    with ThreadPoolExecutor(3) as starting:  # started together: they race for the leases
        second = starting.submit(Worker(storage, tmp_path / "logs").start)
        started = [starting.submit(pool.start, storage) for _ in range(2)]
        workers.append(second.result())
        apis = [f.result() for f in started]
    time.sleep(1.5)  # more than one lease interval: each standby has tried at least once

    def pids() -> list[int]:
        found = [w.pid for w in workers if w.running]
        return found + [s.proc.pid for s in apis if s.proc is not None and s.running]

    assert lease_holders(read_url, names, pids()) == dict.fromkeys(names, first.pid)
    for api in apis:
        assert states(api) == dict.fromkeys(names, "standby"), api.url

    with apis[0].client() as http:
        target = register(http)
    stream = Stream(apis, target)
    stream.start()
    takeovers: list[dict[str, object]] = []

    def kill_and_measure(victim: Worker | Server, replacement: Server | None = None) -> None:
        """SIGKILL ``victim`` while the stream writes; measure until a write made after
        the kill is applied by every projection, and check who holds the leases then."""
        before = len(stream.users)
        if isinstance(victim, Server):
            assert replacement is not None
            with stream.lock:  # between two users: no write through it is in doubt
                stream.apis[stream.apis.index(victim)] = replacement
                killed = time.monotonic()
                victim.kill()
        else:
            killed = time.monotonic()
            victim.kill()
        dead = victim.proc.pid if victim.proc is not None else -1
        with stream.apis[0].client() as http:
            _, probe = create_post(http, target, f"probe after killing {dead}")

        def applied() -> bool:
            reached = checkpoints(read_url)
            return all(reached.get(n, 0) >= probe for n in names)

        wait_until(
            applied,
            15,
            f"every projection applies position {probe} after the SIGKILL of {dead}",
        )
        took = time.monotonic() - killed
        holders = lease_holders(read_url, names, pids())
        assert all(h is not None and h != dead for h in holders.values()), holders
        takeovers.append({"killed": type(victim).__name__.lower(), "seconds": round(took, 2)})
        stream.last_position = max(stream.last_position, probe)
        assert took < TAKEOVER_LIMIT, takeovers
        stream.wait_for_users(before + 3)  # the stream goes on, reads seeing their writes

    stream.wait_for_users(3)
    kill_and_measure(first)

    # Kill whoever runs the first projection now (the other worker or an API process); an
    # API process killed is replaced so that writes and reads still go through two.
    holder = lease_holders(read_url, names, pids())[names[0]]
    assert holder is not None
    candidates: list[Worker | Server] = [*workers, *apis]
    victim = next(p for p in candidates if p.proc is not None and p.proc.pid == holder)
    kill_and_measure(victim, pool.start(storage) if isinstance(victim, Server) else None)
    stream.wait_for_users(len(stream.users) + 3)
    stream.stopping.set()
    stream.join(60)
    assert not stream.is_alive()
    assert not stream.errors, stream.errors

    # Exactly one live process runs each projection, and the API processes' own view
    # agrees: "standby" everywhere but in the holder.
    live = stream.apis
    final = lease_holders(read_url, names, pids())
    assert all(h in pids() for h in final.values()), final
    active = ("running", "catching_up")

    def agrees(api: Server) -> bool:
        assert api.proc is not None
        mine = {n for n, h in final.items() if h == api.proc.pid}
        seen = states(api)
        return set(seen) == set(names) and all(
            seen[n] in active if n in mine else seen[n] == "standby" for n in names
        )

    for api in live:
        wait_until(
            functools.partial(agrees, api),
            5,
            f"{api.url} reports 'standby' exactly for the projections it does not hold",
        )

    # Exact counters, through both API processes.
    users, last = stream.users, stream.last_position
    assert len(users) >= 9
    for api in live:
        with api.client() as http:
            assert get_user(http, target.id, last)["follower_count"] == len(users)
            assert sorted(_followers(http, target.id, last)) == sorted(u.id for u in users)
            for user in users:
                view = get_user(http, user.id, last)
                assert (view["post_count"], view["following_count"]) == (1, 1), view
    with live[0].client() as http:
        ids = [target.id, *(u.id for u in users)]
        before = _normalised(snapshot(http, ids, last))
        assert before[f"user {target.id}"]["post_count"] == len(takeovers)
        rebuilt = run_cli(["rebuild", *storage.args], timeout=120)
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert _normalised(snapshot(http, ids, last)) == before

    REPORT["pg scale-out takeover after SIGKILL (kill -> a later write applied by all)"] = takeovers
    print(f"\npg scale-out: {len(users)} users, takeovers {takeovers}")


def test_api_without_projections_reads_what_a_worker_projects(
    pg_url_pair: tuple[str, str],
    tmp_path: Path,
    processes: tuple[ServerPool, list[Worker]],
) -> None:
    """`serve --no-projections` runs no projection at all (not even in standby): its reads
    with X-Min-Position wait on the checkpoints a `worker` moves."""
    write_url, read_url = pg_url_pair
    pool, workers = processes
    storage = Storage(
        "postgres",
        ("--write-url", write_url, "--read-url", read_url, "--data-dir", str(tmp_path / "data")),
    )
    api = pool.start(storage, ["--no-projections"])
    with api.client() as http:
        author = register(http)
        # No process runs the projections yet: well after the write, the read model still
        # does not know the user, and no projection is running.
        time.sleep(1.5)
        assert http.get(f"/users/{author.id}").status_code == 404
        assert "running" not in states(api).values(), states(api)

        worker = Worker(storage, tmp_path / "logs").start()
        workers.append(worker)
        post_id, pos = create_post(http, author, "projected elsewhere")
        assert [p["id"] for p in all_posts(http, author.id, pos)] == [post_id]
        assert get_user(http, author.id, pos)["post_count"] == 1
        names = list(states(api))
        assert lease_holders(read_url, names, [worker.pid]) == dict.fromkeys(names, worker.pid)
        # Its status is what the worker recorded, not a standby of its own.
        assert set(states(api).values()) <= {"running", "catching_up"}, states(api)
