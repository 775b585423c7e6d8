"""Versioned PostgreSQL migrations: ``migrations/NNNN_name.sql`` beside this module, in order.

Applied versions are recorded in ``cqrskit_migrations`` (with a checksum of the file). All
pending migrations are applied in ONE transaction that first takes a transaction-level
advisory lock: processes starting together queue on the lock, and the second one finds
the work done. A database holding a version this code does not know, or a migration
whose file changed after it was applied, raises :class:`~cqrskit.errors.SchemaError`.

Run ``python -m cqrskit.backends.postgres.migrate postgresql://...`` to apply them by hand.

The comments of migrations 0001 to 0004 point to ``cqrskit/store/postgres.py`` for the
proof of gap-free reading: the event store's path before the backends had packages of
their own. It is ``backends/postgres/store.py`` now; the files stay as they were applied
(their checksums are checked), so the old path stays in them.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from ...errors import SchemaError
from .connection import translate_errors

__all__ = ["LOCK_KEY", "Migration", "apply", "apply_on", "migrations"]

LOCK_KEY = 0x637172736B6D6967  # "cqrskmig": the advisory lock serialising migrators
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The migrations shipped with this code, in version order."""
    found: list[Migration] = []
    for entry in resources.files("cqrskit.backends.postgres").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise SchemaError(f"two migrations share a version: {versions}")
    return found


def apply_on(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply the pending migrations on an autocommit connection; returns their file names.

    psycopg errors propagate as they are: the caller's connection boundary converts them
    (:func:`apply`, or the store's pool when it opens)."""
    known = migrations()
    applied_now: list[str] = []
    with conn.transaction():
        # Held until COMMIT: concurrent starters apply migrations one after the other.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS cqrskit_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        rows = conn.execute("SELECT version, name, checksum FROM cqrskit_migrations").fetchall()
        done = {version: (name, checksum) for version, name, checksum in rows}
        by_version = {m.version: m for m in known}
        unknown = sorted(set(done) - set(by_version))
        if unknown:
            raise SchemaError(
                f"the database has migrations {unknown} that this code does not know:"
                " it was migrated by a newer cqrskit"
            )
        for migration in known:
            if migration.version in done:
                if done[migration.version][1] != migration.checksum:
                    raise SchemaError(
                        f"migration {migration.version:04d}_{migration.name} changed after it"
                        " was applied; add a new migration instead"
                    )
                continue
            conn.execute(migration.sql.encode())  # bytes: no placeholder processing
            conn.execute(
                "INSERT INTO cqrskit_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(f"{migration.version:04d}_{migration.name}.sql")
    return applied_now


def apply(url: str) -> list[str]:
    """Connect to ``url`` and apply the pending migrations; returns their file names."""
    with translate_errors(), psycopg.connect(url, autocommit=True) as conn:
        return apply_on(conn)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cqrskit.backends.postgres.migrate POSTGRES_URL", file=sys.stderr)
        return 2
    applied = apply(args[0])
    print("\n".join(applied) if applied else "up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
