"""The snapshot contract of the event store (``save_snapshot``/``load_snapshot``), as one
abstract test suite every backend passes.

Subclass :class:`SnapshotContract` in a ``test_`` module, with a ``Test`` class name, and
implement :meth:`SnapshotContract.make_store` (a store on an empty backend), as for
:class:`tests.contracts.eventstore.EventStoreContract`. The suite closes every store it made.

The behaviour pinned: a snapshot is the state of one stream at one version, saved as
bytes; the newest version wins, whatever the order the saves arrive in (two savers racing
never leave an older snapshot over a newer one); saving the same version again replaces it.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

import pytest

from cqrskit import Codec, EventStore, Snapshot
from tests.contracts.eventstore import contract_codec

ODD_BYTES = bytes(range(256)) * 40 + b"\x00"
"""Every byte value, NUL at the end, 10 KiB: a blob, not text."""


class SnapshotContract(ABC):
    """Snapshot behaviour every :class:`~cqrskit.eventstore.EventStore` must have."""

    @abstractmethod
    async def make_store(self, codec: Codec) -> EventStore:
        """A new store on an empty backend (called once per test)."""

    async def dispose_store(self, store: EventStore) -> None:
        await store.close()

    @pytest.fixture
    def _where(self) -> None:
        """Override it (same name, autouse) to prepare what ``make_store`` needs: the
        suite's disposal depends on it, so it runs while the backend is still there."""
        return None  # a backend in memory needs nothing

    @pytest.fixture(autouse=True)
    async def _dispose_all(self, _where: None) -> AsyncIterator[None]:
        self._made: list[EventStore] = []
        yield
        for made in self._made:
            await self.dispose_store(made)

    @pytest.fixture
    async def store(self, _dispose_all: None) -> EventStore:
        made = await self.make_store(contract_codec())
        self._made.append(made)
        return made

    async def test_no_snapshot_before_one_is_saved(self, store: EventStore) -> None:
        assert await store.load_snapshot("acc-1") is None
        await store.save_snapshot(Snapshot("acc-1", 1, b"{}"))
        assert await store.load_snapshot("acc-2") is None

    async def test_save_and_load_round_trip_the_bytes(self, store: EventStore) -> None:
        await store.save_snapshot(Snapshot("acc-1", 7, ODD_BYTES))
        await store.save_snapshot(Snapshot("acc-2", 1, b""))
        loaded = await store.load_snapshot("acc-1")
        assert loaded == Snapshot("acc-1", 7, ODD_BYTES)
        assert loaded is not None
        assert type(loaded.state) is bytes
        assert type(loaded.version) is int
        assert await store.load_snapshot("acc-2") == Snapshot("acc-2", 1, b"")

    async def test_streams_have_their_own_snapshots(self, store: EventStore) -> None:
        await store.save_snapshot(Snapshot("a", 5, b"a5"))
        await store.save_snapshot(Snapshot("b", 9, b"b9"))
        await store.save_snapshot(Snapshot("a", 6, b"a6"))
        await store.save_snapshot(Snapshot("c", 1, b"c1"))
        assert await store.load_snapshot("a") == Snapshot("a", 6, b"a6")
        assert await store.load_snapshot("b") == Snapshot("b", 9, b"b9")
        assert await store.load_snapshot("c") == Snapshot("c", 1, b"c1")

    async def test_a_newer_version_replaces_the_snapshot(self, store: EventStore) -> None:
        await store.save_snapshot(Snapshot("a", 5, b"five"))
        await store.save_snapshot(Snapshot("a", 10, b"ten"))
        assert await store.load_snapshot("a") == Snapshot("a", 10, b"ten")

    async def test_an_older_version_never_replaces_a_newer_one(self, store: EventStore) -> None:
        await store.save_snapshot(Snapshot("a", 10, b"ten"))
        await store.save_snapshot(Snapshot("a", 5, b"five"))
        await store.save_snapshot(Snapshot("a", 9, b"nine"))
        assert await store.load_snapshot("a") == Snapshot("a", 10, b"ten")

    async def test_the_same_version_saved_again_replaces_it(self, store: EventStore) -> None:
        await store.save_snapshot(Snapshot("a", 10, b"first"))
        await store.save_snapshot(Snapshot("a", 10, b"again"))
        assert await store.load_snapshot("a") == Snapshot("a", 10, b"again")

    async def test_concurrent_saves_leave_the_newest(self, store: EventStore) -> None:
        # Started newest first: a store that lets the last save win keeps an older one.
        versions = sorted(range(1, 21), key=lambda v: (v * 7) % 20)
        assert versions[0] == 20
        await asyncio.gather(
            *(store.save_snapshot(Snapshot("a", v, f"v{v}".encode())) for v in versions)
        )
        assert await store.load_snapshot("a") == Snapshot("a", 20, b"v20")
