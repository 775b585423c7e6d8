"""The slow-client check: a normal client's latency with and without slow connections.

``social serve`` closes a connection that has not sent a request's complete headers within
``--header-timeout`` seconds (:mod:`cqrskit.cli._protocol`). This check starts the service on
a fresh SQLite data directory with a short header timeout and measures one normal client
(sequential ``GET /health`` and ``GET /users/{id}``, each on a new connection, as a new
visitor would arrive) in rounds that alternate two conditions:

- **baseline**: nothing else talks to the server;
- **under slow clients**: a holder process keeps ``slow_connections`` connections open that
  never finish their headers (a third send a header byte a second, a third sent a partial
  request and then nothing, a third nothing at all), reopening each one as soon as the
  server closes it, so the pressure stays steady. Its first connections are spread over one
  header timeout, so the server's cut-offs (and the holder's reconnections) are spread too.

Each round gives p50 and p99 of both conditions, their p99 ratio, the normal requests that
failed (must be 0), how many slow connections the server closed, how many were held open
on average while the normal client measured, and after how long the server closed them.

``python -m benchmarks.slow_clients [--quick]`` runs the check alone and prints JSON;
``python -m benchmarks --only slow`` runs it as part of the suite (docs/benchmarks.md).
The holder is ``python -m benchmarks.slow_clients --hold HOST:PORT ...``: a process of its
own, so its work never shares a GIL with the normal client's clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .http_bench import Server
from .stats import percentile

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class SlowCheck:
    rounds: int
    """Rounds of (baseline, under slow clients); figures are medians over rounds."""
    seconds: float
    """How long the normal client measures in each condition of a round."""
    slow_connections: int
    header_timeout: float
    """``social serve --header-timeout``; also the holder's ramp-up time."""
    request_timeout: float = 10.0
    """A normal request that takes longer counts as failed."""
    settle: float = 0.5
    """Pause after the holder stops, so the server has dropped its connections."""
    warmup: float = 0.5

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = SlowCheck(rounds=5, seconds=8.0, slow_connections=500, header_timeout=2.0)
QUICK = SlowCheck(rounds=3, seconds=3.0, slow_connections=500, header_timeout=2.0)


