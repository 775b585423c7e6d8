"""Backoff, client-side read retries and waiting for a checkpoint."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cqrskit import ConsistencyTimeout, OperationalError, PositionBeyondLog
from cqrskit.backends.memory import MemoryEventStore
from cqrskit.backends.sqlite import SqliteDatabase
from cqrskit.checkpoints import ensure_table, write_position
from cqrskit.consistency import backoff_delays, retry_read, wait_for_position
from tests.integration._projection_child import Incremented, counters_codec


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    delays = list(backoff_delays(0.05, 0.3, attempts=6, jitter=False))
    assert delays == pytest.approx([0.05, 0.1, 0.2, 0.3, 0.3])


def test_backoff_without_attempts_goes_on_and_never_overflows() -> None:
    delays = backoff_delays(1.0, 5.0, jitter=False)
    assert [next(delays) for _ in range(200)][-1] == 5.0


def test_full_jitter_draws_each_delay_between_zero_and_its_cap() -> None:
    caps = list(backoff_delays(0.1, 1.0, attempts=50, jitter=False))
    jittered = list(backoff_delays(0.1, 1.0, attempts=50, rng=random.Random(7)))
    assert len(jittered) == len(caps) == 49
    assert all(0.0 <= d <= c for d, c in zip(jittered, caps, strict=True))
    assert len(set(jittered)) == len(jittered)  # spread, not one value


def test_backoff_rejects_negative_delays() -> None:
    with pytest.raises(ValueError, match="negative"):
        next(backoff_delays(-1.0))


async def test_retry_read_retries_until_the_read_succeeds() -> None:
    calls = 0

    async def read() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise KeyError("user 1")  # not projected yet
        return "user 1"

    sleeps = Sleeps()
    assert await retry_read(read, base_delay=0.1, jitter=False, sleep=sleeps) == "user 1"
    assert calls == 3
    assert sleeps.delays == pytest.approx([0.1, 0.2])


async def test_retry_read_gives_up_after_the_attempts_with_the_last_error() -> None:
    calls = 0

    async def read() -> str:
        nonlocal calls
        calls += 1
        raise OperationalError(f"busy {calls}")

    sleeps = Sleeps()
    with pytest.raises(OperationalError, match="busy 4"):
        await retry_read(read, attempts=4, base_delay=0.01, sleep=sleeps, rng=random.Random(1))
    assert calls == 4
    assert len(sleeps.delays) == 3
    assert all(0 <= d <= 0.04 for d in sleeps.delays)


async def test_retry_read_does_not_retry_other_errors() -> None:
    calls = 0

    async def read() -> str:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not the consistency window")

    with pytest.raises(ValueError, match="a bug"):
        await retry_read(read, sleep=Sleeps())
    assert calls == 1


async def test_retry_read_retries_results_that_retry_if_rejects() -> None:
    answers: list[str | None] = [None, None, "found"]

    async def read() -> str | None:
        return answers.pop(0)

    sleeps = Sleeps()
    result = await retry_read(read, retry_if=lambda r: r is None, sleep=sleeps, jitter=False)
    assert result == "found"
    assert len(sleeps.delays) == 2

    async def never() -> str | None:
        return None

    assert await retry_read(never, attempts=3, retry_if=lambda r: r is None, sleep=sleeps) is None


async def test_retry_read_needs_one_attempt_at_least() -> None:
    async def read() -> int:
        return 1

    with pytest.raises(ValueError, match="at least 1"):
        await retry_read(read, attempts=0)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "read.db", synchronous="OFF")
    yield database
    await database.close()


async def test_wait_for_position_polls_the_checkpoint_table(db: SqliteDatabase) -> None:
    store = MemoryEventStore(counters_codec())
    await db.write(ensure_table)
    await db.write(lambda tx: write_position(tx, "p", 7, "running", 0.0, 0.0))
    assert await wait_for_position(store, db, "p", 7, timeout=1) == 7
    assert await wait_for_position(store, db, "p", 3, timeout=1) == 7
    started = time.monotonic()
    with pytest.raises(ConsistencyTimeout) as caught:
        await wait_for_position(store, db, "p", 8, timeout=0.1)
    assert time.monotonic() - started < 0.5
    assert (caught.value.projection, caught.value.wanted, caught.value.reached) == ("p", 8, 7)


async def test_wait_for_position_before_any_runner_created_the_table(db: SqliteDatabase) -> None:
    store = MemoryEventStore(counters_codec())
    with pytest.raises(ConsistencyTimeout):
        await wait_for_position(store, db, "p", 1, timeout=0.05)
    assert await wait_for_position(store, db, "p", 0, timeout=0.05) == 0


async def test_a_position_beyond_the_log_is_told_apart_from_a_late_read_model(
    db: SqliteDatabase,
) -> None:
    store = MemoryEventStore(counters_codec())
    await append_three(store)
    await db.write(ensure_table)
    await db.write(lambda tx: write_position(tx, "p", 1, "running", 0.0, 0.0))
    with pytest.raises(ConsistencyTimeout) as late:
        await wait_for_position(store, db, "p", 3, timeout=0.05)
    assert type(late.value) is ConsistencyTimeout  # the log has it: the read model is late
    with pytest.raises(PositionBeyondLog) as beyond:
        await wait_for_position(store, db, "p", 4, timeout=0.05)
    assert (beyond.value.wanted, beyond.value.reached, beyond.value.head) == (4, 1, 3)
    assert "beyond the log, which ends at 3" in str(beyond.value)


async def append_three(store: MemoryEventStore) -> None:
    await store.append("c-1", [Incremented("a", 1), Incremented("b", 1), Incremented("a", 2)])
