"""Gap-free reading under concurrent writers whose commits land out of position order.

Writers append through the store; an inline handler sleeps a random few milliseconds
inside each append's transaction, so transactions commit in another order than they took
their positions. A naive reader (``position > checkpoint ORDER BY position``) loses events
for good; ``read_all`` loses none and reorders none.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import psycopg
import pytest

from cqrskit import Codec, Event, Projection, RecordedEvent, SqlTx, handles
from cqrskit.backends.postgres import PostgresEventStore

pytestmark = pytest.mark.postgres

WRITERS = 24
APPENDS_PER_WRITER = 80  # x 1..3 events: about 3,800 events


@dataclass(frozen=True)
class Ticked(Event):
    writer: int
    n: int


class SlowCommit(Projection):
    """Inline projection that holds the append's transaction open for 0-3 ms per event."""

    name = "slow_commit"

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @handles(Ticked)
    def on_ticked(self, tx: SqlTx, event: Ticked, record: RecordedEvent) -> None:
        with self._lock:
            delay = self._rng.uniform(0, 0.003)
        time.sleep(delay)


class _NaiveReader(threading.Thread):
    """What a reader of a sequence-numbered table does without our visibility rule."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = stop
        self.seen: list[int] = []

    def run(self) -> None:
        checkpoint = 0
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT position FROM cqrskit_events WHERE position > %s ORDER BY position",
                    (checkpoint,),
                ).fetchall()
                if rows:
                    self.seen.extend(r[0] for r in rows)
                    checkpoint = rows[-1][0]
                else:
                    time.sleep(0.0005)


@pytest.mark.parametrize("reader", ["another store", "the writers' store"])
async def test_read_all_never_loses_or_reorders_while_a_naive_reader_does(
    pg_url: str, reader: str
) -> None:
    """The writers' store answers much of it from the events it keeps (``._tail``):
    ranges of its own commits, which land out of position order here."""
    codec = Codec([Ticked])
    writer_store = await PostgresEventStore.open(
        pg_url, codec, inline=[SlowCommit(seed=7)], pool_max=WRITERS
    )
    reader_store = (
        writer_store
        if reader == "the writers' store"
        else await PostgresEventStore.open(pg_url, codec, pool_max=2)
    )
    stop = threading.Event()
    naive = _NaiveReader(pg_url, stop)
    naive.start()
    ours: list[RecordedEvent] = []
    appended: list[int] = []
    writing = True

    async def write(w: int) -> None:
        rng = random.Random(w)
        for n in range(APPENDS_PER_WRITER):
            size = rng.randint(1, 3)
            result = await writer_store.append(f"w-{w}-{n % 5}", [Ticked(w, n)] * size)
            appended.extend(range(result.position - size + 1, result.position + 1))

    async def follow() -> None:
        checkpoint = 0
        while writing or checkpoint < max(appended):
            page = await reader_store.read_all(checkpoint, limit=500)
            if page:
                ours.extend(page)
                checkpoint = page[-1].position
            else:
                await asyncio.sleep(0.001)

    try:
        follower = asyncio.create_task(follow())
        started = time.monotonic()
        await asyncio.gather(*(write(w) for w in range(WRITERS)))
        writing = False
        await asyncio.wait_for(follower, 30)
        stop.set()
        await asyncio.to_thread(naive.join)
        everything = await reader_store.read_all(0, limit=1_000_000)
    finally:
        stop.set()
        await writer_store.close()
        await reader_store.close()

    assert time.monotonic() - started < 20
    all_positions = [r.position for r in everything]
    assert all_positions == sorted(appended)
    assert len(all_positions) > 2 * WRITERS * APPENDS_PER_WRITER  # ~2 events per append
    # Ours: every event exactly once, in log order, each stream in version order.
    assert [r.position for r in ours] == all_positions
    assert all_positions == sorted(set(all_positions))
    versions: dict[str, list[int]] = defaultdict(list)
    for record in ours:
        versions[record.stream_id].append(record.stream_version)
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    # The naive reader, same data, same time: it skipped events that committed late.
    lost = set(all_positions) - set(naive.seen)
    print(f"{len(all_positions)} events; the naive reader lost {len(lost)}")
    assert lost, "the naive reader should have skipped late commits"
    assert naive.seen == sorted(set(naive.seen))
