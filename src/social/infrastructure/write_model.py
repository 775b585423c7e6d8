"""The write model's ``users`` table, kept by an inline projection in the append's transaction.

Its ``UNIQUE (email_lower)`` is what makes registration unique case-insensitively: a second
registration of an address fails its append whole (``UniqueViolation``), whatever the
concurrency. It also serves login lookups. Never exposed to reads of the API other than
authentication.
"""

from __future__ import annotations

from cqrskit import Projection, RecordedEvent, SqlTx, handles

from ..domain import UserRegistered
from ..domain.values import email_key

__all__ = ["UsersTable", "find_login"]


class UsersTable(Projection):
    name = "users"
    tables = ("users",)

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


def find_login(tx: SqlTx, email: str) -> tuple[str, str, int] | None:
    """``(user id, password hash, registration position)`` of an address, if registered."""
    row = tx.fetchone(
        "SELECT id, password_hash, position FROM users WHERE email_lower = ?", (email_key(email),)
    )
    return None if row is None else (str(row[0]), str(row[1]), int(row[2]))
