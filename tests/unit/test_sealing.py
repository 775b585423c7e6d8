"""Sealing and opening payloads (cqrskit._sealing): an event opens to itself whatever its
other fields hold, through the byte-level splice of the compact form and through the dict
of any other form (spaced, reordered) alike."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from dataclasses import dataclass

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from cqrskit import FORGOTTEN, Codec, Event, RecordedEvent
from cqrskit._sealing import ReadKeys, open_records, seal
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
    lookalike = ',"$sealed":["w",["email"],"AAAA"]}'
    event = Noted("w", lookalike, "a@b.c")
    payload = seal(event, SPEC, "Noted", KEY)
    assert payload.count(b'"$sealed"') == 1
    assert opened(payload) == event


def test_one_token_seals_the_fields_that_are_not_none() -> None:
    assert SPEC is not None
    raw = msgspec.json.decode(seal(Noted("w", "n", "a@b.c"), SPEC, "Noted", KEY))
    assert list(raw) == ["who", "note", "extra", "$sealed"]  # the mark last, email gone
    subject, fields, token = raw["$sealed"]
    assert (subject, fields, raw["extra"]) == ("w", ["email"], None)
    assert b"a@b.c" not in base64.b64decode(token)
    first = seal(Noted("w", "n", "a@b.c"), SPEC, "Noted", KEY)
    assert first != seal(Noted("w", "n", "a@b.c"), SPEC, "Noted", KEY)  # a fresh nonce


@given(spaced=st.booleans(), reordered=st.booleans())
def test_any_json_form_opens_as_the_compact_one(spaced: bool, reordered: bool) -> None:
    assert SPEC is not None
    event = Noted("w", "n", "a@b.c", {"k": "v"})
    data = msgspec.json.decode(seal(event, SPEC, "Noted", KEY))
    other = json.dumps(data, indent=2 if spaced else None, sort_keys=reordered).encode()
    assert opened(other) == event
    assert opened(other, None) == Noted("w", "n", FORGOTTEN, None)


def test_a_subject_with_escapes_opens() -> None:
    assert SPEC is not None
    event = Noted('a"b\\c', "n", "a@b.c")
    payload = seal(event, SPEC, "Noted", KEY)
    (result,) = open_records([record(payload)], lambda s: dict.fromkeys(s, KEY), CODEC.placeholders)
    assert CODEC.decode(result) == event


def test_kept_keys_serve_reads_until_a_count_of_destroyed_keys_rises() -> None:
    kept = ReadKeys()
    asked: list[list[str]] = []
    database: dict[str, bytes | None] = {"a": b"ka", "b": b"kb", "gone": None}

    def fetch(subjects: Collection[str]) -> dict[str, bytes | None]:
        asked.append(sorted(subjects))
        return {s: database[s] for s in subjects if s in database}

    assert kept.lookup(["a", "gone", "never"], 3, fetch) == {"a": b"ka", "gone": None}
    assert kept.lookup(["a", "b"], 3, fetch) == {"a": b"ka", "b": b"kb"}
    assert asked == [["a", "gone", "never"], ["b"]]  # a kept; a tombstone is never kept
    assert kept.lookup(["a", "b"], 2, fetch) == {"a": b"ka", "b": b"kb"}
    assert asked[-1] == ["a", "b"]  # an older snapshot than the kept keys: the database
    database["a"] = None
    assert kept.lookup(["a", "b"], 4, fetch) == {"a": None, "b": b"kb"}
    assert asked[-1] == ["a", "b"]  # a key was destroyed: all asked again


def test_kept_keys_are_bounded() -> None:
    kept = ReadKeys()
    kept.MAX = 3

    def fetch(subjects: Collection[str]) -> dict[str, bytes | None]:
        return dict.fromkeys(subjects, b"k")

    kept.lookup(["a", "b", "c"], 0, fetch)
    kept.lookup(["d"], 0, fetch)
    assert set(kept._keys) == {"d"}
