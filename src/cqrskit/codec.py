"""Encoding of events with msgspec, registered by type name, with chained upcasting.

Each event class is registered under its type name and current schema version, with
its personal fields if it declares any (:mod:`cqrskit.personal`: the codec seals them with
the key the event store gives it). An
upcaster is registered per ``(type name, from_version)`` and turns the payload of that
version (a ``dict``) into the payload of ``from_version + 1``. Decoding a stored payload
of an older version runs the chain up to the class's current version; stored events are
never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from . import _cipher, _sealing
from .errors import ConfigurationError, EventDecodeError, UnknownEventType, UpcastError
from .messages import Event, Metadata, RecordedEvent
from .personal import PersonalFields, forgets_field, personal_fields

__all__ = ["Codec", "Upcaster"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_encoder = msgspec.json.Encoder()
_dict_decoder = msgspec.json.Decoder(dict[str, Any])
_metadata_decoder = msgspec.json.Decoder(Metadata)
_EMPTY_METADATA = _encoder.encode(Metadata())
_NONE: Mapping[str, Any] = {}


class Codec:
    """Registry of event classes and upcasters; encodes and decodes payloads."""

    def __init__(self, events: Iterable[type[Event]] = ()) -> None:
        self._classes: dict[str, type[Event]] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._personal: dict[type[Event], PersonalFields] = {}
        self._forgets: dict[type[Event], str] = {}
        self._placeholders: dict[str, dict[str, Any]] = {}
        self._forgetting: set[str] = set()
        """Type names of the events that forget a subject."""
        for cls in events:
            self.register(cls)

    def register(self, cls: type[Event]) -> type[Event]:
        name = cls.event_type()
        existing = self._classes.get(name)
        if existing is not None and existing is not cls:
            raise ConfigurationError(
                f"event type {name!r} is already registered to {existing.__qualname__}"
            )
        personal = personal_fields(cls)
        forgets = forgets_field(cls)
        if personal is not None:
            _cipher.require(cls.__qualname__)
            self._personal[cls] = personal
            self._placeholders[name] = personal.placeholders
        if forgets is not None:
            self._forgets[cls] = forgets
            self._forgetting.add(name)
        self._classes[name] = cls
        self._decoders[name] = msgspec.json.Decoder(cls)
        return cls

    def upcaster(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator registering the step ``from_version -> from_version + 1`` of a type."""

        def register(fn: Upcaster) -> Upcaster:
            self.add_upcaster(type_name, from_version, fn)
            return fn

        return register

    def add_upcaster(self, type_name: str, from_version: int, fn: Upcaster) -> None:
        key = (type_name, from_version)
        if key in self._upcasters:
            raise ConfigurationError(f"upcaster for {type_name!r} v{from_version} already exists")
        self._upcasters[key] = fn

    def class_for(self, type_name: str) -> type[Event]:
        try:
            return self._classes[type_name]
        except KeyError:
            raise UnknownEventType(type_name) from None

    def known(self, type_name: str) -> bool:
        return type_name in self._classes

    @property
    def type_names(self) -> frozenset[str]:
        return frozenset(self._classes)

    # -- encoding ---------------------------------------------------------------------------

    def encode(
        self, event: Event, keys: Mapping[str, bytes] | None = None
    ) -> tuple[str, int, bytes]:
        """``(type name, schema version, payload)`` of an event; its class must be registered.

        An event with personal fields is sealed with its subject's key from ``keys`` (the
        event store looks them up or makes them: see :meth:`keyed`); without its key it is
        refused, so that personal data is never stored in clear by mistake."""
        cls = type(event)
        name = cls.event_type()
        if self._classes.get(name) is not cls:
            raise UnknownEventType(name)
        personal = self._personal.get(cls)
        if personal is None:
            return name, cls.__schema_version__, _encoder.encode(event)
        subject = str(getattr(event, personal.subject))
        key = None if keys is None else keys.get(subject)
        if key is None:
            raise ConfigurationError(
                f"{name} holds personal data of {subject!r}: it is encoded with the subject's"
                " key, by an EventStore's append"
            )
        return name, cls.__schema_version__, _sealing.seal(event, personal, name, key)

    def encode_opened(self, event: Event) -> tuple[str, int, bytes]:
        """What a read gives for ``event`` once its personal fields are opened: for test
        kits that hand events to projections without a store. Never store it."""
        cls = type(event)
        name = cls.event_type()
        if self._classes.get(name) is not cls:
            raise UnknownEventType(name)
        return name, cls.__schema_version__, _encoder.encode(event)

    def keyed(self, events: Sequence[Event]) -> tuple[set[str], set[str]] | None:
        """The subjects whose keys an append of ``events`` seals with, and those it forgets
        (see :mod:`cqrskit.personal`); None, at the cost of a set lookup per event, when
        it does neither."""
        if not self._personal and not self._forgets:
            return None
        sealing: set[str] = set()
        forgotten: set[str] = set()
        for event in events:
            cls = type(event)
            personal = self._personal.get(cls)
            if personal is not None:
                sealing.add(str(getattr(event, personal.subject)))
            field = self._forgets.get(cls)
            if field is not None:
                forgotten.add(str(getattr(event, field)))
        return (sealing, forgotten) if sealing or forgotten else None

    def forgets_any(self, records: Sequence[RecordedEvent]) -> bool:
        """Does any of ``records`` forget a subject? (After such a batch the read database
        clears its files of what it deleted: :meth:`~cqrskit.ReadDatabase.scrub`.)"""
        forgetting = self._forgetting
        return bool(forgetting) and any(r.type in forgetting for r in records)

    @property
    def forgets(self) -> bool:
        """Is any registered event type one that forgets a subject?"""
        return bool(self._forgetting)

    def placeholders(self, type_name: str) -> Mapping[str, Any]:
        """What each personal field of a type reads as once its subject was forgotten."""
        return self._placeholders.get(type_name, _NONE)

    @staticmethod
    def encode_metadata(metadata: Metadata | None) -> bytes:
        return _EMPTY_METADATA if metadata is None else _encoder.encode(metadata)

    @staticmethod
    def decode_metadata(raw: bytes) -> Metadata:
        return _metadata_decoder.decode(raw)

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, record: RecordedEvent) -> Event:
        return self.decode_payload(record.type, record.schema_version, record.payload)

    def decode_payload(self, type_name: str, schema_version: int, payload: bytes) -> Event:
        decoder = self._decoders.get(type_name)
        if decoder is None:
            raise UnknownEventType(type_name)
        cls = self._classes[type_name]
        current = cls.__schema_version__
        try:
            if schema_version == current:
                return decoder.decode(payload)  # type: ignore[no-any-return]
            if schema_version > current:
                raise UpcastError(
                    f"event type {type_name!r}: stored schema v{schema_version} is newer than"
                    f" this code's v{current}"
                )
            data = _dict_decoder.decode(payload)
            for version in range(schema_version, current):
                step = self._upcasters.get((type_name, version))
                if step is None:
                    raise UpcastError(
                        f"event type {type_name!r}: no upcaster from v{version} to v{version + 1}"
                    )
                try:
                    data = step(data)
                except Exception as exc:
                    raise UpcastError(
                        f"event type {type_name!r}: upcaster v{version}->v{version + 1} failed:"
                        f" {exc!r}"
                    ) from exc
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise EventDecodeError(type_name, cls, str(exc)) from exc
        except msgspec.DecodeError as exc:
            raise EventDecodeError(type_name, cls, str(exc)) from exc
