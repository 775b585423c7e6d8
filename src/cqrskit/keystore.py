"""The key store port: one secret key per data subject, for crypto-shredding.

Personal fields of events are encrypted with their data subject's key (AES-256-GCM);
forgetting the subject destroys the key, and what the events hold of them can never be
read again, although the events themselves are kept forever. The keys live in the WRITE
database, beside the events but never inside them.

Backends, with the same contract suite (``tests/contracts/keystore.py``) on each:
:class:`cqrskit.backends.memory.keys.MemoryKeyStore` (a dict),
:class:`cqrskit.backends.sqlite.keys.SqliteKeyStore` (a table of ``write.db``) and
:class:`cqrskit.backends.postgres.keys.PostgresKeyStore` (a table of migration 0006).

**Forgetting leaves a tombstone.** ``forget`` does not delete the subject's row: it sets
its key to NULL and records when (``forgotten_at``); a subject never seen gets such a row
too. So a forgotten subject stays distinguishable from an unknown one, and stays
forgotten: ``get_or_create`` refuses it with :class:`SubjectForgotten` instead of giving
it a fresh key (a late or replayed command must not start storing their personal data
again under a key nobody destroyed). ``get`` answers None for both: a reader of an event
sees the same placeholder whether the key was never made or was destroyed. The
tombstone holds the subject's identifier (an opaque id, not personal data by itself).

What is left on disk is each backend's business: SQLite writes with ``secure_delete`` on
and checkpoints its WAL after a forget, so the key's bytes are in neither file afterwards;
PostgreSQL keeps the old row version as a dead tuple until VACUUM reclaims its space (see
:mod:`cqrskit.backends.postgres.keys`).

Keys are 32 random bytes from the operating system (:func:`random_bytes`); the port needs no
cryptography package (the ``crypto`` extra is for the cipher that uses them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Protocol

from .errors import CqrsKitError

__all__ = ["KEY_SIZE", "KeyStore", "SubjectForgotten", "new_key", "random_bytes"]

KEY_SIZE = 32
"""Bytes in a key: AES-256."""


_POOL = 8192
_pool = b""
_taken = 0
_lock = threading.Lock()


def _forget_pool() -> None:
    global _pool, _taken
    _pool, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_pool)  # a child must not reuse its parent's bytes


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG (``os.urandom``), drawn 8 KiB at a
    time: a call per key or nonce releases the GIL for a system call, and taking it back
    behind a busy writer thread cost 16 us a call under load (measured: the registration
    path spent more there than in the cipher). Bytes are used once and never again."""
    global _pool, _taken
    with _lock:
        if _taken + n > len(_pool):
            _pool, _taken = os.urandom(max(_POOL, n)), 0
        chunk = _pool[_taken : _taken + n]
        _taken += n
    return chunk


def new_key() -> bytes:
    """A fresh random key of :data:`KEY_SIZE` bytes."""
    return random_bytes(KEY_SIZE)


class SubjectForgotten(CqrsKitError):
    """``get_or_create`` for a subject whose key was destroyed: they stay forgotten."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"data subject {subject!r} was forgotten: no key can be made for it")
        self.subject = subject


class KeyStore(Protocol):
    """Keys per data subject (see the module docstring).

    Every method may raise :class:`~cqrskit.errors.StoreClosed` after ``close()`` (which
    is idempotent), and the backend's :class:`~cqrskit.errors.PersistenceError`.
    """

    async def get_or_create(self, subject: str) -> bytes:
        """The subject's key, made on the first call: concurrent first calls (in any
        process) all get the same one. Raises :class:`SubjectForgotten` once forgotten."""
        ...

    async def get(self, subject: str) -> bytes | None:
        """The subject's key; None when it was never made or has been forgotten."""
        ...

    async def get_many(self, subjects: Iterable[str]) -> dict[str, bytes | None]:
        """:meth:`get` for many subjects in one query (a batch of events to decrypt):
        every subject asked for is a key of the answer."""
        ...

    async def forget(self, subject: str) -> bool:
        """Destroy the subject's key and leave a tombstone (also for a subject never
        seen). True when a key was destroyed, False when there was none (unknown, or
        already forgotten): forgetting twice is harmless."""
        ...

    async def close(self) -> None: ...
