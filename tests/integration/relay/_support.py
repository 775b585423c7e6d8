"""Relay processes for the tests (``cqrskit --app tests.integration._relay_app:app relay``),
and the checks every test ends with."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import ClassVar

from tests.integration._relay_app import RelayedApp
from tests.integration.relay._nats import Stored, Stream, read_stream

ROOT = Path(__file__).resolve().parents[3]
APP = "tests.integration._relay_app:app"


def env() -> dict[str, str]:
    sources = [ROOT, ROOT / "src", ROOT / "services" / "social" / "src"]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, sources)), "PYTHONUNBUFFERED": "1"}


class RelayProcess:
    """One ``relay`` process; its stdout lines are read as they come, stderr at the end."""

    started: ClassVar[list[RelayProcess]] = []
    """Every one a test started, for :meth:`reap` to end after it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.started.append(self)

    @classmethod
    async def reap(cls) -> None:
        """Kill what still runs and wait for everything (no process or pipe outlives a test)."""
        while cls.started:
            process = cls.started.pop().process
            if process.returncode is None:
                process.kill()
            await process.communicate()

    @classmethod
    async def start(
        cls,
        db_url: str,
        nats_url: str,
        stream: Stream,
        *extra: str,
        command: list[str] | None = None,
    ) -> RelayProcess:
        argv = command or [
            sys.executable, "-m", "cqrskit.cli", "--app", APP, "--url", db_url,
            "relay", "--subject-prefix", stream.prefix,
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *argv, "--nats-url", nats_url, "--stream", stream.name, *extra,
            cwd=ROOT, env=env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(process)

    async def line(self, timeout: float = 15.0) -> str:
        """The next line it prints on stdout."""
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert raw, f"the relay exited ({await self.stderr()})"
        self.lines.append(raw.decode().rstrip("\n"))
        return self.lines[-1]

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM: the relay must stop cleanly, with exit status 0."""
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 15)

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        return (await self.process.stderr.read()).decode()


async def logged_events(db_url: str) -> tuple[list[int], list[str]]:
    """Positions and ids of every event of the log, in log order."""
    app = RelayedApp(db_url, run_projections=False)
    positions: list[int] = []
    ids: list[str] = []
    async with app:
        while batch := await app.store.read_all(positions[-1] if positions else 0, 5000):
            positions += [e.position for e in batch]
            ids += [e.event_id for e in batch]
    return positions, ids


async def caught_up(nats_url: str, stream: Stream, count: int, timeout: float = 30.0) -> Stored:
    """The stream once it holds ``count`` messages (fails after ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            stored = await read_stream(nats_url, stream.name, stream.prefix)
        except Exception:  # the stream not created yet, the server restarting
            stored = Stored([], [], [], [])
        if len(stored.positions) >= count or loop.time() > deadline:
            return stored
        await asyncio.sleep(0.1)


async def assert_exactly_once_in_order(db_url: str, nats_url: str, stream: Stream) -> int:
    """The stream holds every event of the log once, in log order; returns how many."""
    positions, ids = await logged_events(db_url)
    stored = await caught_up(nats_url, stream, len(positions))
    assert len(set(stored.ids)) == len(stored.ids), "a Nats-Msg-Id twice"
    assert all(a < b for a, b in zip(stored.positions, stored.positions[1:], strict=False))
    assert stored.positions == positions
    assert stored.ids == ids
    return len(positions)


async def start_social_relay(tmp_path: Path, nats_url: str) -> tuple[RelayProcess, Path, str]:
    """``social relay`` on a fresh data directory, to a stream of a new name: the relay,
    the directory and the stream's name (its subjects ``social.events.<EventType>``)."""
    data = tmp_path / "data"
    data.mkdir()
    name = f"SOCIAL_{uuid.uuid4().hex[:6]}"
    command = [sys.executable, "-c", "from social.cli import main; main()", "relay"]
    command += ["--data-dir", str(data)]
    relay = await RelayProcess.start("", nats_url, Stream(name, "social.events"), command=command)
    return relay, data, name
