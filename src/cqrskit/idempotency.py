"""Idempotent commands: a client's key, stored with the command's events and its answer.

A command dispatched with an :class:`IdempotencyKey` (``app.dispatch(cmd,
idempotency=key)``; ``cqrskit.fastapi`` makes one from the ``Idempotency-Key`` header)
runs once per key and caller (its ``scope``), however many times it is sent:

- The handler's appends are held back until it returns (see
  :class:`~cqrskit.context.CommandContext`); then they are appended, to every stream
  they touch, in ONE transaction of the log's database that also stores the key, the
  fingerprint of the request and the answer (the handler's value and the command's
  position). Killed before that commit, the command did nothing and may run again;
  after it, everything is there, answer included.
- A repeat with the same key and fingerprint is answered from the store, without
  running the handler (``CommandResult.replayed``). With another fingerprint it is
  refused (:class:`~cqrskit.errors.IdempotencyKeyReused`).
- Two at once: both handlers run, one commit stores the key (its primary key), the
  other's transaction fails whole on it, and that caller gets the stored answer.
- A command that fails before committing stores nothing: the key may be used again.
- Keys expire (24 hours by default); expired ones are deleted in small batches (see
  :meth:`~cqrskit.App.purge_idempotency_keys`), never in a transaction of appends.

The table lives in the log's database, beside the events (portable SQL, ``?`` parameters).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import InvalidIdempotencyKey, UniqueViolation
from .sql import SqlTx

__all__ = [
    "DEFAULT_KEY_TTL",
    "IDEMPOTENCY_DDL",
    "IdempotencyKey",
    "KeyTaken",
    "StoredAnswer",
    "find_answer",
    "is_key_taken",
    "purge_expired",
    "store_answer",
]

DEFAULT_KEY_TTL = 24 * 3600.0
"""Seconds a key is kept (and a repeat answered from it)."""

IDEMPOTENCY_DDL = (
    "CREATE TABLE IF NOT EXISTS cqrskit_idempotency (scope TEXT NOT NULL, key TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL, answer TEXT NOT NULL, position BIGINT NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (scope, key))",  # SQLite adds WITHOUT ROWID: the key is the row's place
    "CREATE INDEX IF NOT EXISTS cqrskit_idempotency_expiry ON cqrskit_idempotency (expires_at)",
)
"""Created with the log's tables by every backend."""

_KEY = re.compile(r"[\x20-\x7e]{1,255}")


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's key for one logical command, the caller it belongs to, and what the
    request was (its fingerprint): the same key with another request is refused."""

    key: str
    fingerprint: str
    scope: str = ""
    """Whose key: the authenticated caller (a user id), "" for anonymous callers."""

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key):
            raise InvalidIdempotencyKey("an idempotency key is 1 to 255 printable ASCII characters")

    @staticmethod
    def fingerprint_of(*parts: str | bytes) -> str:
        """A fingerprint of a request from its parts (method, path, body...)."""
        digest = hashlib.sha256()
        for part in parts:
            data = part.encode() if isinstance(part, str) else part
            digest.update(len(data).to_bytes(8, "big"))  # unambiguous: ("ab","c") != ("a","bc")
            digest.update(data)
        return digest.hexdigest()

    def for_caller(self, scope: str) -> IdempotencyKey:
        """The same key scoped to ``scope`` (an authenticated caller's id)."""
        return IdempotencyKey(self.key, self.fingerprint, scope)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    fingerprint: str
    answer: str
    """The handler's value, as JSON."""
    position: int
    created_at: float


class KeyTaken(Exception):
    """The command's key was stored already (a repeat, or a duplicate that committed
    first): its transaction rolled back whole."""


def is_key_taken(exc: UniqueViolation) -> bool:
    """Whether ``exc`` is the key's primary key refusing a second row (the backends name
    the constraint differently; each name holds the table's)."""
    return "cqrskit_idempotency" in f"{exc.constraint or ''} {exc}"


def find_answer(tx: SqlTx, key: IdempotencyKey, now: float) -> StoredAnswer | None:
    """The stored answer for ``key`` (None when there is none, or it expired)."""
    row = tx.fetchone(
        "SELECT fingerprint, answer, position, created_at FROM cqrskit_idempotency"
        " WHERE scope = ? AND key = ? AND expires_at > ?",
        (key.scope, key.key, now),
    )
    if row is None:
        return None
    return StoredAnswer(str(row[0]), str(row[1]), int(row[2]), float(row[3]))


def store_answer(
    tx: SqlTx, key: IdempotencyKey, answer: str, position: int, now: float, ttl: float
) -> None:
    """Store the key with its answer, in the command's transaction. A live key there makes
    the INSERT fail on the primary key (:func:`is_key_taken`), and the transaction with
    it; an expired one is deleted first. Two statements that need no answer from the
    database: a backend may send them with the commit, in one round trip."""
    tx.execute(
        "DELETE FROM cqrskit_idempotency WHERE scope = ? AND key = ? AND expires_at <= ?",
        (key.scope, key.key, now),
    )
    tx.execute(
        "INSERT INTO cqrskit_idempotency (scope, key, fingerprint, answer, position,"
        " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key.scope, key.key, key.fingerprint, answer, position, now, now + ttl),
    )


def purge_expired(tx: SqlTx, now: float, limit: int) -> int:
    """Delete up to ``limit`` expired keys; how many were deleted (counted from the rows
    the statement returns: a pipelined transaction has no row count)."""
    deleted = tx.fetchall(
        "DELETE FROM cqrskit_idempotency WHERE (scope, key) IN (SELECT scope, key"
        " FROM cqrskit_idempotency WHERE expires_at <= ? LIMIT ?) RETURNING 1",
        (now, limit),
    )
    return len(deleted)
