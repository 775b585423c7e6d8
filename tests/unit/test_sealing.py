"""Sealing and opening payloads (cqrskit._sealing): the byte-level opening finds exactly the
sealed values, whatever the other fields hold and however the JSON is spaced."""

from __future__ import annotations

import json
from dataclasses import dataclass

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from cqrskit import FORGOTTEN, Codec, Event, RecordedEvent
from cqrskit._sealing import open_records, seal
from cqrskit.keystore import new_key
from cqrskit.personal import personal_fields


@dataclass(frozen=True)
class Noted(Event):
    __data_subject__ = "who"
    __personal_fields__ = ("email", "extra")
    who: str
    note: str
    email: str
    extra: dict[str, str] | None = None


CODEC = Codec([Noted])
SPEC = personal_fields(Noted)
KEY = new_key()


def record(payload: bytes) -> RecordedEvent:
    return RecordedEvent(1, "s", 1, "e", "Noted", 1, payload, b"{}", 0.0)


def opened(payload: bytes, key: bytes | None = KEY) -> Noted:
    (result,) = open_records([record(payload)], lambda s: {"w": key}, CODEC.placeholders)
    event = CODEC.decode(result)
    assert isinstance(event, Noted)
    return event


@given(
    note=st.text(),
    email=st.text(),
    extra=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
def test_what_is_sealed_opens_to_itself_and_the_rest_is_untouched(
    note: str, email: str, extra: dict[str, str] | None
) -> None:
    assert SPEC is not None
    event = Noted("w", note, email, extra)
    payload = seal(event, SPEC, "Noted", KEY)
    assert opened(payload) == event
    assert opened(payload, None) == Noted("w", note, FORGOTTEN, None)


def test_a_note_that_looks_sealed_is_text_not_a_sealed_value() -> None:
    assert SPEC is not None
    lookalike = '"email":{"$sealed":["w","AAAA"]}'
    event = Noted("w", lookalike, "a@b.c")
    assert opened(seal(event, SPEC, "Noted", KEY)) == event


def test_spaced_json_opens_too() -> None:
    assert SPEC is not None
    compact = seal(Noted("w", "n", "a@b.c", {"k": "v"}), SPEC, "Noted", KEY)
    spaced = json.dumps(msgspec.json.decode(compact), indent=2).encode()
    assert opened(spaced) == Noted("w", "n", "a@b.c", {"k": "v"})
