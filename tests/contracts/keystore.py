"""The key store contract, as one abstract test suite every key store backend passes.

How to run it against a backend: subclass :class:`KeyStoreContract` in a module whose
name starts with ``test_``, with a class name starting with ``Test``, and implement
:meth:`KeyStoreContract.make_store`: a new instance on the backend's storage, which every
instance of one test shares (a reopened store sees what an earlier one wrote, where the
backend persists). Put what the backend needs on ``self`` from an autouse fixture::

    class TestSqliteKeyStore(KeyStoreContract):
        @pytest.fixture(autouse=True)
        def _where(self, tmp_path: Path) -> None:
            self.path = tmp_path / "write.db"

        def make_store(self) -> KeyStore:
            return SqliteKeyStore(self.path)

Tests get instances from ``self.open()``; the suite closes every one it made. Backends
that keep their keys on disk subclass :class:`PersistentKeyStoreContract` instead: its
reopen test then runs (never skipped where it does not apply: absent).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cqrskit import StoreClosed
from cqrskit.keystore import KEY_SIZE, KeyStore, SubjectForgotten


class KeyStoreContract(ABC):
    CONCURRENT = 20
    """First calls for one subject made at once."""

    @abstractmethod
    def make_store(self) -> KeyStore:
        """A new instance on the storage shared by every instance made in this test."""

    # -- plumbing ---------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    async def _close_all(self) -> AsyncIterator[None]:
        self._made: list[KeyStore] = []
        yield
        for made in self._made:
            await made.close()

    def open(self) -> KeyStore:
        """A store from ``make_store`` that is closed after the test."""
        made = self.make_store()
        self._made.append(made)
        return made

    # -- keys ---------------------------------------------------------------------------------

    async def test_a_key_is_32_random_bytes_usable_for_aes_256_gcm(self) -> None:
        key = await self.open().get_or_create("user-1")
        assert isinstance(key, bytes)
        assert len(key) == KEY_SIZE == 32
        assert key != bytes(32)
        sealed = AESGCM(key).encrypt(b"\x00" * 12, b"ada@example.com", None)
        assert AESGCM(key).decrypt(b"\x00" * 12, sealed, None) == b"ada@example.com"

    async def test_a_subject_keeps_its_key(self) -> None:
        store = self.open()
        key = await store.get_or_create("user-1")
        assert await store.get_or_create("user-1") == key
        assert await store.get("user-1") == key

    async def test_subjects_have_different_keys(self) -> None:
        store = self.open()
        keys = {await store.get_or_create(f"user-{n}") for n in range(10)}
        assert len(keys) == 10

    async def test_get_of_an_unknown_subject_is_none_and_creates_nothing(self) -> None:
        store = self.open()
        assert await store.get("nobody") is None
        assert await store.get("nobody") is None
        assert await store.get_many(["nobody"]) == {"nobody": None}

    async def test_concurrent_first_calls_make_one_key(self) -> None:
        stores = [self.open() for _ in range(2)]  # two holders, as two processes
        keys = await asyncio.gather(
            *(stores[n % 2].get_or_create("user-1") for n in range(self.CONCURRENT))
        )
        assert len(set(keys)) == 1
        assert await stores[0].get("user-1") == keys[0]

    async def test_get_many_answers_every_subject_asked_for(self) -> None:
        store = self.open()
        a = await store.get_or_create("a")
        b = await store.get_or_create("b")
        await store.get_or_create("c")
        await store.forget("c")
        found = await store.get_many(["a", "b", "c", "unknown", "a"])
        assert found == {"a": a, "b": b, "c": None, "unknown": None}
        assert await store.get_many([]) == {}

    async def test_get_many_of_many_subjects(self) -> None:
        store = self.open()
        subjects = [f"user-{n}" for n in range(1200)]
        keys = {s: await store.get_or_create(s) for s in subjects[::3]}
        found = await store.get_many(subjects)
        assert found == {s: keys.get(s) for s in subjects}

    # -- forgetting ---------------------------------------------------------------------------

    async def test_forget_destroys_the_key(self) -> None:
        store = self.open()
        key = await store.get_or_create("user-1")
        other = await store.get_or_create("user-2")
        assert await store.forget("user-1")
        assert await store.get("user-1") is None
        assert await store.get_many(["user-1", "user-2"]) == {"user-1": None, "user-2": other}
        assert await store.get("user-2") == other  # other subjects untouched
        assert key != other

    async def test_a_forgotten_subject_gets_no_new_key(self) -> None:
        store = self.open()
        await store.get_or_create("user-1")
        await store.forget("user-1")
        with pytest.raises(SubjectForgotten) as raised:
            await store.get_or_create("user-1")
        assert raised.value.subject == "user-1"
        assert "user-1" in str(raised.value)
        assert await store.get("user-1") is None  # the refusal made nothing

    async def test_forgetting_twice_is_harmless(self) -> None:
        store = self.open()
        await store.get_or_create("user-1")
        assert await store.forget("user-1")
        assert not await store.forget("user-1")
        assert await store.get("user-1") is None

    async def test_forgetting_an_unknown_subject_keeps_it_forgotten(self) -> None:
        store = self.open()
        assert not await store.forget("nobody")
        assert await store.get("nobody") is None
        with pytest.raises(SubjectForgotten):
            await store.get_or_create("nobody")

    async def test_forget_and_first_calls_at_once_leave_no_key(self) -> None:
        store, other = self.open(), self.open()
        await asyncio.gather(
            *(store.get_or_create(f"racer-{n}") for n in range(5)),
            *(other.forget(f"racer-{n}") for n in range(5)),
            return_exceptions=True,
        )
        assert await store.get_many(f"racer-{n}" for n in range(5)) == {
            f"racer-{n}": None for n in range(5)
        }

    # -- persistence and close ---------------------------------------------------------------

    async def test_calls_after_close_raise_store_closed(self) -> None:
        store = self.open()
        await store.get_or_create("user-1")
        await store.close()
        with pytest.raises(StoreClosed):
            await store.get("user-1")
        with pytest.raises(StoreClosed):
            await store.get_or_create("user-1")
        with pytest.raises(StoreClosed):
            await store.get_many(["user-1"])
        with pytest.raises(StoreClosed):
            await store.forget("user-1")
        await store.close()  # idempotent


class PersistentKeyStoreContract(KeyStoreContract):
    """The contract of a key store that keeps its keys on disk (all but memory's)."""

    async def test_keys_and_tombstones_survive_a_reopen(self) -> None:
        first = self.open()
        key = await first.get_or_create("user-1")
        await first.get_or_create("user-2")
        await first.forget("user-2")
        await first.close()
        again = self.open()
        assert await again.get("user-1") == key
        assert await again.get_or_create("user-1") == key
        assert await again.get("user-2") is None
        with pytest.raises(SubjectForgotten):
            await again.get_or_create("user-2")
