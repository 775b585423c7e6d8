"""Sealing personal fields into payloads and opening them again (see :mod:`cqrskit.personal`).

The event store calls these around its I/O: :func:`seal` while encoding an append (with
the keys it looked up or made), :func:`open_records` on what a read returned (with a
function that looks keys up on the read's own connection, so a batch costs one more query
when, and only when, it holds sealed fields).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from ._cipher import Cipher
from .messages import Event, RecordedEvent
from .personal import PersonalFields

__all__ = ["MARK", "KeyLookup", "is_sealed", "open_records", "seal"]

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
    Returns ``records`` itself when none is sealed: the common batch costs one scan."""
    # (record index, its fields, [(field, subject, token)]): one pass over the fields.
    sealed: list[tuple[int, dict[str, Any], list[tuple[str, str, str]]]] = []
    subjects: set[str] = set()
    for i, record in enumerate(records):
        if _MARK not in record.payload:
            continue
        data = _dict.decode(record.payload)
        marks = []
        for field, value in data.items():
            if type(value) is dict and (pair := _pair(value)) is not None:
                marks.append((field, *pair))
                subjects.add(pair[0])
        sealed.append((i, data, marks))
    if not sealed:
        return records
    keys = lookup(subjects) if subjects else {}
    opened = list(records)
    failed = 0
    for i, data, marks in sealed:
        record = records[i]
        defaults = placeholders(record.type)
        for field, subject, token in marks:
            key = keys.get(subject)
            plain = None
            if key is not None:
                plain = Cipher.of(key).open(token, _associated(record.type, field, subject))
                failed += plain is None
            data[field] = defaults.get(field) if plain is None else _decode(plain)
        opened[i] = msgspec.structs.replace(record, payload=_encoder.encode(data))
    if failed:
        log.warning("%d sealed field(s) did not open with their key: read as placeholders", failed)
    return opened


_decode = msgspec.json.decode


def _pair(value: dict[str, Any]) -> tuple[str, str] | None:
    """``(subject, token)`` of a sealed field's value; None for any other dict."""
    pair = value.get(MARK)
    if (
        type(pair) is list
        and len(value) == 1
        and len(pair) == 2
        and type(pair[0]) is str
        and type(pair[1]) is str
    ):
        return pair[0], pair[1]
    return None
