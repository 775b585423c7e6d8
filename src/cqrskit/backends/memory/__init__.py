"""The in-memory backend: every port without durability, for unit tests and examples."""

from .database import MemoryDatabase
from .keys import MemoryKeyStore
from .lease import LeaseRegistry, MemoryLease
from .store import MemoryEventStore

__all__ = ["LeaseRegistry", "MemoryDatabase", "MemoryEventStore", "MemoryKeyStore", "MemoryLease"]
