"""NATS for the relay's tests: is a server there, start one of our own, read a stream as
its consumers do."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.js.errors
from nats.js.api import DeliverPolicy


async def jetstream_answers(url: str) -> str | None:
    try:
        nc = await nats.connect(
            url, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=2
        )
    except Exception as exc:
        return f"NATS at {url} is not reachable: {exc!r}"
    try:
        await nc.jetstream().account_info()
    except Exception as exc:
        return f"NATS at {url} has no JetStream: {exc!r}"
    finally:
        await nc.close()
    return None


@dataclass(frozen=True)
class Stream:
    name: str
    prefix: str


async def delete_stream(url: str, name: str) -> None:
    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1)
    try:
        await nc.jetstream().delete_stream(name)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


@dataclass(frozen=True)
class Stored:
    """A stream's messages: log positions and ``Nats-Msg-Id`` s in stream order."""

    positions: list[int]
    ids: list[str]
    subjects: list[str]
    bodies: list[bytes]


async def read_stream(url: str, name: str, prefix: str) -> Stored:
    """Every message of stream ``name``, as a consumer of it receives them (an ordered
    consumer from the first message)."""
    from cqrskit.relay import position_of

    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(name)).state.messages
        stored = Stored([], [], [], [])
        if total == 0:
            return stored
        sub = await js.subscribe(
            f"{prefix}.>", stream=name, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        while len(stored.positions) < total:
            msg = await sub.next_msg(timeout=5)
            stored.positions.append(position_of(msg.data))
            stored.ids.append((msg.headers or {}).get("Nats-Msg-Id", ""))
            stored.subjects.append(msg.subject)
            stored.bodies.append(msg.data)
        await sub.unsubscribe()
        return stored
    finally:
        await nc.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A nats-server with JetStream of the test's own: ``start``, ``kill``, ``start`` again
    (same port, same storage: a restart)."""

    def __init__(self, binary: str, storage: Path) -> None:
        self.binary = binary
        self.storage = storage
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            self.binary,
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.storage),
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():
            assert self.process.poll() is None, "nats-server exited"
            assert time.monotonic() < deadline, "nats-server did not answer within 10 s"
            time.sleep(0.05)

    def _answers(self) -> bool:
        """The server's greeting (``INFO {...}``) says JetStream is on."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                return b'"jetstream":true' in conn.recv(4096)
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            self.process.wait(10)
        self.process = None
