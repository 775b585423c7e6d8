"""cqrskit over HTTP: the social service (``social serve``) under a separate load generator,
with one worker process and with ``--workers 2`` (figures ``NAME_w2``), on fresh data each."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .orchestrate import Run


WORKERS = (1, 2)
"""The ``social serve --workers`` counts measured, each repetition, in alternating order."""


def figure_name(name: str, workers: int) -> str:
    """``http_get_rps`` for one worker, ``http_get_rps_w2`` for two."""
    return name if workers == 1 else f"{name}_w{workers}"


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from ``/proc/PID/task/TID/children`` (Linux); just
    ``pid`` where that cannot be read."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(c) for c in children.read_text().split()]
            except (OSError, ValueError):
                continue
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def social_command() -> list[str]:
    script = Path(sys.executable).parent / "social"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "social.cli"]


class Server:
    """A ``social serve`` process; ready once it printed ``Listening on``."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [*social_command(), "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.url: str | None = None
        self.output: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if len(self.output) < 200:
                self.output.append(line.rstrip())
            if self.url is None and "Listening on " in line:
                self.url = line.split("Listening on ", 1)[1].strip().split()[0]
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> str:
        self._ready.wait(timeout)
        if self.url is None:
            self.stop()
            tail = "\n".join(self.output[-20:])
            raise RuntimeError(f"social serve did not start:\n{tail}")
        return self.url

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()


def http_figures(run: Run, backend: str, workers: int = 1) -> dict[str, float]:
    """One repetition of the HTTP figures on a fresh data directory or pair of databases,
    against ``social serve --workers WORKERS``. The CPU the load generator and the server's
    processes used in each phase, in cores, goes to ``run.settings["http_cores"]``."""
    used: list[str] = []
    if backend == "sqlite":
        data_dir = run.workdir / f"http-{time.monotonic_ns()}"
        args = ["--data-dir", str(data_dir)]
    else:
        write, read = run.fresh("social", backend, "w"), run.fresh("social", backend, "r")
        used += [write, read]
        args = ["--write-url", write, "--read-url", read]
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The access log off: these figures measure the framework, as before the access log
    # existed; its cost is measured apart (docs/observability.md).
    args += ["--workers", str(workers), "--no-access-log"]
    server = Server(["--host", "127.0.0.1", "--port", str(port), *args], env)
    label = f"http/{backend}/w{workers}"
    try:
        url = server.wait_ready()
        output: dict[str, Any] = {}
        figures = run._subprocess(
            [
                sys.executable,
                "-m",
                "benchmarks.loadgen",
                "--url",
                url,
                "--connections",
                str(run.sizes.http_connections),
                "--seconds",
                str(run.sizes.http_seconds),
                "--server-pids",
                ",".join(map(str, process_tree(server.process.pid))),
            ],
            timeout=300,
            label=label,
            output_out=output,
        )
        if figures:
            cores = run.settings.setdefault("http_cores", {}).setdefault(
                f"{backend}/w{workers}", {}
            )
            for phase, by in output.get("cores", {}).items():
                for who, value in by.items():
                    cores.setdefault(f"{phase}_{who}", []).append(round(value, 2))
        return {figure_name(name, workers): value for name, value in figures.items()}
    except RuntimeError as exc:
        run.errors.append(f"{label}: {exc}")
        return {}
    finally:
        server.stop()
        for where in used:
            run.discard(backend, where)
        if backend == "sqlite":
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
