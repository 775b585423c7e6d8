"""``serve``: in this process, or (``--workers N``) in N processes on one listening socket.

The parent binds the socket once (a busy port fails there, in one line, exit 4), then
starts N worker processes (``multiprocessing``'s *spawn*: a fresh interpreter, which gets
the socket and calls the target again, importing the app anew). Each opens its own App
and serves on the shared socket, so the kernel hands each new connection to one of them;
each runs the projections under the backend's leases, so each projection runs in one
process at a time and a standby takes over within about a second of its holder's death.

- The parent prints the one ``Listening on`` line once every worker is listening.
- A worker that fails to start before that (its App cannot open) is reported in its own
  one line and exit status; the others are stopped and the command exits with that status.
- SIGTERM or SIGINT to the parent is passed on as SIGTERM to each worker (workers ignore
  SIGINT: a terminal's Ctrl-C reaches the whole process group, and the parent's forwarded
  signal is the one that counts); the parent exits 0 once every worker has finished its
  requests in flight and its projections' batch. A second signal is passed on as well
  (stop waiting for open connections).
- A worker that dies afterwards (SIGKILL, the OOM killer, a crash) is reported in one line
  and replaced; the others keep serving meanwhile, and a standby takes over the
  projections it held. When workers die :data:`GIVE_UP_AFTER` times within
  :data:`GIVE_UP_WINDOW` seconds, the parent stops the others and exits 1.
- A worker whose parent died (SIGKILL) stops within a second: none is left orphaned.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from ._run import EXIT_ERROR, Failure, report, run_async
from ._serve import (
    STOP_SIGNALS,
    ServeOptions,
    Target,
    bind,
    listening_line,
    load,
    raise_open_files_limit,
    serve_socket,
)

__all__ = ["GIVE_UP_AFTER", "GIVE_UP_WINDOW", "Supervisor", "serve"]

log = logging.getLogger("cqrskit.serve")

GIVE_UP_AFTER = 5
GIVE_UP_WINDOW = 60.0
STOP_TIMEOUT = 30.0
"""Seconds the parent waits, when it exits on its own, for workers to stop before
killing them (a stop signal waits for them as long as they take)."""


def serve(
    target: Target,
    options: ServeOptions,
    *,
    configure_logging: Callable[[], None] | None = None,
) -> int:
    """Serve until a stop signal; the exit status (a failure is reported in one line).

    ``configure_logging``: called here once the socket is bound (``--log-format``), and
    first in each worker process (``workers > 1``), which starts afresh (a module-level
    function, or a ``functools.partial`` of one, so that it pickles)."""
    try:
        options.check()
        served = load(target, options.workers)
        raise_open_files_limit()
        sock = bind(options.host, options.port)
    except Failure as failure:
        report(failure.message)
        return failure.status
    if configure_logging is not None:
        configure_logging()
    with sock:
        line = listening_line(options.host, sock)
        if options.workers > 1:
            supervisor = Supervisor(target, options, sock, configure_logging)
            return supervisor.run(lambda: print(line, flush=True))
        try:
            return run_async(
                serve_socket(served, sock, options, lambda: print(line, flush=True)),
                uvloop_loop=True,
            )
        except Failure as failure:
            report(failure.message)
            return failure.status


@dataclass
class _Worker:
    slot: int
    process: BaseProcess
    messages: Connection
    ready: bool = False
    error: tuple[str, int] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def describe_exit(self) -> str:
        code = self.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"


@dataclass
class Supervisor:
    target: Target
    options: ServeOptions
    sock: socket.socket
    configure_logging: Callable[[], None] | None = None
    _workers: dict[int, _Worker] = field(default_factory=dict)
    _signals: list[int] = field(default_factory=list)
    _deaths: list[float] = field(default_factory=list)

    def run(self, announce: Callable[[], None]) -> int:
        """Start the workers, announce once all listen, supervise until stopped; the exit
        status."""
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        old_wakeup = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        try:
            for slot in range(1, self.options.workers + 1):
                self._start(slot)
            return self._supervise(announce, wake_read)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_all()
            wake_read.close()
            wake_write.close()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals.append(sig)

    def _start(self, slot: int) -> None:
        spawn = multiprocessing.get_context("spawn")
        receive, send = spawn.Pipe(duplex=False)
        process = spawn.Process(
            target=_worker_main,
            args=(self.target, self.options, self.sock, send, self.configure_logging, os.getpid()),
            name=f"cqrskit-worker-{slot}",
        )
        process.start()
        send.close()  # the worker has its own end: its death closes the pipe
        self._workers[slot] = _Worker(slot, process, receive)

    def _supervise(self, announce: Callable[[], None], wake: socket.socket) -> int:
        announced = stopping = False
        status = 0
        while True:
            # Deaths first, then the wait: asking a process for its exit code reaps it, so
            # a death seen anywhere must be handled before waiting, or its sentinel is no
            # longer waited on and nothing would wake us for it.
            for w in list(self._workers.values()):
                self._read_messages(w)
                if w.process.exitcode is None:
                    continue
                w.process.join()
                w.messages.close()
                del self._workers[w.slot]
                if stopping:
                    if w.process.exitcode and w.process.exitcode > 0:
                        status = max(status, w.process.exitcode)
                    continue
                if not announced:
                    return self._failed_to_start(w)
                if not self._replace(w):
                    return EXIT_ERROR
            if stopping and not self._workers:
                return status
            if not announced and all(w.ready for w in self._workers.values()):
                announce()
                announced = True
            waiting: list[Any] = [wake]
            for w in self._workers.values():
                waiting += [w.process.sentinel, *([] if w.messages.closed else [w.messages])]
            wait(waiting)
            with contextlib.suppress(BlockingIOError):
                wake.recv(4096)
            if self._signals:
                self._signals.clear()
                stopping = True
                self._forward(signal.SIGTERM)

    def _read_messages(self, w: _Worker) -> None:
        while not w.messages.closed:
            try:
                if not w.messages.poll():
                    return
                message = w.messages.recv()
            except (EOFError, OSError):
                w.messages.close()
                return
            if message[0] == "ready":
                w.ready = True
            elif message[0] == "error":
                w.error = (message[1], message[2])

    @staticmethod
    def _failed_to_start(w: _Worker) -> int:
        """The worker's own one line and status (an App that cannot open), else its end."""
        if w.error is not None:
            message, status = w.error
        else:
            message = f"worker {w.slot} (pid {w.pid}) {w.describe_exit()} before it listened"
            status = EXIT_ERROR
        report(message)
        return status

    def _replace(self, w: _Worker) -> bool:
        """Report a worker's death and start another in its place; False: too many died."""
        why = f"failed to start: {w.error[0]}" if w.error else w.describe_exit()
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < GIVE_UP_WINDOW] + [now]
        if len(self._deaths) >= GIVE_UP_AFTER:
            log.error(
                "worker %d (pid %s) %s; %d workers died within %.0f s: giving up",
                w.slot, w.pid, why, len(self._deaths), GIVE_UP_WINDOW,
            )  # fmt: skip
            return False
        log.warning("worker %d (pid %s) %s; starting another", w.slot, w.pid, why)
        self._start(w.slot)
        return True

    def _forward(self, sig: signal.Signals) -> None:
        for w in self._workers.values():
            if w.process.exitcode is None and w.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, sig)

    def _stop_all(self) -> None:
        """No worker outlives the parent: SIGTERM, a grace period, then SIGKILL."""
        self._forward(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in self._workers.values():
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.exitcode is None:
                w.process.kill()
                w.process.join()
            w.messages.close()
        self._workers.clear()


def _worker_main(
    target: Target,
    options: ServeOptions,
    sock: socket.socket,
    messages: Connection,
    configure_logging: Callable[[], None] | None,
    parent: int,
) -> None:
    """A worker process's life: load the target, open its App, serve on ``sock``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent passes a stop on as SIGTERM
    if configure_logging is not None:
        configure_logging()
    try:
        served = load(target)
        code = run_async(
            serve_socket(
                served,
                sock,
                options,
                lambda: messages.send(("ready",)),
                signals=(signal.SIGTERM,),
                parent=parent,
            ),
            uvloop_loop=True,
        )
    except Failure as failure:
        with contextlib.suppress(OSError):
            messages.send(("error", failure.message, failure.status))
        code = failure.status
    sys.exit(code)