# -- the normal client ---------------------------------------------------------------------


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def get(host: str, port: int, raw: bytes, timeout: float) -> None:
    """One request on a new connection; raises unless it is answered 200 in full."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):  # ``Connection: close``: the server closes first
            chunks.append(chunk)
    data = b"".join(chunks)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ConnectionError(f"incomplete response ({len(data)} bytes)")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)[1]
    if status != "200":
        raise ConnectionError(f"status {status}")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length" and int(value) != len(body):
            raise ConnectionError(f"body of {len(body)} bytes, announced {int(value)}")


def measure(
    host: str, port: int, requests: Sequence[bytes], seconds: float, timeout: float
) -> Phase:
    """Sequential requests (cycling through ``requests``) for ``seconds``."""
    phase = Phase()
    clock = time.perf_counter
    deadline = clock() + seconds
    i = 0
    while clock() < deadline:
        raw = requests[i % len(requests)]
        i += 1
        start = clock()
        try:
            get(host, port, raw, timeout)
        except (OSError, ValueError, IndexError) as exc:
            phase.failures.append(f"{type(exc).__name__}: {exc}")
            continue
        phase.latencies.append(clock() - start)
    return phase


def request(hostport: str, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nAccept: application/json\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def register_user(url: str) -> str:
    """A user whose read model is visible: ``GET /users/{id}`` answers 200."""
    with httpx.Client(base_url=url, timeout=60) as client:
        created = client.post(
            "/users", json={"email": "slow-check@bench.example", "password": "benchmark-password"}
        )
        created.raise_for_status()
        user_id = str(created.json()["id"])
        seen = client.get(
            f"/users/{user_id}", headers={"X-Min-Position": created.headers["X-Position"]}
        )
        seen.raise_for_status()
    return user_id


# -- the slow connections (the holder process) -----------------------------------------------

TRICKLE, PARTIAL, IDLE = 0, 1, 2
KINDS = (TRICKLE, PARTIAL, IDLE)
STARTS = {
    TRICKLE: b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Trickle: ",
    PARTIAL: b"GET /health HTTP/1.1\r\nHost: slow\r\n",
    IDLE: b"",
}


class Holder:
    """``count`` connections that never complete their headers, each reopened as soon as
    the server closes it; the first ones are opened evenly over ``ramp`` seconds."""

    def __init__(self, host: str, port: int, count: int, ramp: float) -> None:
        self.host, self.port, self.count, self.ramp = host, port, count, ramp
        self.ready = asyncio.Event()
        self.connected_once = 0
        self.open = 0
        self.peak = 0
        self.opened = 0
        self.closed = 0
        """Closed by the server without an answer."""
        self.answered = 0
        """The server answered something (then closed): not expected, reported."""
        self.connect_errors = 0
        self.lifetimes: list[float] = []
        self._since: float | None = None
        self._mark = 0.0
        self._area = 0.0

    def _count_open(self, delta: int) -> None:
        now = time.monotonic()
        if self._since is not None:
            self._area += self.open * (now - self._mark)
            self._mark = now
        self.open += delta
        self.peak = max(self.peak, self.open)

    def start_window(self) -> None:
        self._since = self._mark = time.monotonic()

    def held_mean(self) -> float:
        """Time-weighted mean of the connections open since :meth:`start_window`."""
        if self._since is None:
            return 0.0
        self._count_open(0)
        elapsed = self._mark - self._since
        return self._area / elapsed if elapsed > 0 else float(self.open)

    async def slot(self, i: int) -> None:
        await asyncio.sleep(i * self.ramp / self.count)
        kind = KINDS[i % len(KINDS)]
        first = True
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.connect_errors += 1
                await asyncio.sleep(0.05)
                continue
            opened_at = time.monotonic()
            self.opened += 1
            self._count_open(+1)
            if first:
                first = False
                self.connected_once += 1
                if self.connected_once == self.count:
                    self.ready.set()
            try:
                answered = await self._hang(kind, reader, writer)
            finally:
                self._count_open(-1)
                writer.close()
            if answered:
                self.answered += 1
            else:
                self.closed += 1
                self.lifetimes.append(time.monotonic() - opened_at)

    @staticmethod
    async def _hang(kind: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Until the server closes the connection; True if it answered something first."""
        try:
            if STARTS[kind]:
                writer.write(STARTS[kind])
                await writer.drain()
            while True:
                if kind == TRICKLE:
                    try:
                        async with asyncio.timeout(1.0):
                            data = await reader.read(4096)
                    except TimeoutError:
                        writer.write(b"a")  # one more byte of a header value
                        await writer.drain()
                        continue
                else:
                    data = await reader.read(4096)
                return bool(data)
        except OSError:  # reset by the server
            return False

    def report(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "closed": self.closed,
            "answered": self.answered,
            "connect_errors": self.connect_errors,
            "peak": self.peak,
            "held_mean": self.held_mean(),
            "closed_after_s_p50": statistics.median(self.lifetimes) if self.lifetimes else 0.0,
        }


def _raise_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed + 64 and soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def hold_async(host: str, port: int, count: int, ramp: float) -> int:
    """Print ``ready`` once every slot has connected; hold until stdin closes, then print
    the holder's report as one JSON line."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    holder = Holder(host, port, count, ramp)
    tasks = [asyncio.create_task(holder.slot(i)) for i in range(count)]
    status = 0
    try:
        async with asyncio.timeout(ramp + 30.0):
            await holder.ready.wait()
    except TimeoutError:
        status = 1
        print(json.dumps({"error": f"only {holder.connected_once} of {count} connected"}))
    else:
        holder.start_window()
        print("ready", flush=True)
        await stop.wait()
    report = holder.report()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(report), flush=True)
    return status


class HolderProcess:
    """``python -m benchmarks.slow_clients --hold``, ready once it printed ``ready``."""

    def __init__(self, host: str, port: int, count: int, ramp: float) -> None:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.slow_clients",
            "--hold",
            f"{host}:{port}",
            "--slow-connections",
            str(count),
            "--header-timeout",
            str(ramp),
        ]
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        """Blocks until the holder said ready; it gives up by itself (ramp + 30 s)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "ready":
            _, err = self.process.communicate(timeout=30)
            raise RuntimeError(f"slow-client holder not ready: {line or err[-2000:]}")

    def stop(self) -> dict[str, Any]:
        out, err = self.process.communicate(input="", timeout=60)
        lines = out.strip().splitlines()
        if self.process.returncode != 0 or not lines:
            raise RuntimeError(f"slow-client holder exit {self.process.returncode}: {err[-2000:]}")
        report: dict[str, Any] = json.loads(lines[-1])
        return report

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


# -- the check -------------------------------------------------------------------------------


