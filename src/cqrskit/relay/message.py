"""The messages the relay publishes: one per event, its subject, headers and JSON body.

Subject ``<prefix>.<EventType>``; header ``Nats-Msg-Id`` = the event's id; body::

    {"id": "0190...", "type": "PostPublished", "stream_id": "post-0190...",
     "version": 1, "position": 42, "recorded_at": "2025-01-31T12:00:00.123456+00:00",
     "schema_version": 1, "data": {...}, "metadata": {"correlation_id": ..., ...}}

``data`` is the event's payload as the app's current class reads it (stored payloads of
older schema versions are upcast first); an event the app cannot decode (a type it no
longer knows, a payload that no longer fits) is published as stored, and
``schema_version`` always says which version ``data`` is of. Personal fields
(:mod:`cqrskit.personal`) stay sealed, as stored (one member, ``"$sealed": [subject,
[fields], token]``, in their place); an event holding any is published as stored, never
opened to be upcast, so that nothing of a person reaches the stream in clear (and
forgetting them makes what the stream holds unreadable too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from .._sealing import is_sealed
from ..codec import Codec
from ..errors import ConfigurationError, SerializationError
from ..messages import RecordedEvent

__all__ = [
    "RelayMessage",
    "check_stream_name",
    "check_subject_prefix",
    "default_stream",
    "position_of",
    "subject_for",
    "to_message",
]

_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_NOT_IN_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class RelayMessage:
    """One event as published: ``event_id`` goes in ``Nats-Msg-Id``."""

    subject: str
    body: bytes
    event_id: str
    position: int


class _Body(msgspec.Struct, frozen=True):
    id: str
    type: str
    stream_id: str
    version: int
    position: int
    recorded_at: str
    schema_version: int
    data: msgspec.Raw
    metadata: msgspec.Raw


class _Position(msgspec.Struct):
    position: int


_encode = msgspec.json.Encoder().encode
_read_position = msgspec.json.Decoder(_Position).decode


def check_stream_name(name: str) -> str:
    """``name``, if JetStream takes it as a stream name (letters, digits, ``-``, ``_``)."""
    if not _STREAM_NAME.fullmatch(name):
        raise ConfigurationError(
            f"stream name {name!r}: use letters, digits, '-' and '_' only (no dots or spaces)"
        )
    return name


def check_subject_prefix(prefix: str) -> str:
    """``prefix``, if it is a subject of plain tokens (``social.events``, no wildcard)."""
    if not all(_TOKEN.fullmatch(token) for token in prefix.split(".")):
        raise ConfigurationError(
            f"subject prefix {prefix!r}: tokens of letters, digits, '-' and '_' separated by"
            " dots (no wildcard, no space)"
        )
    return prefix


def subject_for(prefix: str, event_type: str) -> str:
    """``<prefix>.<EventType>``; a character a subject token cannot hold becomes ``_``."""
    return f"{prefix}.{_NOT_IN_TOKEN.sub('_', event_type) or '_'}"


def to_message(record: RecordedEvent, codec: Codec, prefix: str) -> RelayMessage:
    """The message of one stored event (see the module docstring)."""
    data, schema_version = _data(record, codec)
    body = _Body(
        id=record.event_id,
        type=record.type,
        stream_id=record.stream_id,
        version=record.stream_version,
        position=record.position,
        recorded_at=datetime.fromtimestamp(record.recorded_at, UTC).isoformat(),
        schema_version=schema_version,
        data=msgspec.Raw(data),
        metadata=msgspec.Raw(record.metadata),
    )
    subject = subject_for(prefix, record.type)
    return RelayMessage(subject, _encode(body), record.event_id, record.position)


def _data(record: RecordedEvent, codec: Codec) -> tuple[bytes, int]:
    """The payload as JSON and the schema version it is of."""
    if not codec.known(record.type) or is_sealed(record.payload):
        # A sealed payload is published as stored: upcasting would need it opened.
        return record.payload, record.schema_version
    current = codec.class_for(record.type).__schema_version__
    if record.schema_version == current:
        return record.payload, current  # stored as the current class encodes it: no work
    try:
        return _encode(codec.decode(record)), current
    except SerializationError:
        return record.payload, record.schema_version


def position_of(body: bytes) -> int:
    """The log position a relay message's body carries."""
    return _read_position(body).position


def default_stream(app_class_name: str) -> str:
    """The stream an app relays to unless told: its class name without a trailing ``App``,
    in capitals (``SocialApp`` -> ``SOCIAL``); its subjects: ``social.events.<EventType>``."""
    base = app_class_name.removesuffix("App") or app_class_name
    return _NOT_IN_TOKEN.sub("_", base).upper()
