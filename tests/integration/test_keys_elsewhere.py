"""A key destroyed by another process is never used again by this one's reads, on SQLite
and on PostgreSQL, whose stores keep the keys they found or made while no key is destroyed
(``cqrskit._sealing.ReadKeys``: a count kept by triggers, whoever destroys the key)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from cqrskit import FORGOTTEN, EventStore
from cqrskit.backends.postgres import PostgresEventStore, PostgresKeyStore
from cqrskit.backends.sqlite import SqliteEventStore, SqliteKeyStore
from tests.contracts.personal import EMAIL, Joined, Left, Renamed, personal_codec

Open = Callable[[], Awaitable[EventStore]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Open]:
    """Opens stores on one database, as separate processes would; closes them after."""
    opened: list[EventStore] = []

    async def open_one() -> EventStore:
        if request.param == "sqlite":
            store: EventStore = await SqliteEventStore.open(tmp_path / "write.db", personal_codec())
        else:
            url = request.getfixturevalue("pg_url")
            store = await PostgresEventStore.open(url, personal_codec())
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def emails(store: EventStore) -> list[str]:
    return [
        e.email for e in map(store.codec.decode, await store.read_all(0)) if isinstance(e, Joined)
    ]


async def test_a_forget_appended_elsewhere_reaches_every_read_of_this_store(
    open_store: Open,
) -> None:
    here, elsewhere = await open_store(), await open_store()
    await here.append("member-1", [Joined("m-1", EMAIL, "ada")])
    await here.append("member-2", [Joined("m-2", "bob@example.org", "bob")])
    for _ in range(2):  # read twice: the second read may be served by kept keys
        assert await emails(here) == [EMAIL, "bob@example.org"]
        (loaded,) = await here.read_stream("member-1")
        assert here.codec.decode(loaded) == Joined("m-1", EMAIL, "ada")
    await elsewhere.append("member-1", [Left("m-1")])
    assert await emails(here) == [FORGOTTEN, "bob@example.org"]
    loaded, _ = await here.read_stream("member-1")  # the short read on the caller's thread
    assert here.codec.decode(loaded) == Joined("m-1", FORGOTTEN, None)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_key_forgotten_through_the_key_store_or_deleted_by_hand_is_not_used(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store: EventStore
    keys: SqliteKeyStore | PostgresKeyStore
    if backend == "sqlite":
        store = await SqliteEventStore.open(tmp_path / "write.db", personal_codec())
        keys = SqliteKeyStore(tmp_path / "write.db")
    else:
        url = request.getfixturevalue("pg_url")
        store = await PostgresEventStore.open(url, personal_codec())
        keys = PostgresKeyStore(url)
    for i in (1, 2):
        await store.append(f"member-{i}", [Joined(f"m-{i}", EMAIL, None), Renamed(f"m-{i}", "A")])
    for _ in range(2):  # the second read may be served by kept keys
        assert await emails(store) == [EMAIL, EMAIL]
        loaded, _ = await store.read_stream("member-2")
        assert store.codec.decode(loaded) == Joined("m-2", EMAIL, None)
    try:
        assert await keys.forget("m-1")
    finally:
        await keys.close()
    assert await emails(store) == [FORGOTTEN, EMAIL]
    delete = "DELETE FROM cqrskit_keys WHERE subject = 'm-2'"  # by hand, as an operator might
    if backend == "sqlite":
        conn = sqlite3.connect(tmp_path / "write.db")
        with conn:
            conn.execute(delete)
        conn.close()
    else:
        with psycopg.connect(request.getfixturevalue("pg_url"), autocommit=True) as pg:
            pg.execute(delete)
    assert await emails(store) == [FORGOTTEN, FORGOTTEN]
    loaded, _ = await store.read_stream("member-2")
    assert store.codec.decode(loaded) == Joined("m-2", FORGOTTEN, None)
    await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_without_the_count_of_destroyed_keys_every_read_asks_the_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The count's row deleted by hand: no read trusts kept keys any more, so a key
    destroyed afterwards (by hand too: the triggers find no row to count in) is not used."""
    store: EventStore
    if backend == "sqlite":
        store = await SqliteEventStore.open(tmp_path / "write.db", personal_codec())
    else:
        store = await PostgresEventStore.open(request.getfixturevalue("pg_url"), personal_codec())

    def by_hand(*statements: str) -> None:
        if backend == "sqlite":
            conn = sqlite3.connect(tmp_path / "write.db")
            with conn:
                for statement in statements:
                    conn.execute(statement.replace("now()", "1.0"))
            conn.close()
        else:
            with psycopg.connect(request.getfixturevalue("pg_url"), autocommit=True) as pg:
                for statement in statements:
                    pg.execute(statement)

    try:
        for i in (1, 2):
            await store.append(f"member-{i}", [Joined(f"m-{i}", EMAIL, None)])
        assert await emails(store) == [EMAIL, EMAIL]  # keys made here: kept
        by_hand("DELETE FROM cqrskit_keys_destroyed")
        assert await emails(store) == [EMAIL, EMAIL]
        (loaded,) = await store.read_stream("member-1")
        assert store.codec.decode(loaded) == Joined("m-1", EMAIL, None)
        by_hand("UPDATE cqrskit_keys SET key = NULL, forgotten_at = now() WHERE subject = 'm-1'")
        assert await emails(store) == [FORGOTTEN, EMAIL]
        (loaded,) = await store.read_stream("member-1")
        assert store.codec.decode(loaded) == Joined("m-1", FORGOTTEN, None)
    finally:
        await store.close()
