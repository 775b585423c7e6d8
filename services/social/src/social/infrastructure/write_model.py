"""The write model's ``users`` table, kept by an inline projection in the append's transaction.

Its ``UNIQUE (email_lower)`` is what makes registration unique however an address is
spelled (the column holds :func:`~social.domain.values.email_key`: NFC and case folding;
its name is from when it held ``lower()``): a second registration of an address fails its
append whole (``UniqueViolation``), whatever the concurrency. It also serves login
lookups. Never exposed to reads of the API other than authentication.

``users_schema`` records which key the rows hold. Version 1 held ``lower()``; opening a
version 1 table recomputes every key once, in the schema transaction. Two accounts whose
addresses only the new key tells apart (registered before it) cannot both keep the
address: the first registered keeps it, a later one gets a key no address matches (it can
no longer log in by email), and a warning names both.
"""

from __future__ import annotations

import logging
import secrets

from cqrskit import ConfigurationError, Projection, RecordedEvent, SqlTx, handles

from ..domain import UserForgotten, UserRegistered
from ..domain.values import email_key

__all__ = [
    "KEY_VERSION",
    "TokenKeyTable",
    "UsersTable",
    "find_login",
    "read_token_key",
    "user_exists",
]

log = logging.getLogger("social.write_model")


KEY_VERSION = 2
"""Version of ``users.email_lower``: 1 ``lower()``, 2 :func:`email_key`."""


class UsersTable(Projection):
    name = "users"
    tables = ("users",)
    pipelined = True  # its handlers only write: an append may send them with its commit

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS users ("
            " id TEXT PRIMARY KEY,"
            " email TEXT NOT NULL,"
            " email_lower TEXT NOT NULL UNIQUE,"
            " password_hash TEXT NOT NULL,"
            " created_at TEXT NOT NULL,"
            " position BIGINT NOT NULL)"
        )
        tx.execute("CREATE TABLE IF NOT EXISTS users_schema (key_version INTEGER NOT NULL)")
        row = tx.fetchone("SELECT key_version FROM users_schema")
        if row is None:
            # A table that existed before users_schema holds version 1 keys; a new one none.
            tx.execute("INSERT INTO users_schema (key_version) VALUES (1)")
            row = (1,)
        if int(row[0]) < KEY_VERSION:
            _rekey(tx)
            tx.execute("UPDATE users_schema SET key_version = ?", (KEY_VERSION,))

    @handles(UserRegistered)
    def on_registered(self, tx: SqlTx, event: UserRegistered, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO users (id, email, email_lower, password_hash, created_at, position)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                event.id,
                event.email,
                email_key(event.email),
                event.password_hash,
                event.registered_at,
                record.position,
            ),
        )

    @handles(UserForgotten)
    def on_forgotten(self, tx: SqlTx, event: UserForgotten, record: RecordedEvent) -> None:
        # In the forget's own append: the email is free again at once, the address and
        # the hash are gone from this table (zeroed in the page on SQLite: secure_delete).
        tx.execute("DELETE FROM users WHERE id = ?", (event.id,))


def _rekey(tx: SqlTx) -> None:
    """Every row's key recomputed with :func:`email_key`, in registration order."""
    rows = tx.fetchall("SELECT id, email, email_lower FROM users ORDER BY position")
    wanted: dict[str, str] = {}
    keys: dict[str, str] = {}
    for user_id, email, old in rows:
        key = email_key(email)
        if key in wanted:  # an earlier account has it: this one can no longer log in
            log.warning(
                "users %s and %s have one address under the new comparison: %s keeps it",
                wanted[key],
                user_id,
                wanted[key],
            )
            key = f"#{user_id}"  # no address matches it: every address has an "@"
        else:
            wanted[key] = user_id
        if key != old:
            keys[user_id] = key
    # Through temporary keys: a new key may be another row's old one (UNIQUE holds at
    # every statement).
    for user_id in keys:
        tx.execute("UPDATE users SET email_lower = ? WHERE id = ?", (f"~{user_id}", user_id))
    for user_id, key in keys.items():
        tx.execute("UPDATE users SET email_lower = ? WHERE id = ?", (key, user_id))


def user_exists(tx: SqlTx, user_id: str) -> bool:
    """Is the user registered and not forgotten? (The token check of every write.)"""
    return tx.fetchone("SELECT 1 FROM users WHERE id = ?", (user_id,)) is not None


def find_login(tx: SqlTx, email: str) -> tuple[str, str, int] | None:
    """``(user id, password hash, registration position)`` of an address, if registered."""
    row = tx.fetchone(
        "SELECT id, password_hash, position FROM users WHERE email_lower = ?", (email_key(email),)
    )
    return None if row is None else (str(row[0]), str(row[1]), int(row[2]))


class TokenKeyTable(Projection):
    """The token signing key of a deployment, kept in its write database.

    Every process of a deployment on PostgreSQL opens the same write database, whatever
    its working directory: the key made there once is the one they all sign and verify
    with. It is made when the store opens, in the schema transaction that every starter
    takes in turn (the migration lock): the first inserts a random key, the others find it
    there. No event touches it.
    """

    name = "token_key"
    tables = ("social_keys",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS social_keys (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        tx.execute(
            "INSERT INTO social_keys (name, value) VALUES ('token', ?)"
            " ON CONFLICT (name) DO NOTHING",
            (secrets.token_hex(32),),
        )


def read_token_key(tx: SqlTx) -> bytes:
    row = tx.fetchone("SELECT value FROM social_keys WHERE name = 'token'")
    if row is None:  # the schema transaction makes it: a store opened without TokenKeyTable
        raise ConfigurationError("the write database has no token key")
    return str(row[0]).encode("ascii")
