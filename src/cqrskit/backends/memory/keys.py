"""Keys per data subject in a dict: :class:`MemoryKeyStore`, for tests and examples.

Every operation runs without awaiting, so none interleaves with another on the event
loop: a key is made once per subject. A forgotten subject keeps a tombstone (None), as on
the other backends (see :mod:`cqrskit.keystore`). Nothing survives the process.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from ...errors import StoreClosed
from ...eventstore import AppendResult, Within
from ...keystore import SubjectForgotten, new_key
from ...personal import KeyConflict
from ...sql import SqlTx

__all__ = ["MemoryKeyStore"]


class MemoryKeyStore:
    """:class:`~cqrskit.keystore.KeyStore` in memory."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes | None] = {}
        """subject -> its key, or None once forgotten (the tombstone)."""
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the key store is closed")

    async def get_or_create(self, subject: str) -> bytes:
        self._check_open()
        key = self._keys.setdefault(subject, new_key())
        if key is None:
            raise SubjectForgotten(subject)
        return key

    async def get(self, subject: str) -> bytes | None:
        self._check_open()
        return self._keys.get(subject)

    async def get_many(self, subjects: Iterable[str]) -> dict[str, bytes | None]:
        self._check_open()
        return {subject: self._keys.get(subject) for subject in subjects}

    async def forget(self, subject: str) -> bool:
        self._check_open()
        had_key = self._keys.get(subject) is not None
        self._keys[subject] = None
        return had_key

    # -- for MemoryEventStore ---------------------------------------------------------------

    def lookup(self, subjects: Iterable[str]) -> dict[str, bytes | None]:
        """The subjects that have a row: their key, or None once forgotten."""
        return {s: self._keys[s] for s in subjects if s in self._keys}

    def writes(self, created: dict[str, bytes], forgotten: Collection[str]) -> Within:
        """An append's key rows: run last in its transaction (nothing after it can fail),
        so a dict stands in for the table."""

        def write(tx: SqlTx, results: list[AppendResult]) -> None:
            for subject in created:
                if subject in self._keys:
                    raise KeyConflict(subject)
            self._keys.update(created)
            for subject in forgotten:
                self._keys[subject] = None

        return write

    async def close(self) -> None:
        self._closed = True
