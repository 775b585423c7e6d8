"""SqliteLease across processes: one holder per name; a SIGKILLed holder's lease passes to
the other process at once (the kernel releases a dead process's file locks).

Run as a module (``python -m tests.integration.test_sqlite_lease PATH NAME``) this file is
a contender process: it asks for the lease every 0.1 s, prints ``standby`` after its first
refusal and ``acquired`` once it holds the lease, then renews it every 0.1 s until it is
killed.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from cqrskit.backends.sqlite import SqliteLease

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 0.1


async def spawn(path: Path, name: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.test_sqlite_lease",
        str(path),
        name,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )


async def next_line(process: asyncio.subprocess.Process, timeout: float) -> bytes:
    assert process.stdout is not None
    return await asyncio.wait_for(process.stdout.readline(), timeout)


async def test_a_killed_holders_lease_passes_to_the_other_process(tmp_path: Path) -> None:
    path = tmp_path / "read.db"
    processes: list[asyncio.subprocess.Process] = []
    try:
        first = await spawn(path, "counters")
        processes.append(first)
        assert await next_line(first, 30) == b"acquired\n"
        second = await spawn(path, "counters")
        processes.append(second)
        assert await next_line(second, 30) == b"standby\n"
        # Many of its tries: the holder keeps the lease from the other process.
        try:
            line = await next_line(second, 2.0)
        except TimeoutError:
            line = b""
        assert line == b"", "the standby acquired a lease that was still held"
        with_holder = SqliteLease(path)
        try:
            assert not await with_holder.acquire("counters")  # nor can a third one take it
            assert await with_holder.acquire("timeline")  # other names are free
        finally:
            await with_holder.close()

        first.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await first.wait()
        assert await next_line(second, 30) == b"acquired\n"
        takeover = time.monotonic() - killed_at
        print(f"the other process took over {takeover:.2f}s after the SIGKILL")
        assert takeover < 10  # its next try (0.1 s), with a margin for a loaded machine

        third = SqliteLease(path)
        try:
            assert not await third.acquire("counters")  # the new holder keeps it
        finally:
            await third.close()
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
                await process.wait()


async def _contender(path: str, name: str) -> None:
    lease = SqliteLease(path)
    refused = False
    while not await lease.acquire(name):
        if not refused:
            refused = True
            print("standby", flush=True)
        await asyncio.sleep(INTERVAL)
    print("acquired", flush=True)
    while True:  # until killed
        await asyncio.sleep(INTERVAL)
        if not await lease.renew(name):
            print("lost", flush=True)
            await lease.close()
            return


if __name__ == "__main__":
    asyncio.run(_contender(sys.argv[1], sys.argv[2]))
