"""The cqrskit error tree. Every error the framework raises derives from :class:`CqrsKitError`.

::

    CqrsKitError
    ├── ConfigurationError            wiring mistakes (duplicate handler, bad option)
    ├── HandlerNotFound               dispatching a command/query type nobody registered
    ├── SerializationError            encoding/decoding a message
    │   ├── UnknownEventType          a stored type name with no registered class
    │   ├── EventDecodeError          a payload that does not fit its class
    │   └── UpcastError               an upcaster chain that is missing a step or failed
    ├── ConcurrencyError              expected version mismatch on append (carries actual)
    │   └── StaleVersion              ... the client's own version: never retried
    ├── StreamNotFound                reading a stream that does not exist where one is required
    ├── PersistenceError              PEP 249-shaped tree; driver errors are converted at the
    │   │                             transaction boundary, the original is kept as __cause__
    │   ├── IntegrityError            a constraint failed (the command fails whole)
    │   │   └── UniqueViolation       a UNIQUE/PRIMARY KEY constraint (carries the constraint text)
    │   ├── OperationalError          the database is unavailable, locked too long...
    │   │   └── StorageFull           its disk (or quota) is full: nothing was written
    │   ├── DamagedDatabase           a database file is damaged (names the file)
    │   └── SchemaError               migrations missing or newer than this code
    ├── ProjectionError               a projection stopped (name, position, type, cause)
    ├── ConsistencyTimeout            wait_for did not see the position in time
    │   └── PositionBeyondLog         ... and no write has produced it: the log ends before it
    └── StoreClosed                   using a store or runner after close()
"""

from __future__ import annotations

__all__ = [
    "ConcurrencyError",
    "ConfigurationError",
    "ConsistencyTimeout",
    "CqrsKitError",
    "DamagedDatabase",
    "EventDecodeError",
    "HandlerNotFound",
    "IdempotencyKeyReused",
    "IntegrityError",
    "InvalidAction",
    "InvalidIdempotencyKey",
    "OperationalError",
    "PersistenceError",
    "PositionBeyondLog",
    "ProjectionError",
    "SchemaError",
    "SerializationError",
    "StorageFull",
    "StoreClosed",
    "StreamNotFound",
    "UniqueViolation",
    "UnknownEventType",
    "UnknownProjection",
    "UpcastError",
]


class CqrsKitError(Exception):
    """Root of every error raised by cqrskit."""


class ConfigurationError(CqrsKitError):
    """The framework was wired wrongly (duplicate registration, invalid option)."""


class HandlerNotFound(CqrsKitError):
    def __init__(self, kind: str, message_type: type) -> None:
        self.kind = kind
        self.message_type = message_type
        name = f"{message_type.__module__}.{message_type.__qualname__}"
        super().__init__(f"no {kind} handler registered for {name}")


class SerializationError(CqrsKitError):
    pass


class UnknownEventType(SerializationError):
    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(
            f"unknown event type {type_name!r}: no class is registered under that name"
        )


class EventDecodeError(SerializationError):
    def __init__(self, type_name: str, cls: type, reason: str) -> None:
        self.type_name = type_name
        self.cls = cls
        self.reason = reason
        super().__init__(
            f"payload of event type {type_name!r} does not fit {cls.__module__}.{cls.__qualname__}:"
            f" {reason}"
        )


class UpcastError(SerializationError):
    pass


class ConcurrencyError(CqrsKitError):
    """The stream's version was not the expected one. ``actual`` is the stream's version now."""

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r}: expected version {expected!r}, actual version {actual}"
        )


class StaleVersion(ConcurrencyError):
    """The version a client sent is not the stream's (``Repository.get(id,
    expected_version=...)``): the client decides, so it is never retried (an HTTP 409)."""


class StreamNotFound(CqrsKitError):
    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id!r} does not exist")


class PersistenceError(CqrsKitError):
    pass


class IntegrityError(PersistenceError):
    pass


class UniqueViolation(IntegrityError):
    def __init__(self, message: str, constraint: str | None = None) -> None:
        self.constraint = constraint
        super().__init__(message)


class OperationalError(PersistenceError):
    pass


class StorageFull(OperationalError):
    """The database could not write: its disk (or quota) is full. The transaction rolled
    back whole; it may succeed once space is freed."""


class DamagedDatabase(PersistenceError):
    """A database file is damaged (SQLite: not a database, or a malformed page;
    PostgreSQL: data or index corruption). Retrying cannot help: the message names the
    file. A read database can be set aside and rebuilt from the log; an event store must
    be restored from a backup."""


class SchemaError(PersistenceError):
    pass


class ProjectionError(CqrsKitError):
    """A projection's handler kept failing; the projection stopped at ``position``."""

    def __init__(
        self,
        projection: str,
        position: int,
        event_type: str,
        cause: str,
        *,
        event_id: str = "",
        stream_id: str = "",
        attempts: int = 1,
    ) -> None:
        self.projection = projection
        self.position = position
        self.event_type = event_type
        self.cause = cause
        self.event_id = event_id
        self.stream_id = stream_id
        self.attempts = attempts
        super().__init__(
            f"projection {projection!r} stopped at position {position} ({event_type}): {cause}"
        )


class InvalidAction(CqrsKitError, ValueError):
    """An operator's action cannot be asked as given (no reason for a skip, a projection
    that does not park, a negative position...)."""


class InvalidIdempotencyKey(CqrsKitError, ValueError):
    """An idempotency key that is not 1 to 255 printable ASCII characters."""


class IdempotencyKeyReused(CqrsKitError):
    """An idempotency key already used, within its lifetime, for another request."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"idempotency key {key!r} was already used for a different request")


class UnknownProjection(CqrsKitError, LookupError):
    """An operator named a projection the app does not have."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"no projection {name!r}; the app has: {', '.join(known) or 'none'}")


class ConsistencyTimeout(CqrsKitError):
    def __init__(self, projection: str, wanted: int, reached: int, timeout: float) -> None:
        self.projection = projection
        self.wanted = wanted
        self.reached = reached
        self.timeout = timeout
        super().__init__(
            f"projection {projection!r} reached position {reached}, not {wanted},"
            f" within {timeout:.3g}s"
        )


class PositionBeyondLog(ConsistencyTimeout):
    """The wait ended and the position is still beyond the log's head: no write produced
    it (a token from another deployment, or from before a restore). Waiting longer or
    retrying cannot help, unlike a plain :class:`ConsistencyTimeout`."""

    def __init__(
        self, projection: str, wanted: int, reached: int, timeout: float, head: int
    ) -> None:
        super().__init__(projection, wanted, reached, timeout)
        self.head = head
        self.args = (f"position {wanted} is beyond the log, which ends at {head}",)


class StoreClosed(CqrsKitError):
    pass
