"""The in-memory event store passes the event store contract, with and without inline
projections (their write model is an in-memory SQLite database), and the inline
projection contract."""

from __future__ import annotations

from collections.abc import Sequence

from cqrskit import (
    Codec,
    EventStore,
    Projection,
)
from cqrskit.backends.memory import MemoryEventStore
from tests.contracts.eventstore import EventStoreContract, contract_codec
from tests.contracts.inline import Deposits, InlineProjectionContract


class TestMemoryEventStore(EventStoreContract):
    async def make_store(self, codec: Codec) -> EventStore:
        return MemoryEventStore(codec)


async def test_query_reads_the_write_model_database_even_without_inline_projections() -> None:
    store = MemoryEventStore(contract_codec())
    try:
        assert await store.query(lambda tx: tx.fetchone("SELECT 1")) == (1,)
    finally:
        await store.close()


class TestMemoryEventStoreWithInlineProjections(EventStoreContract):
    """The whole contract again with inline handlers: every append then goes through the
    write model's thread and transaction."""

    async def make_store(self, codec: Codec) -> EventStore:
        return MemoryEventStore(codec, inline=[Deposits()])


class TestMemoryInlineProjections(InlineProjectionContract):
    async def make_store(self, codec: Codec, inline: Sequence[Projection]) -> EventStore:
        return MemoryEventStore(codec, inline=inline)
