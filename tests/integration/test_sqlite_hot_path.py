"""The SQLite store's one-client command path: groups of one (no SAVEPOINT), the version
bump read back with RETURNING, and short stream reads on the caller's thread."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

from cqrskit import NO_STREAM, ConcurrencyError, StoreClosed
from cqrskit.backends.sqlite import SqliteEventStore, _inline
from cqrskit.eventstore import StreamAppend
from cqrskit.messages import new_id
from tests.contracts.eventstore import Deposited, contract_codec


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_a_failed_group_of_one_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = await SqliteEventStore.open(path, contract_codec())
    try:
        await store.append("a", [Deposited(1), Deposited(2)], NO_STREAM)
        with pytest.raises(ConcurrencyError):
            await store.append("a", [Deposited(3)], NO_STREAM)  # alone in its group
        with pytest.raises(ConcurrencyError):
            await store.append("b", [Deposited(4)], 5)  # a new stream: its bump is undone too
        result = await store.append("a", [Deposited(5)], 2)
        assert (result.position, result.version) == (3, 3)
        assert await store.stream_version("a") == 3
        assert await store.stream_version("b") == 0
        assert store.stats.failed == 2
        assert [r.position for r in await store.read_stream("a")] == [1, 2, 3]
    finally:
        await store.close()
    # The conflicting requests were rolled back: nothing of "b".
    assert _rows(path, "SELECT stream_id, max(stream_version) FROM events GROUP BY 1") == [("a", 3)]
    assert _rows(path, "SELECT count(*) FROM events") == [(3,)]


async def test_concurrent_groups_still_isolate_each_request(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", contract_codec())
    try:
        await store.append("s", [Deposited(0)], NO_STREAM)
        outcomes = await asyncio.gather(
            *(store.append("s", [Deposited(i)], 1) for i in range(20)),
            *(store.append(f"n{i}", [Deposited(i)], NO_STREAM) for i in range(20)),
            return_exceptions=True,
        )
        conflicts = [o for o in outcomes[:20] if isinstance(o, ConcurrencyError)]
        assert len(conflicts) == 19  # exactly one append expecting version 1 wins
        assert not any(isinstance(o, BaseException) for o in outcomes[20:])
        assert await store.stream_version("s") == 2
        positions = [r.position for r in await store.read_all()]
        assert positions == list(range(1, 23))  # no gap where conflicting requests failed
    finally:
        await store.close()


async def test_short_stream_reads_stay_on_the_loop_and_long_or_blocked_ones_do_not(
    tmp_path: Path,
) -> None:
    """A command's aggregate load reads a short stream: on the caller's thread (the hop to
    a reader thread cost 25 times the read). A stream longer than the inline limit, or a
    read that would wait for a lock, goes to a reader thread."""
    store = await SqliteEventStore.open(tmp_path / "events.db", contract_codec(), readers=2)
    seen: list[str] = []
    original = store._read_stream_sync

    def spy(stream_id: str, from_version: int) -> object:
        seen.append(threading.current_thread().name)
        return original(stream_id, from_version)

    store._read_stream_sync = spy  # type: ignore[method-assign,assignment]
    try:
        await store.append("s", [Deposited(1)], NO_STREAM)
        reads = await asyncio.gather(*(store.read_stream("s") for _ in range(10)))
        assert all([r.payload for r in read] == [b'{"amount":1}'] for read in reads)
        assert seen == []  # every one inline
        await store.append("long", [Deposited(i) for i in range(200)], NO_STREAM)
        long = await store.read_stream("long", 10)
        assert [r.stream_version for r in long] == list(range(11, 201))
        assert len(seen) == 1
        assert seen[0].startswith("cqrskit-r")
        # A read that would wait (SQLITE_BUSY: a lock held elsewhere, a WAL being reset):
        # the inline connection never waits, the read goes to a reader thread instead.

        class Busy:
            def execute(self, *args: object) -> object:
                raise sqlite3.OperationalError("database is locked")

        store._short_reads._conn = Busy()  # type: ignore[assignment]
        assert [r.payload for r in await store.read_stream("s")] == [b'{"amount":1}']
        assert len(seen) == 2
        store._short_reads._conn = None
    finally:
        await store.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("cqrskit-r-")]
    with pytest.raises(StoreClosed):
        await store.read_stream("s")
    with pytest.raises(StoreClosed):
        await store.stream_version("s")


async def test_a_stream_not_touched_lately_is_read_on_a_reader_thread_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only streams this store appended to or read lately are read on the caller's
    thread: another one's pages may have to come from the disk, which the event loop
    must not wait for. Its first read goes to a reader thread and makes it recent; the
    least recent is forgotten first."""
    monkeypatch.setattr(_inline, "RECENT", 3)
    path = tmp_path / "events.db"
    elsewhere = await SqliteEventStore.open(path, contract_codec())  # another process's
    store = await SqliteEventStore.open(path, contract_codec(), readers=2)
    seen: list[str] = []
    original = store._read_stream_sync

    def spy(stream_id: str, from_version: int) -> object:
        seen.append(stream_id)
        return original(stream_id, from_version)

    store._read_stream_sync = spy  # type: ignore[method-assign,assignment]
    try:
        await elsewhere.append("cold", [Deposited(1)], NO_STREAM)
        for _ in range(3):
            assert [r.payload for r in await store.read_stream("cold")] == [b'{"amount":1}']
        assert seen == ["cold"]  # the first read only
        await store.append("mine", [Deposited(2)], NO_STREAM)
        await store.append_streams([StreamAppend("a", [Deposited(3)])])
        assert len(await store.read_stream("mine")) == 1
        assert seen == ["cold"]  # appended here: read inline at once
        await store.append("b", [Deposited(4)], NO_STREAM)  # "cold" is now the 4th most recent
        assert len(await store.read_stream("cold")) == 1
        assert seen == ["cold", "cold"]
    finally:
        await store.close()
        await elsewhere.close()


async def test_closing_without_any_read_stops_cleanly(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", contract_codec())
    await store.append("s", [Deposited(1)], NO_STREAM)
    await asyncio.wait_for(store.close(), 10)  # point readers never started: none to join
    with pytest.raises(StoreClosed):
        await store.read_stream("s")


def test_new_id_is_a_time_ordered_uuid7_text() -> None:
    before = time.time()
    made = [new_id() for _ in range(2000)]
    after = time.time()
    assert len(set(made)) == 2000
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        ms = parsed.int >> 80
        assert int(before * 1000) <= ms <= int(after * 1000) + 1
    # Later ids sort later, except within the same ~0.24 us tick (random there).
    time.sleep(0.002)
    assert new_id() > max(made)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    """The random bits come from a generator in memory: a forked child that kept the
    parent's state would make the parent's next ids (same millisecond, same bits)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids' random parts, then leave at once
        os.write(write_end, ",".join(new_id()[-12:] for _ in range(20)).encode())
        os._exit(0)
    os.close(write_end)
    parent = {new_id()[-12:] for _ in range(20)}
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child = set(pipe.read().split(","))
    assert len(child) == 20
    assert not parent & child
