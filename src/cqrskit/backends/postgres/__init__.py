"""The PostgreSQL backend: many API and worker processes on one or more machines."""

from .database import PostgresDatabase
from .keys import PostgresKeyStore
from .lease import PgAdvisoryLease
from .migrate import apply as apply_migrations
from .store import PostgresEventStore

__all__ = [
    "PgAdvisoryLease",
    "PostgresDatabase",
    "PostgresEventStore",
    "PostgresKeyStore",
    "apply_migrations",
]
