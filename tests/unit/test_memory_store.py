"""The in-memory event store passes the event store contract."""

from __future__ import annotations

import pytest

from cqrskit import Codec, ConfigurationError, EventStore
from cqrskit.store.memory import MemoryEventStore
from tests.eventstore_contract import EventStoreContract, contract_codec


class TestMemoryEventStore(EventStoreContract):
    async def make_store(self, codec: Codec) -> EventStore:
        return MemoryEventStore(codec)


async def test_memory_store_has_no_write_model_tables() -> None:
    store = MemoryEventStore(contract_codec())
    with pytest.raises(ConfigurationError):
        await store.query(lambda tx: tx.fetchone("SELECT 1"))
