"""PostgresDatabase as the read side: projection runner, exactly-once under two runners,
blue/green rebuild with a schema swap while the live runner applies, separate databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cqrskit import RecordedEvent, SqlTx, handles
from cqrskit.backends.postgres import PostgresDatabase, PostgresEventStore
from cqrskit.backends.postgres.connection import PgTx
from cqrskit.checkpoints import read_position
from cqrskit.rebuild import rebuild
from cqrskit.runner import ProjectionRunner
from tests.integration._projection_child import (
    Counters,
    Incremented,
    Reset,
    append_all,
    counters_codec,
    random_events,
    read_counts,
    replay,
)

pytestmark = pytest.mark.postgres


class PgCounters(Counters):
    """The counters projection with SQL PostgreSQL accepts too: in ``ON CONFLICT DO
    UPDATE`` a bare column is ambiguous there (the row or ``excluded``), so qualify it."""

    @handles(Incremented)
    def on_incremented(self, tx: SqlTx, event: Incremented, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO counters (id, value, events) VALUES (?, ?, 1) ON CONFLICT (id)"
            " DO UPDATE SET value = counters.value + excluded.value,"
            " events = counters.events + 1",
            (event.counter, event.amount),
        )

    @handles(Reset)
    def on_reset(self, tx: SqlTx, event: Reset, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO counters (id, value, events) VALUES (?, 0, 1) ON CONFLICT (id)"
            " DO UPDATE SET value = 0, events = counters.events + 1",
            (event.counter,),
        )


class PipelinedCounters(PgCounters):
    """Its batches are deferred: one round trip, the checkpoint compared last."""

    pipelined = True


@pytest.fixture
async def store(pg_url_pair: tuple[str, str]) -> AsyncIterator[PostgresEventStore]:
    opened = await PostgresEventStore.open(pg_url_pair[0], counters_codec())
    yield opened
    await opened.close()


@pytest.fixture
async def db(pg_url_pair: tuple[str, str]) -> AsyncIterator[PostgresDatabase]:
    database = PostgresDatabase(pg_url_pair[1])
    yield database
    await database.close()


async def logged_counts(store: PostgresEventStore) -> dict[str, tuple[int, int]]:
    return replay(store.codec.decode(e) for e in await store.read_all(0, limit=1_000_000))


async def test_read_write_and_snapshot_isolation(db: PostgresDatabase) -> None:
    await db.write(lambda tx: tx.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"))
    assert await db.write(lambda tx: tx.execute("INSERT INTO t VALUES (?, ?), ('b', 2)", ("a", 1)))
    with pytest.raises(ZeroDivisionError):
        await db.write(lambda tx: (tx.execute("INSERT INTO t VALUES ('c', 3)"), 1 / 0))
    assert await db.read(lambda tx: tx.fetchall("SELECT k, v FROM t ORDER BY k")) == [
        ("a", 1),
        ("b", 2),
    ]

    def read_twice(tx: PgTx) -> tuple[object, object]:
        first = tx.fetchone("SELECT sum(v) FROM t")
        db.write_sync(lambda w: w.execute("INSERT INTO t VALUES ('d', 10)"))
        return first, tx.fetchone("SELECT sum(v) FROM t")

    first, second = await db.read(read_twice)
    assert first == second == (3,)  # one snapshot for the whole read


async def test_runner_projects_the_log_into_another_database(
    store: PostgresEventStore, db: PostgresDatabase
) -> None:
    head = await append_all(store, random_events(3_000, seed=3))
    async with ProjectionRunner(store, db, [PgCounters()], batch_size=200) as runner:
        await runner.wait_for("counters", head, timeout=20)
        extra = await store.append("late", [Incremented("late", 5)])
        await runner.wait_for("counters", extra.position, timeout=5)
    assert await read_counts(db) == await logged_counts(store)


@pytest.mark.parametrize("counters", [PgCounters, PipelinedCounters])
async def test_two_runners_on_one_projection_never_apply_a_batch_twice(
    store: PostgresEventStore,
    db: PostgresDatabase,
    pg_url_pair: tuple[str, str],
    counters: type[PgCounters],
) -> None:
    """No lease: both runners race for every batch; the checkpoint's compare-and-set
    lets exactly one of them commit each stretch of the log: row-locked before the
    handlers, or last in a deferred batch (checkpoints.advance_position), where the loser's
    whole batch rolls back and it reads the moved checkpoint instead of blaming a handler."""
    other_db = PostgresDatabase(pg_url_pair[1])
    other_store = await PostgresEventStore.open(pg_url_pair[0], counters_codec())
    try:
        first = ProjectionRunner(store, db, [counters()], batch_size=20)
        second = ProjectionRunner(other_store, other_db, [counters()], batch_size=7)
        async with first, second:
            head = await append_all(store, random_events(3_000, seed=4), chunk=3)
            await first.wait_for("counters", head, timeout=30)
            await second.wait_for("counters", head, timeout=30)
            assert (first.error("counters"), second.error("counters")) == (None, None)
    finally:
        await other_store.close()
        await other_db.close()
    assert await read_counts(db) == await logged_counts(store)


async def test_rebuild_swaps_a_schema_in_while_the_live_runner_applies(
    store: PostgresEventStore, db: PostgresDatabase, pg_url_pair: tuple[str, str]
) -> None:
    head = await append_all(store, [*random_events(3_000, seed=5), Incremented("frozen", 5)])
    runner = ProjectionRunner(store, db, [PgCounters()], batch_size=50)
    await runner.start()
    await runner.wait_for("counters", head, timeout=20)
    await db.write(lambda tx: tx.execute("UPDATE counters SET value = -1 WHERE id = 'frozen'"))
    appending = True
    last = await store.head_position()

    async def append_meanwhile() -> None:
        nonlocal last
        i = 0
        while appending:  # live traffic, not a flood the rebuild could never catch up with
            result = await store.append(f"live-{i % 3}", random_events(5, seed=100 + i))
            last = result.position
            i += 1
            await asyncio.sleep(0.005)

    writer = asyncio.create_task(append_meanwhile())
    other = PostgresDatabase(pg_url_pair[1])  # a `rebuild` CLI process would use its own
    try:
        result = await rebuild(store, other, PgCounters(), batch_size=100)
        appending = False
        await writer
        # `last` rather than head_position(): another transaction on the server (the
        # runner's, in the read database) may hold the visible head back for a moment.
        await runner.wait_for("counters", last, timeout=20)
    finally:
        appending = False
        await asyncio.gather(writer, return_exceptions=True)
        await runner.stop()
        await other.close()
    assert result.position <= last
    counts = await read_counts(db)
    assert counts["frozen"] == (5, 1)  # repaired: the rebuilt table was swapped in
    assert counts == await logged_counts(store)
    assert await db.read(lambda tx: read_position(tx, "counters")) == last
    schemas = await db.read(
        lambda tx: tx.fetchall(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'cqrskit_rebuild_%'"
        )
    )
    assert schemas == []  # the fresh schema is gone after the swap
    indexes = await db.read(
        lambda tx: tx.fetchall(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'counters' ORDER BY 1"
        )
    )
    assert indexes == [("counters_by_value",), ("counters_pkey",)]


async def test_schema_writers_take_turns(pg_url: str) -> None:
    """Eight processes' worth of read databases create the same tables at once (a fleet
    starting on a fresh database). Unserialised, ``CREATE TABLE IF NOT EXISTS`` races in
    the catalog and the losers fail with a unique violation; ``write_schema`` makes them
    take turns, so every one succeeds."""
    databases = [PostgresDatabase(pg_url) for _ in range(8)]

    def create(tx: PgTx) -> None:
        for i in range(5):
            tx.execute(f"CREATE TABLE IF NOT EXISTS raced_{i} (id TEXT PRIMARY KEY, n INTEGER)")
            tx.execute(f"CREATE INDEX IF NOT EXISTS raced_{i}_n ON raced_{i} (n)")

    try:
        for _ in range(3):
            await asyncio.gather(*(db.write_schema(create) for db in databases))
        tables = await databases[0].read(
            lambda tx: tx.fetchall("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'raced_%'")
        )
        assert tables == [(5,)]
    finally:
        for db in databases:
            await db.close()