@dataclass
class Result:
    rounds: list[dict[str, float]] = field(default_factory=list)
    """One dict of figures per round (the names of :data:`benchmarks.stats.UNITS`)."""
    holders: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def medians(self) -> dict[str, float]:
        names = self.rounds[0] if self.rounds else {}
        return {n: float(statistics.median(r[n] for r in self.rounds)) for n in names}


def _ms(values: Sequence[float], q: float) -> float:
    return percentile(values, q) * 1000 if values else 0.0


def round_figures(base: Phase, under: Phase, holder: dict[str, Any]) -> dict[str, float]:
    base_p99, under_p99 = _ms(base.latencies, 99), _ms(under.latencies, 99)
    return {
        "slow_base_p50_ms": _ms(base.latencies, 50),
        "slow_base_p99_ms": base_p99,
        "slow_under_p50_ms": _ms(under.latencies, 50),
        "slow_under_p99_ms": under_p99,
        "slow_p99_ratio": under_p99 / base_p99 if base_p99 else 0.0,
        "slow_failed_requests": float(len(base.failures) + len(under.failures)),
        "slow_closed_connections": float(holder["closed"]),
        "slow_held_connections": float(holder["held_mean"]),
        "slow_closed_after_s": float(holder["closed_after_s_p50"]),
    }


def run_check(
    check: SlowCheck, workdir: Path | None = None, log: Callable[[str], None] | None = None
) -> Result:
    """Start ``social serve`` on a fresh SQLite data directory and run the rounds."""
    say = log or (lambda _: None)
    result = Result()
    data_dir = Path(tempfile.mkdtemp(prefix="slow-clients-", dir=workdir))
    args = ["--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)]
    args += ["--header-timeout", str(check.header_timeout)]
    server = Server(args, {**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = server.wait_ready()
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        user_id = register_user(url)
        hostport = f"{host}:{port}"
        requests = [request(hostport, "/health"), request(hostport, f"/users/{user_id}")]

        def client(seconds: float) -> Phase:
            return measure(host, port, requests, seconds, check.request_timeout)

        client(check.warmup)
        for n in range(1, check.rounds + 1):
            base = client(check.seconds)
            holder = HolderProcess(host, port, check.slow_connections, check.header_timeout)
            try:
                holder.wait_ready()
                under = client(check.seconds)
                report = holder.stop()
            except BaseException:
                holder.kill()
                raise
            time.sleep(check.settle)
            figures = round_figures(base, under, report)
            result.rounds.append(figures)
            result.holders.append(report)
            for label, phase in (("baseline", base), ("under slow clients", under)):
                if phase.failures:
                    result.errors.append(
                        f"slow clients round {n}: {len(phase.failures)} normal requests failed"
                        f" {label} (first: {phase.failures[0]})"
                    )
            if report["closed"] == 0:
                result.errors.append(f"slow clients round {n}: the server closed none")
            say(
                f"slow clients round {n}/{check.rounds}: "
                + ", ".join(f"{k}={v:,.2f}" for k, v in figures.items())
                + f" (requests: {len(base.latencies)} baseline, {len(under.latencies)} under;"
                f" holder: {report['opened']} opened, peak {report['peak']},"
                f" {report['answered']} answered, {report['connect_errors']} connect errors)"
            )
    except (RuntimeError, OSError, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
        result.errors.append(f"slow clients: {type(exc).__name__}: {exc}")
    finally:
        server.stop()
        if server.process.stdout is not None:
            server.process.stdout.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


# -- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slow_clients", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick run's sizes")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float, help="measured per condition and round")
    parser.add_argument("--slow-connections", type=int)
    parser.add_argument("--header-timeout", type=float)
    parser.add_argument("--hold", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    check = SlowCheck(
        rounds=args.rounds or base.rounds,
        seconds=args.seconds or base.seconds,
        slow_connections=args.slow_connections or base.slow_connections,
        header_timeout=args.header_timeout or base.header_timeout,
    )
    if args.hold:
        host, _, port = args.hold.rpartition(":")
        _raise_open_files_limit(check.slow_connections)
        return asyncio.run(
            hold_async(host, int(port), check.slow_connections, check.header_timeout)
        )
    result = run_check(check, log=lambda line: print(line, file=sys.stderr, flush=True))
    document = {
        "settings": check.as_dict(),
        "medians": result.medians(),
        "rounds": result.rounds,
        "holders": result.holders,
        "errors": result.errors,
    }
    print(json.dumps(document, indent=2))
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
