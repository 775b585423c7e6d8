"""The SQLite backend: the embedded default (one file for the events, one for the read
models), for one process or several on one machine."""

from .database import SqliteDatabase
from .keys import SqliteKeyStore
from .lease import SqliteLease
from .store import SqliteEventStore, StoreStats

__all__ = ["SqliteDatabase", "SqliteEventStore", "SqliteKeyStore", "SqliteLease", "StoreStats"]
