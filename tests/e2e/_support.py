"""Helpers for the black-box end-to-end tests: a real `social serve` process, its CLI, and
thin HTTP helpers. Everything here talks to the service the way an outside client does
(subprocesses and HTTP); nothing imports `social`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import httpx

SOCIAL = Path(sys.executable).with_name("social")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
LISTENING = re.compile(r"^Listening on (http://[^\s:]+:(\d+))$")
PASSWORD = "correct-horse-battery"

USER_KEYS = frozenset(
    {
        "id",
        "display_name",
        "avatar_url",
        "created_at",
        "post_count",
        "follower_count",
        "following_count",
        "version",
    }
)
POST_KEYS = frozenset({"id", "user_id", "content", "created_at"})
PROJECTION_KEYS = frozenset(
    {"name", "position", "head", "lag_events", "lag_seconds", "state", "error", "parked"}
)
CONFLICT_MESSAGE = "Conflict: resource has been modified"
REPORT: dict[str, object] = {}
"""Figures measured by the suite, printed in pytest's terminal summary (see conftest)."""


@dataclass(frozen=True)
class Storage:
    """Where one service instance keeps its data, as the CLI options that name it. The same
    options serve `serve`, `rebuild` and `status`, and a restart on the same storage finds
    the same data."""

    label: str
    args: tuple[str, ...]


class ServerError(AssertionError):
    """The server process did not start, or did not stop, as the contract pins it."""


