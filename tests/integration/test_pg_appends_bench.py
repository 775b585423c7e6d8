"""The PostgreSQL appends benchmark compares what it says it compares: its table-lock
variant really locks the table for each append, cqrskit's store does not."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from benchmarks.pg_appends import Happened, TableLockStore
from cqrskit import Codec
from cqrskit.backends.postgres import PostgresEventStore

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize(("cls", "locks"), [(TableLockStore, True), (PostgresEventStore, False)])
async def test_only_the_table_lock_variant_locks_the_table(
    pg_url: str, cls: type[PostgresEventStore], locks: bool
) -> None:
    store = await cls.open(pg_url, Codec([Happened]))  # migrations first: the table exists
    try:
        with psycopg.connect(pg_url) as holder:
            holder.execute("LOCK TABLE cqrskit_events IN ROW SHARE MODE")
            append = asyncio.ensure_future(store.append("s-1", [Happened(1)]))
            done, _ = await asyncio.wait({append}, timeout=1.0)
            assert (not done) == locks
            holder.rollback()  # the table-lock append goes through now
        result = await asyncio.wait_for(append, 30)
        assert result.version == 1
    finally:
        await store.close()
