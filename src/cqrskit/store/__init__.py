"""Event store contract and backends (memory, SQLite, PostgreSQL)."""

from .base import (
    ANY,
    NO_STREAM,
    AppendResult,
    EventStore,
    ExpectedVersion,
    InlineHandler,
    Snapshot,
    StreamState,
)

__all__ = [
    "ANY",
    "NO_STREAM",
    "AppendResult",
    "EventStore",
    "ExpectedVersion",
    "InlineHandler",
    "Snapshot",
    "StreamState",
]