@dataclass
class Server:
    """One running `social serve` process. Its stdout is read by a thread (so a silent or
    chatty server never blocks the test), its stderr goes to a log file."""

    storage: Storage
    extra_args: tuple[str, ...]
    log_dir: Path
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    stdout_lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"server-{id(self)}.stderr"

    def start(self) -> Server:
        cmd = [
            str(SOCIAL),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *self.storage.args,
            *self.extra_args,
        ]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise ServerError(
                    f"`{' '.join(cmd)}` did not print 'Listening on http://HOST:PORT' within "
                    f"{READY_TIMEOUT:.0f} s (exit code {self.proc.returncode}).\n"
                    f"stdout: {self.stdout_lines!r}\nstderr tail:\n{self.stderr_tail()}"
                )
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.stdout_lines.append(line)
            match = LISTENING.match(line.strip())
            if match and not self._ready.is_set():
                self.url = match.group(1)
                self._ready.set()

    def stderr_tail(self, chars: int = 3000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        text = "\n".join(self.stdout_lines)
        with contextlib.suppress(FileNotFoundError):
            text += "\n" + self.stderr_path.read_text(errors="replace")
        return text

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `sig` and wait for the exit code; SIGKILL (and fail) if it does not exit."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ServerError(
                    f"server did not exit within {timeout:.0f} s of {sig.name}; killed.\n"
                    f"stderr tail:\n{self.stderr_tail()}"
                ) from None
        self._join_reader()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        self._join_reader()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
        if self.proc is not None and self.proc.stdout is not None and not self._reader_alive:
            self.proc.stdout.close()

    @property
    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def client(self, timeout: float = 15.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


class ServerPool:
    """Starts servers and guarantees each one is killed when the pool closes, even when the
    test failed half-way."""

    def __init__(self, new_storage: Callable[[], Storage], log_dir: Path) -> None:
        self._new_storage = new_storage
        self._log_dir = log_dir
        self._servers: list[Server] = []

    def start(self, storage: Storage | None = None, extra_args: Sequence[str] = ()) -> Server:
        server = Server(
            storage=storage if storage is not None else self._new_storage(),
            extra_args=tuple(extra_args),
            log_dir=self._log_dir,
        )
        self._servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in self._servers:
            server.kill()
        self._servers.clear()


class ServerFactory(Protocol):
    """The `server_factory` fixture: start a server on fresh storage, or on `storage` to
    restart on the same data; `extra_args` are added to `social serve`."""

    def __call__(
        self, storage: Storage | None = None, extra_args: Sequence[str] = ()
    ) -> Server: ...


def run_cli(args: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run one `social` sub-command to completion, capturing its output."""
    return subprocess.run(
        [str(SOCIAL), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# --- HTTP helpers -------------------------------------------------------------------------


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def position(resp: httpx.Response) -> int:
    """The response's X-Position header, which the contract requires to be an integer."""
    raw = resp.headers.get("X-Position")
    assert raw is not None, (
        f"{resp.request.method} {resp.request.url.path} -> {resp.status_code} has no "
        f"X-Position header (headers: {dict(resp.headers)})"
    )
    assert re.fullmatch(r"\d+", raw.strip()), f"X-Position is not an int: {raw!r}"
    return int(raw)


def describe(resp: httpx.Response) -> str:
    return (
        f"{resp.request.method} {resp.request.url} -> {resp.status_code} "
        f"{resp.headers.get('content-type')!r} {resp.text[:500]!r}"
    )


def json_body(resp: httpx.Response) -> Any:
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"not JSON: {describe(resp)}"
    return resp.json()


def expect(resp: httpx.Response, status: int) -> Any:
    """Assert the status and return the JSON body."""
    assert resp.status_code == status, f"expected {status}: {describe(resp)}"
    return json_body(resp)


def expect_error(resp: httpx.Response, status: int | Iterable[int]) -> dict[str, Any]:
    """Assert an error status and the contract's error body: a JSON object whose "error" is
    a non-empty string."""
    allowed = {status} if isinstance(status, int) else set(status)
    assert resp.status_code in allowed, f"expected {sorted(allowed)}: {describe(resp)}"
    body = json_body(resp)
    assert isinstance(body, dict), f"error body is not an object: {describe(resp)}"
    assert isinstance(body.get("error"), str), f"no string 'error': {describe(resp)}"
    assert body["error"], f"empty 'error': {describe(resp)}"
    return body


def expect_not_5xx(resp: httpx.Response) -> None:
    """Bad input is never a server error; a 4xx for it carries the JSON error body."""
    assert resp.status_code < 500, f"server error on bad input: {describe(resp)}"
    if resp.status_code >= 400:
        expect_error(resp, resp.status_code)


@dataclass(frozen=True)
class User:
    id: str
    email: str
    token: str
    version: int
    position: int

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)


def register(
    client: httpx.Client, email: str | None = None, password: str = PASSWORD, **extra: Any
) -> User:
    """POST /users then POST /sessions; the returned position covers the registration."""
    email = email or unique_email()
    resp = client.post("/users", json={"email": email, "password": password, **extra})
    body = expect(resp, 201)
    pos = position(resp)
    login = expect(client.post("/sessions", json={"email": email, "password": password}), 200)
    return User(
        id=body["id"], email=email, token=login["token"], version=body["version"], position=pos
    )


def login(client: httpx.Client, user: User, password: str = PASSWORD) -> User:
    """A fresh session for a known user (for example after a restart)."""
    resp = client.post("/sessions", json={"email": user.email, "password": password})
    body = expect(resp, 200)
    assert body["user_id"] == user.id, describe(resp)
    return replace(user, token=body["token"])


def at(pos: int) -> dict[str, str]:
    """Read-your-writes: the header that makes a read wait for `pos`."""
    return {"X-Min-Position": str(pos)}


def get_user(
    client: httpx.Client, user_id: str, min_pos: int = 0, token: str | None = None
) -> dict[str, Any]:
    headers = at(min_pos)
    if token is not None:
        headers.update(bearer(token))
    resp = client.get(f"/users/{user_id}", headers=headers)
    body: dict[str, Any] = expect(resp, 200)
    return body


def create_post(client: httpx.Client, user: User, content: str) -> tuple[str, int]:
    """POST /posts; returns (post id, write position)."""
    resp = client.post("/posts", json={"content": content}, headers=user.auth)
    body = expect(resp, 201)
    return body["id"], position(resp)


def all_posts(
    client: httpx.Client, user_id: str, min_pos: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """Every post of a user, following `next` until it is null (bounded, so a cursor that
    never ends fails the test rather than hanging it)."""
    items: list[dict[str, Any]] = []
    params: dict[str, str | int] = {} if limit is None else {"limit": limit}
    for _ in range(10_000):
        page = expect(
            client.get(f"/users/{user_id}/posts", params=params, headers=at(min_pos)), 200
        )
        items.extend(page["items"])
        if page["next"] is None:
            return items
        params = {**params, "before": page["next"]}
    raise AssertionError("pagination never ended")


def follow(client: httpx.Client, follower: User, target_id: str) -> int:
    resp = client.put(f"/users/{target_id}/followers/me", headers=follower.auth)
    assert expect(resp, 200) == {"following": True}, describe(resp)
    return position(resp)


def snapshot(client: httpx.Client, user_ids: Iterable[str], min_pos: int) -> dict[str, Any]:
    """Every read model the API shows for these users, for before/after comparisons."""
    state: dict[str, Any] = {}
    for uid in user_ids:
        state[f"user {uid}"] = get_user(client, uid, min_pos)
        state[f"posts {uid}"] = all_posts(client, uid, min_pos)
        for rel in ("followers", "following"):
            resp = client.get(f"/users/{uid}/{rel}", headers=at(min_pos))
            state[f"{rel} {uid}"] = expect(resp, 200)
    return state


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


@dataclass
class Worker:
    """One running `social worker` process (projections only). Ready once it prints
    "Running projections: ..."; its stdout and stderr go to log files."""

    storage: Storage
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"worker-{id(self)}.stdout"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"worker-{id(self)}.stderr"

    def start(self) -> Worker:
        cmd = [str(SOCIAL), "worker", *self.storage.args]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while "Running projections" not in self.stdout_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise ServerError(
                    f"`{' '.join(cmd)}` did not print 'Running projections' within "
                    f"{READY_TIMEOUT:.0f} s (exit code {self.proc.returncode}).\n"
                    f"stderr tail:\n{self.stderr_tail()}"
                )
            time.sleep(0.05)
        return self

    def stderr_tail(self, chars: int = 3000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


class TcpProxy:
    """A TCP relay to ``target`` on a free local port, which can be cut (every connection
    reset, new ones refused, as a database server that went away) and resumed on the same
    port: an outage of one service's database without touching the shared server."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = self._listen(0)
        self.port: int = self._listener.getsockname()[1]

    def url(self, database_url: str) -> str:
        """``database_url`` (postgresql://user@host:port/db) through this proxy."""
        prefix, _, rest = database_url.partition("://")
        auth, _, path = rest.partition("/")
        user = auth.rpartition("@")[0]
        return f"{prefix}://{user}@127.0.0.1:{self.port}/{path}"

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut or closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def resume(self) -> None:
        self._listener = self._listen(self.port)

    def close(self) -> None:
        self.cut()


class ListeningProcess:
    """A ``serve`` process started from a command line: its stdout read by a thread until
    its ``Listening on URL`` line (``url``; every line kept in ``lines``), its stderr in
    ``log``. Subclasses say how it stops (:meth:`fail_start` when it never listens)."""

    LISTENING = re.compile(r"^Listening on (http://127\.0\.0\.1:\d+)$")

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.url = ""
        self.lines: list[str] = []
        self._ready = threading.Event()
        root = Path(__file__).resolve().parents[2]
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                text=True, cwd=root, env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 30
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.fail_start()
                raise AssertionError(f"not listening: {self.lines!r}\n{self.stderr()}")

    def fail_start(self) -> None:
        """It never listened: make sure it is gone."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.rstrip("\n"))
            match = self.LISTENING.match(self.lines[-1])
            if match:
                self.url = match.group(1)
                self._ready.set()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def _close(self) -> None:
        self._reader.join(5)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()
