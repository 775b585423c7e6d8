"""Reads answered from the events a PostgreSQL store committed last (``._tail``): the
same envelopes as the database's, and the database whenever memory cannot be sure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest

from cqrskit import NO_STREAM, EventStore, StreamAppend
from cqrskit.backends.postgres import PostgresEventStore
from tests.contracts.eventstore import Deposited, Renamed, contract_codec
from tests.contracts.personal import EMAIL, Joined, personal_codec

pytestmark = pytest.mark.postgres

Open = Callable[[], Awaitable[PostgresEventStore]]


@pytest.fixture
async def open_store(pg_url: str) -> AsyncIterator[Open]:
    """Opens stores on one database, as separate processes would; closes them after."""
    opened: list[PostgresEventStore] = []

    async def open_one() -> PostgresEventStore:
        store = await PostgresEventStore.open(pg_url, contract_codec())
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


def served_from_memory(store: PostgresEventStore, after: int) -> list[int] | None:
    """The positions ``read_all(after)`` answers without the database, if it does."""
    kept = store._tail.read(after, 1000, store._known)
    return None if kept is None else [r.position for r in kept]


async def test_what_memory_answers_is_what_the_database_holds(open_store: Open) -> None:
    here = await open_store()
    await here.append("acc-1", [Deposited(1)])
    await here.append("acc-1", [Deposited(2), Renamed("two")], 1, {"correlation_id": "c-1"})
    await here.append_streams(
        [StreamAppend("acc-2", [Deposited(3)], NO_STREAM), StreamAppend("acc-3", [Deposited(4)])],
        {"user": "u-9"},
    )
    assert served_from_memory(here, 0) == [1, 2, 3, 4, 5]
    assert served_from_memory(here, 3) == [4, 5]
    fresh = await open_store()  # nothing kept: the database answers
    assert served_from_memory(fresh, 0) is None
    from_db = await fresh.read_all(0)
    assert [r.position for r in from_db] == [1, 2, 3, 4, 5]
    assert await here.read_all(0) == from_db  # every field: ids, versions, times, bytes
    assert await here.read_all(3, limit=1) == from_db[3:4]
    assert [here.codec.decode(r) for r in await here.read_all(0)] == [
        Deposited(1), Deposited(2), Renamed("two"), Deposited(3), Deposited(4)
    ]  # fmt: skip


async def test_another_stores_append_in_between_is_read_from_the_database(
    open_store: Open,
) -> None:
    here, elsewhere = await open_store(), await open_store()
    await here.append("acc-1", [Deposited(1)])
    await elsewhere.append("acc-2", [Deposited(2)])
    await here.append("acc-1", [Deposited(3)])
    assert served_from_memory(here, 0) is None  # position 2 is not here's
    assert [r.position for r in await here.read_all(0)] == [1, 2, 3]
    assert [r.position for r in await here.read_all(1)] == [2, 3]
    assert served_from_memory(here, 2) == [3]
    assert [r.position for r in await here.read_all(2)] == [3]


async def test_a_commit_heard_of_elsewhere_sends_the_read_to_the_database(
    open_store: Open,
) -> None:
    here, elsewhere = await open_store(), await open_store()
    await here.append("acc-1", [Deposited(1)])
    assert await here.wait_for_new_events(1, 0.01) is False  # listens from now on
    await elsewhere.append("acc-2", [Deposited(2)])
    assert await here.wait_for_new_events(1, 5.0)
    for _ in range(500):  # the wait may have seen the row before the notification came
        if here._known >= 2:
            break
        await asyncio.sleep(0.01)
    assert here._known == 2
    assert served_from_memory(here, 0) is None  # memory ends at 1, the log at 2
    assert [r.position for r in await here.read_all(0)] == [1, 2]


async def test_a_hole_left_by_a_rollback_ends_what_memory_answers(
    open_store: Open, pg_url: str
) -> None:
    here = await open_store()
    await here.append("acc-1", [Deposited(1)])
    with psycopg.connect(pg_url) as conn:  # takes position 2, then rolls back
        conn.execute("SELECT cqrskit_allocate_positions(1)")
        conn.rollback()
    await here.append("acc-1", [Deposited(3)])
    assert served_from_memory(here, 0) is None
    assert [r.position for r in await here.read_all(0)] == [1, 3]
    assert served_from_memory(here, 2) == [3]


async def test_sealed_events_are_always_opened_from_the_database(pg_url: str) -> None:
    stores: list[EventStore] = []
    try:
        here = await PostgresEventStore.open(pg_url, personal_codec())
        elsewhere = await PostgresEventStore.open(pg_url, personal_codec())
        stores += [here, elsewhere]
        await here.append("member-1", [Joined("m-1", EMAIL, "ada")])
        assert served_from_memory(here, 0) is None  # sealed: not kept
        assert here.codec.decode((await here.read_all(0))[0]) == Joined("m-1", EMAIL, "ada")
    finally:
        for store in stores:
            await store.close()
