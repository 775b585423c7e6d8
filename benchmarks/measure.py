"""Measuring helpers shared by the systems: client threads, read-model probes, memory."""

from __future__ import annotations

import contextlib
import multiprocessing
import resource
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import psycopg

from .workload import ClientScript, Follow, Op, Publish, Register

POLL_INTERVAL = 0.0002
"""How often a lag probe looks at the read model (the same for every system)."""

MIN_LAG_SAMPLES = 20
"""A lag run stops at its time cap only once it has at least this many samples."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one system keeps its data: two SQLite files or two PostgreSQL URLs."""

    backend: str  # "sqlite" or "postgresql"
    write: str
    read: str


def run_clients(
    clients: int, seconds: float, make_executor: Callable[[int], Callable[[Op], None]]
) -> float:
    """Commands per second of ``clients`` threads, each running its own command cycle
    for ``seconds`` (executors are built before the clock starts)."""
    executors = [make_executor(c) for c in range(clients)]
    counts = [0] * clients
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        script = ClientScript(index)
        execute = executors[index]
        start.wait()
        done = 0
        try:
            while time.perf_counter() < deadline[0]:
                execute(script.next())
                done += 1
        except BaseException as exc:
            errors.append(exc)
        counts[index] = done

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


class Probe(Protocol):
    def fetch(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None: ...

    def close(self) -> None: ...


class SqliteProbe:
    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 30000")

    def fetch(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._conn.execute(sql, params).fetchone()
        return row

    def close(self) -> None:
        self._conn.close()


class PgProbe:
    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True)

    def fetch(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        return self._conn.execute(sql.replace("?", "%s"), params, prepare=True).fetchone()

    def close(self) -> None:
        self._conn.close()


def open_probe(target: Target) -> Probe:
    return SqliteProbe(target.read) if target.backend == "sqlite" else PgProbe(target.read)


class Visibility:
    """Knows what the read model must show once a command's events are projected."""

    def __init__(self, probe: Probe, table: str = "bench_users") -> None:
        self._probe = probe
        self._table = table
        self._posts: dict[str, int] = {}

    def expect(self, op: Op) -> Callable[[], bool]:
        """Call right after ``op`` answered; returns the test of its visibility."""
        fetch = self._probe.fetch
        table = self._table
        if isinstance(op, Register):
            uid = str(op.user_id)
            return lambda: fetch(f"SELECT 1 FROM {table} WHERE id = ?", (uid,)) is not None
        if isinstance(op, Publish):
            uid = str(op.author_id)
            want = self._posts[uid] = self._posts.get(uid, 0) + 1

            def posted() -> bool:
                row = fetch(f"SELECT post_count FROM {table} WHERE id = ?", (uid,))
                return row is not None and int(row[0]) >= want

            return posted
        assert isinstance(op, Follow)
        follower = str(op.follower_id)

        def followed() -> bool:
            row = fetch(f"SELECT following_count FROM {table} WHERE id = ?", (follower,))
            return row is not None and int(row[0]) >= 1

        return followed


def wait_visible(
    test: Callable[[], bool], timeout: float = 10.0, start: float | None = None
) -> float:
    """Seconds from ``start`` (a ``perf_counter`` reading, default now) until ``test()``
    holds, polling every POLL_INTERVAL with ``time.sleep`` (see :class:`LagProbe`)."""
    if start is None:
        start = time.perf_counter()
    while not test():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the read model did not show the command in time")
        time.sleep(POLL_INTERVAL)
    return time.perf_counter() - start


class LagProbe:
    """Watches the read model from a process of its own and times each command's lag.

    ``lag(op, start)`` gives the seconds from ``start`` (a ``perf_counter`` reading taken
    when the command answered; the clock is the system's monotonic clock, the same in
    every process) until the probe process saw ``op``'s effect. The probe shares no GIL
    with the system measured, whichever system it is: its polling neither slows that
    system's threads nor waits behind them, as a reader in another process would not.
    """

    def __init__(self, target: Target) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_probe_main, args=(target, child), name="lag-probe", daemon=True
        )
        self._process.start()
        child.close()
        if self._conn.recv() != "ready":
            raise RuntimeError("the lag probe did not start")

    def lag(self, op: Op, start: float) -> float:
        self._conn.send((op, start))
        answer = self._conn.recv()
        if isinstance(answer, str):
            raise TimeoutError(answer)
        return float(answer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def _probe_main(target: Target, conn: Connection) -> None:
    probe: Probe | None = None
    visibility: Visibility | None = None
    conn.send("ready")
    try:
        while (item := conn.recv()) is not None:
            op, start = item
            if probe is None or visibility is None:
                # Opened at the first command, once the system has created its read model.
                probe = open_probe(target)
                visibility = Visibility(probe)
            try:
                conn.send(wait_visible(visibility.expect(op), 10.0, start))
            except TimeoutError as exc:
                conn.send(str(exc))
    finally:
        if probe is not None:
            probe.close()


def rss_mb() -> float:
    """Current resident set size of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakSampler:
    """Samples the RSS every few milliseconds: the peak of a window, not of the process
    lifetime (``ru_maxrss`` would include whatever the setup allocated before)."""

    def __init__(self, interval: float = 0.005) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self.base = rss_mb()
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self.base = self.peak = rss_mb()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def growth_mb(self) -> float:
        return max(0.0, self.peak - self.base)
