"""Message base types: commands change state, queries read it, events record what happened.

All three are frozen dataclasses. Subclass them with ``@dataclass(frozen=True)``::

    @dataclass(frozen=True)
    class RegisterUser(Command):
        email: str

    @dataclass(frozen=True)
    class UserRegistered(Event):
        __event_type__ = "UserRegistered"   # optional: defaults to the class name
        __schema_version__ = 2              # optional: defaults to 1
        user_id: str
        email: str
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Generic, TypeVar

__all__ = ["Command", "Event", "Metadata", "Query", "RecordedEvent", "new_id"]

R = TypeVar("R")


def new_id() -> str:
    """A new random id as text (UUID4)."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Command:
    """Base of commands: imperative names (``RegisterUser``)."""


@dataclass(frozen=True)
class Query(Generic[R]):
    """Base of queries: noun names (``GetUser``). ``R`` is the result type."""


@dataclass(frozen=True)
class Event:
    """Base of domain events: past-tense names (``UserRegistered``)."""

    __event_type__: ClassVar[str] = ""
    __schema_version__: ClassVar[int] = 1

    @classmethod
    def event_type(cls) -> str:
        return cls.__event_type__ or cls.__name__


@dataclass(frozen=True, slots=True)
class Metadata:
    """Who caused an event: stored beside the payload of every event."""

    correlation_id: str | None = None
    causation_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: the envelope plus its still-encoded payload.

    The payload stays encoded until a consumer asks for it (``Codec.decode``), so a
    projection skips events it does not handle without decoding them.
    ``event_id`` is a UUID in text form; ``recorded_at`` is seconds since the epoch (UTC).
    """

    position: int
    stream_id: str
    stream_version: int
    event_id: str
    type: str
    schema_version: int
    payload: bytes
    metadata: bytes
    recorded_at: float

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(self.event_id)

    @property
    def recorded_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.recorded_at, tz=UTC)
