"""The visibility horizon of one database ignores appends in flight in another database."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from cqrskit import Codec, Event
from cqrskit.backends.postgres import PostgresEventStore
from cqrskit.backends.postgres.migrate import apply

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Noted(Event):
    n: int


async def test_an_append_in_flight_elsewhere_does_not_hide_ours(
    pg_url_pair: tuple[str, str],
) -> None:
    ours, theirs = pg_url_pair
    apply(theirs)
    store = await PostgresEventStore.open(ours, Codec([Noted]), pool_max=2)
    try:
        before = await store.append("s", [Noted(1)])
        # Another database's appender: it has taken its append mark and its id (older than
        # our next append's) and stays in flight.
        with psycopg.connect(theirs) as other:
            other.execute("SELECT cqrskit_allocate_positions(1)")
            after = await store.append("s", [Noted(2)])
            seen = [r.position for r in await store.read_all()]
            head = await store.head_position()
            other.rollback()
        assert seen == [before.position, after.position]
        assert head == after.position
    finally:
        await store.close()


async def test_an_append_in_flight_here_still_holds_later_ones_back(pg_url: str) -> None:
    store = await PostgresEventStore.open(pg_url, Codec([Noted]), pool_max=2)
    try:
        first = await store.append("s", [Noted(1)])
        with psycopg.connect(pg_url) as other:
            # An appender of THIS log, in flight with the smaller position: a reader must not
            # pass it (it would skip its row forever), so the later append waits for it.
            other.execute("SELECT cqrskit_allocate_positions(1)")
            await store.append("s", [Noted(2)])
            assert [r.position for r in await store.read_all()] == [first.position]
            other.rollback()
        assert len(await store.read_all()) == 2
    finally:
        await store.close()
