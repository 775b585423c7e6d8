"""Sealing personal fields into payloads and opening them again (see :mod:`cqrskit.personal`).

The event store calls these around its I/O: :func:`seal` while encoding an append (with
the keys it looked up or made), :func:`open_records` on what a read returned (with a
function that looks keys up on the read's own connection, so a batch costs one more query
when, and only when, it holds sealed fields).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from ._cipher import Cipher
from .messages import Event, RecordedEvent
from .personal import PersonalFields

__all__ = ["MARK", "KeyLookup", "SealKeys", "is_sealed", "open_records", "seal"]

log = logging.getLogger("cqrskit.personal")

MARK = "$sealed"
_MARK = b'"$sealed"'
"""The mark as it appears in a payload's JSON. A string value holding it would have its
quotes escaped (``\\"$sealed\\"``), so only a sealed field (or a key so named) matches."""

_encoder = msgspec.json.Encoder()
_dict = msgspec.json.Decoder(dict[str, Any])

KeyLookup = Callable[[Collection[str]], Mapping[str, bytes | None]]
"""Subjects -> their keys (None, or absent: none, or forgotten)."""


def _associated(type_name: str, field: str, subject: str) -> bytes:
    return f"{type_name}\x00{field}\x00{subject}".encode()


def is_sealed(payload: bytes) -> bool:
    return _MARK in payload


def seal(event: Event, spec: PersonalFields, type_name: str, key: bytes) -> bytes:
    """The payload of ``event`` with its personal fields sealed with ``key``."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    subject = str(data[spec.subject])
    cipher = Cipher.of(key)
    fields = [f for f in spec.fields if data[f] is not None]
    nonces = Cipher.nonces(len(fields))  # one system call for the event, not one per field
    for n, field in enumerate(fields):
        plain = _encoder.encode(data[field])
        token = cipher.seal(plain, _associated(type_name, field, subject), nonces[n])
        data[field] = {MARK: [subject, token]}
    return _encoder.encode(data)


def open_records(
    records: list[RecordedEvent],
    lookup: KeyLookup,
    placeholders: Callable[[str], Mapping[str, Any]],
) -> list[RecordedEvent]:
    """``records`` with every sealed field opened, or replaced by its placeholder
    (``placeholders(type_name)`` gives a type's; a field it does not name reads None).
    Returns ``records`` itself when none is sealed: the common batch costs one scan.

    The payload is edited as bytes: each sealed value ``{"$sealed":[subject,token]}`` is
    replaced by the plaintext, which is the value's JSON. Decoding the payload to a dict
    and encoding it again cost more than the decryption. The pattern cannot match inside
    a string value: every quote there is escaped."""
    # (record index, [(sealed value, its subject)]): each subject decoded once.
    found: list[tuple[int, list[tuple[re.Match[bytes], str]]]] = []
    subjects: set[str] = set()
    for i, record in enumerate(records):
        if _MARK not in record.payload:
            continue
        marks = [(mark, _text(mark[1])) for mark in _SEALED.finditer(record.payload)]
        subjects.update(subject for _, subject in marks)
        found.append((i, marks))
    if not found:
        return records
    keys = lookup(subjects) if subjects else {}
    opened = list(records)
    failed = 0
    for i, marks in found:
        record = records[i]
        payload = record.payload
        parts: list[bytes] = []
        done = 0
        defaults: Mapping[str, Any] | None = None
        for mark, subject in marks:
            field = _field_of(payload, mark.start())
            key = keys.get(subject)
            plain = None
            if key is not None:
                plain = Cipher.of(key).open(
                    mark[2].decode("ascii"), _associated(record.type, field, subject)
                )
                failed += plain is None
            if plain is None:
                if defaults is None:
                    defaults = placeholders(record.type)
                plain = _encoder.encode(defaults.get(field))
            parts += (payload[done : mark.start()], plain)
            done = mark.end()
        parts.append(payload[done:])
        opened[i] = msgspec.structs.replace(record, payload=b"".join(parts))
    if failed:
        log.warning("%d sealed field(s) did not open with their key: read as placeholders", failed)
    return opened


_SEALED = re.compile(
    rb'\{\s*"\$sealed"\s*:\s*\[\s*"((?:[^"\\]|\\.)*)"\s*,\s*"([A-Za-z0-9+/=]*)"\s*\]\s*\}'
)
"""A sealed value, ``{"$sealed":["subject","token"]}``: groups 1 the subject (JSON string
content), 2 the token. Starting with ``{`` lets the engine skip to the few braces."""


def _field_of(payload: bytes, value_at: int) -> str:
    """The name of the field whose value starts at ``value_at``: the string before its
    colon (a dataclass field's name holds no quote nor backslash)."""
    colon = payload.rfind(b":", 0, value_at)
    end = payload.rfind(b'"', 0, colon)
    return payload[payload.rfind(b'"', 0, end) + 1 : end].decode()


def _text(raw: bytes) -> str:
    """A JSON string's content (as the regular expression caught it) as text."""
    if b"\\" not in raw:
        return raw.decode()
    text: str = _decode(b'"' + raw + b'"')
    return text


_decode = msgspec.json.decode


class SealKeys:
    """The keys an event store keeps at hand to seal with (see ``_existing_keys`` in
    :mod:`cqrskit.eventstore`), bounded: emptied when it holds :attr:`MAX`."""

    MAX = 10_000

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    def known(self, subjects: Collection[str]) -> dict[str, bytes]:
        keys = self._keys
        return {s: k for s in subjects if (k := keys.get(s)) is not None}

    def remember(self, keys: Mapping[str, bytes | None]) -> None:
        if len(self._keys) >= self.MAX:
            self._keys.clear()
        self._keys.update((s, k) for s, k in keys.items() if k is not None)

    def drop(self, subjects: Collection[str]) -> None:
        for subject in subjects:
            self._keys.pop(subject, None)
