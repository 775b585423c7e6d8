"""cqrskit: CQRS with event sourcing for Python.

The event store is the source of truth and the bus: projections consume its log from a
checkpoint kept in the same transaction as their changes.
"""

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

from ._parking import ParkedEvent
from .actions import Action
from .aggregate import Aggregate
from .app import App, command, query
from .backoff import RetryPolicy, backoff_delays
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
from .checkpoints import ProjectionFailure, read_position
from .codec import Codec, Upcaster
from .connect import Options, ReadDurability
from .consistency import retry_read, wait_for_position
from .context import CommandContext, current_context
from .errors import (
    ConcurrencyError,
    ConfigurationError,
    ConsistencyTimeout,
    CqrsKitError,
    DamagedDatabase,
    EventDecodeError,
    HandlerNotFound,
    IdempotencyKeyReused,
    IntegrityError,
    InvalidAction,
    InvalidIdempotencyKey,
    OperationalError,
    PersistenceError,
    PositionBeyondLog,
    ProjectionError,
    SchemaError,
    SerializationError,
    StaleVersion,
    StorageFull,
    StoreClosed,
    StreamNotFound,
    UniqueViolation,
    UnknownEventType,
    UnknownProjection,
    UpcastError,
)
from .eventstore import (
    ANY,
    NO_STREAM,
    AppendResult,
    EventStore,
    ExpectedVersion,
    InlineHandler,
    Snapshot,
    StreamAppend,
    StreamState,
)
from .idempotency import IdempotencyKey
from .keystore import KeyStore, SubjectForgotten
from .lease import Lease
from .messages import Command, Event, Metadata, Query, RecordedEvent, new_id
from .monitoring import STATES as PROJECTION_STATES
from .monitoring import ProjectionStatus, RelayReport, projection_status, relay_reports
from .operations import Operations
from .personal import FORGOTTEN, KeyConflict
from .projection import Projection, handles
from .readside import ReadDatabase, RebuildTarget, create_read_models
from .rebuild import RebuildProgress, RebuildResult, rebuild
from .repository import Repository
from .runner import ProjectionRunner
from .sql import Row, SqlTx
from .subscription import subscribe

__all__ = [
    "ANY",
    "FORGOTTEN",
    "NO_STREAM",
    "PROJECTION_STATES",
    "Action",
    "Aggregate",
    "App",
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
    "DamagedDatabase",
    "Dispatch",
    "Event",
    "EventDecodeError",
    "EventStore",
    "ExpectedVersion",
    "HandlerNotFound",
    "IdempotencyKey",
    "IdempotencyKeyReused",
    "InlineHandler",
    "IntegrityError",
    "InvalidAction",
    "InvalidIdempotencyKey",
    "KeyConflict",
    "KeyStore",
    "Lease",
    "Metadata",
    "Middleware",
    "OperationalError",
    "Operations",
    "Options",
    "ParkedEvent",
    "PersistenceError",
    "PositionBeyondLog",
    "Projection",
    "ProjectionError",
    "ProjectionFailure",
    "ProjectionRunner",
    "ProjectionStatus",
    "Query",
    "QueryBus",
    "QueryResult",
    "ReadDatabase",
    "ReadDurability",
    "RebuildProgress",
    "RebuildResult",
    "RebuildTarget",
    "RecordedEvent",
    "RelayReport",
    "Repository",
    "RetryPolicy",
    "Row",
    "SchemaError",
    "SerializationError",
    "Snapshot",
    "SqlTx",
    "StaleVersion",
    "StorageFull",
    "StoreClosed",
    "StreamAppend",
    "StreamNotFound",
    "StreamState",
    "SubjectForgotten",
    "UniqueViolation",
    "UnknownEventType",
    "UnknownProjection",
    "UpcastError",
    "Upcaster",
    "backoff_delays",
    "command",
    "create_read_models",
    "current_context",
    "handles",
    "logging_middleware",
    "new_id",
    "projection_status",
    "query",
    "read_position",
    "rebuild",
    "relay_reports",
    "retry_on_conflict_middleware",
    "retry_read",
    "subscribe",
    "timing_middleware",
    "wait_for_position",
]

try:
    __version__ = _version("cqrskit")
except _NotInstalled:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"
