"""Pipelined projection batches on PostgreSQL: same read model, and a failing statement,
whose error the server reports only at the batch's sync, still stops at its own event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cqrskit import ProjectionError, RecordedEvent, SqlTx, handles
from cqrskit.backends.postgres import PostgresDatabase, PostgresEventStore
from cqrskit.checkpoints import read_position
from cqrskit.rebuild import rebuild
from cqrskit.runner import ProjectionRunner, RetryPolicy
from tests.integration._projection_child import (
    Incremented,
    append_all,
    counters_codec,
    random_events,
    read_counts,
    replay,
)
from tests.integration.test_pg_readside import PipelinedCounters

pytestmark = pytest.mark.postgres

FAST = RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.01)


class PoisonedCounters(PipelinedCounters):
    """Fails in the SERVER (a CHECK constraint) on the increment of 13: in pipeline mode the
    error reaches the client only at the next sync, after later statements were sent."""

    name = "poisoned"

    def create_schema(self, tx: SqlTx) -> None:
        super().create_schema(tx)
        tx.execute("CREATE TABLE IF NOT EXISTS amounts (amount BIGINT CHECK (amount <> 13))")

    @handles(Incremented)
    def on_incremented(self, tx: SqlTx, event: Incremented, record: RecordedEvent) -> None:
        super().on_incremented(tx, event, record)
        tx.execute("INSERT INTO amounts (amount) VALUES (?)", (event.amount,))


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


async def test_pipelined_catch_up_builds_the_same_read_model(
    store: PostgresEventStore, db: PostgresDatabase
) -> None:
    events = random_events(3000, seed=11)
    head = await append_all(store, events)
    async with ProjectionRunner(store, db, [PipelinedCounters()], batch_size=500) as runner:
        await runner.wait_for("counters", head, timeout=30)
    assert await read_counts(db) == replay(events)


async def poisoned_log(store: PostgresEventStore) -> None:
    amounts = [1, 2, 3, 4, 5, 13, 6, 7]  # 13 is event 6 of one batch
    await store.append("s", [Incremented("c", a) for a in amounts])


async def test_a_failing_statement_in_a_pipelined_batch_stops_at_its_own_event(
    store: PostgresEventStore, db: PostgresDatabase
) -> None:
    await poisoned_log(store)
    async with ProjectionRunner(
        store, db, [PoisonedCounters()], batch_size=100, retry=FAST
    ) as runner:
        for _ in range(1000):
            if runner.error("poisoned") is not None:
                break
            await asyncio.sleep(0.01)
        error = runner.error("poisoned")
    assert error is not None
    assert (error.position, error.event_type) == (6, "Incremented")
    assert "amounts" in error.cause
    # Everything before it is applied, nothing after it.
    assert await read_counts(db) == {"c": (15, 5)}
    assert await db.read(lambda tx: read_position(tx, "poisoned")) == 5


async def test_a_pipelined_rebuild_names_the_failing_event(
    store: PostgresEventStore, db: PostgresDatabase
) -> None:
    await poisoned_log(store)
    with pytest.raises(ProjectionError) as caught:
        await rebuild(store, db, PoisonedCounters(), batch_size=100)
    assert (caught.value.position, caught.value.event_type) == (6, "Incremented")
