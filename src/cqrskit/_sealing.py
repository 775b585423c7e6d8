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
    cipher = Cipher(key)
    for field in spec.fields:
        value = data[field]
        if value is not None:
            token = cipher.seal(_encoder.encode(value), _associated(type_name, field, subject))
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
    sealed: list[tuple[int, dict[str, Any]]] = []
    for i, record in enumerate(records):
        if _MARK in record.payload:
            sealed.append((i, _dict.decode(record.payload)))
    if not sealed:
        return records
    subjects = {v[MARK][0] for _, data in sealed for v in data.values() if _is_mark(v)}
    keys = lookup(subjects) if subjects else {}
    ciphers: dict[str, Cipher | None] = {}
    opened = list(records)
    failed = 0
    for i, data in sealed:
        record = records[i]
        defaults = placeholders(record.type)
        for field, value in data.items():
            if not _is_mark(value):
                continue
            subject, token = value[MARK]
            if subject in ciphers:
                cipher = ciphers[subject]
            else:
                key = keys.get(subject)
                cipher = ciphers[subject] = None if key is None else Cipher(key)
            plain = None
            if cipher is not None:
                plain = cipher.open(token, _associated(record.type, field, subject))
                failed += plain is None
            data[field] = defaults.get(field) if plain is None else msgspec.json.decode(plain)
        opened[i] = msgspec.structs.replace(record, payload=_encoder.encode(data))
    if failed:
        log.warning("%d sealed field(s) did not open with their key: read as placeholders", failed)
    return opened


def _is_mark(value: Any) -> bool:
    return (
        type(value) is dict
        and len(value) == 1
        and type(pair := value.get(MARK)) is list
        and len(pair) == 2
        and all(type(part) is str for part in pair)
    )
