"""cqrskit._workers: blocking calls on queue-fed threads, results back on the event loop."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest

from cqrskit import StoreClosed
from cqrskit._workers import Workers


def closed() -> StoreClosed:
    return StoreClosed("closed")


async def test_calls_run_off_the_loop_and_return_their_result() -> None:
    workers = Workers(2, "t", closed)
    try:
        loop_thread = threading.get_ident()
        ident, value = await workers.run(lambda x: (threading.get_ident(), x * 2), 21)
        assert value == 42
        assert ident != loop_thread
    finally:
        workers.shutdown()


async def test_an_exception_reaches_the_caller() -> None:
    workers = Workers(1, "t", closed)
    try:

        def fail() -> None:
            raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await workers.run(fail)
        assert await workers.run(lambda: "still serving") == "still serving"
    finally:
        workers.shutdown()


async def test_size_threads_run_calls_side_by_side() -> None:
    workers = Workers(3, "t", closed)
    barrier = threading.Barrier(3, timeout=5)  # broken unless three calls run at once
    try:
        indexes = await asyncio.gather(*(workers.run(barrier.wait) for _ in range(3)))
        assert sorted(indexes) == [0, 1, 2]
    finally:
        workers.shutdown()


async def test_shutdown_finishes_queued_calls_then_refuses_new_ones() -> None:
    workers = Workers(1, "t", closed)
    done: list[int] = []

    def slow(i: int) -> int:
        time.sleep(0.02)
        done.append(i)
        return i

    calls = [asyncio.ensure_future(workers.run(slow, i)) for i in range(5)]
    await asyncio.sleep(0)  # every call queued
    await asyncio.to_thread(workers.shutdown)
    assert await asyncio.gather(*calls) == [0, 1, 2, 3, 4]
    assert done == [0, 1, 2, 3, 4]
    with pytest.raises(StoreClosed):
        await workers.run(slow, 5)


async def test_a_cancelled_caller_does_not_break_the_worker() -> None:
    workers = Workers(1, "t", closed)
    try:
        started = threading.Event()

        def wait() -> str:
            started.set()
            time.sleep(0.05)
            return "late"

        call = asyncio.ensure_future(workers.run(wait))
        await asyncio.to_thread(started.wait, 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await workers.run(lambda: "next") == "next"
    finally:
        workers.shutdown()


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Workers(0, "t", closed)


async def test_a_sequential_caller_keeps_to_one_thread() -> None:
    workers = Workers(4, "t", closed)
    try:
        names = {await workers.run(lambda: threading.current_thread().name) for _ in range(50)}
        assert names == {"t-0"}
        barrier = threading.Barrier(4, timeout=5)  # broken unless four calls run at once
        await asyncio.gather(*(workers.run(barrier.wait) for _ in range(4)))
        assert len(workers._threads) == 4  # concurrent calls start more, up to size
    finally:
        workers.shutdown()


async def test_an_idle_thread_keeps_no_result() -> None:
    workers = Workers(2, "t", closed)
    try:
        result = await workers.run(lambda: [object()])
        for _ in range(500):  # the thread lets go right after handing the result over
            if sys.getrefcount(result) == 2:  # ``result`` and getrefcount's argument
                break
            await asyncio.sleep(0.01)
        assert sys.getrefcount(result) == 2
    finally:
        workers.shutdown()


async def test_a_call_made_while_every_thread_is_busy_says_it_waits() -> None:
    """A thread that finishes a call and takes one that was queued is not idle: a call
    made next must hear that it waits (its caller then arms the deadline that abandons
    it if the threads stay busy). Counted idle, it was told a thread was free."""
    workers = Workers(1, "t", closed)
    first, second = threading.Event(), threading.Event()
    started = threading.Semaphore(0)

    def hold(until: threading.Event) -> None:
        started.release()
        until.wait(5)

    try:
        a, a_waits = workers.submit(hold, first)
        b, b_waits = workers.submit(hold, second)  # queued behind a
        assert (a_waits, b_waits) == (False, True)
        await asyncio.to_thread(started.acquire, True, 5)
        first.set()  # the thread finishes a and takes b
        await a
        await asyncio.to_thread(started.acquire, True, 5)
        c, c_waits = workers.submit(lambda: "c")
        assert c_waits  # the only thread is busy with b
        second.set()
        await b
        assert await c == "c"
        d, d_waits = workers.submit(lambda: "d")
        assert await d == "d"
        assert not d_waits  # now it is idle
    finally:
        first.set()
        second.set()
        workers.shutdown()
