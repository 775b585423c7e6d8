"""cqrskit: CQRS with event sourcing for Python.

The event store is the source of truth and the bus: projections consume its log from a
checkpoint kept in the same transaction as their changes.
"""

from .aggregate import Aggregate
from .bus import (
    CommandBus,
    CommandResult,
    Dispatch,
    Middleware,
    QueryBus,
    QueryResult,
    logging_middleware,
    retry_on_conflict_middleware,
    timing_middleware,
)
from .codec import Codec, Upcaster
from .context import CommandContext, current_context
from .errors import (
    ConcurrencyError,
    ConfigurationError,
    ConsistencyTimeout,
    CqrsKitError,
    EventDecodeError,
    HandlerNotFound,
    IntegrityError,
    OperationalError,
    PersistenceError,
    ProjectionError,
    SchemaError,
    SerializationError,
    StoreClosed,
    StreamNotFound,
    UniqueViolation,
    UnknownEventType,
    UpcastError,
)
from .messages import Command, Event, Metadata, Query, RecordedEvent, new_id
from .projection import Projection, handles
from .repository import Repository
from .sql import Row, SqlTx
from .store import ANY, NO_STREAM, AppendResult, EventStore, ExpectedVersion, Snapshot, StreamState

__all__ = [
    "ANY",
    "NO_STREAM",
    "Aggregate",
    "AppendResult",
    "Codec",
    "Command",
    "CommandBus",
    "CommandContext",
    "CommandResult",
    "ConcurrencyError",
    "ConfigurationError",
    "ConsistencyTimeout",
    "CqrsKitError",
    "Dispatch",
    "Event",
    "EventDecodeError",
    "EventStore",
    "ExpectedVersion",
    "HandlerNotFound",
    "IntegrityError",
    "Metadata",
    "Middleware",
    "OperationalError",
    "PersistenceError",
    "Projection",
    "ProjectionError",
    "Query",
    "QueryBus",
    "QueryResult",
    "RecordedEvent",
    "Repository",
    "Row",
    "SchemaError",
    "SerializationError",
    "Snapshot",
    "SqlTx",
    "StoreClosed",
    "StreamNotFound",
    "StreamState",
    "UniqueViolation",
    "UnknownEventType",
    "UpcastError",
    "Upcaster",
    "current_context",
    "handles",
    "logging_middleware",
    "new_id",
    "retry_on_conflict_middleware",
    "timing_middleware",
]
