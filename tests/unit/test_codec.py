"""The codec: registration by type name, msgspec encoding, chained upcasting, its errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cqrskit import (
    Codec,
    ConfigurationError,
    Event,
    EventDecodeError,
    Metadata,
    RecordedEvent,
    UnknownEventType,
    UpcastError,
)


@dataclass(frozen=True)
class PostPublished(Event):
    post_id: str
    tags: list[str] = field(default_factory=list)
    at: datetime | None = None


@dataclass(frozen=True)
class Renamed(Event):
    __event_type__ = "user.renamed"
    __schema_version__ = 3
    full_name: str
    source: str = "unknown"


@dataclass(frozen=True)
class Unregistered(Event):
    x: int


def record(type_name: str, version: int, payload: bytes) -> RecordedEvent:
    return RecordedEvent(
        1, "s", 1, "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", type_name, version, payload, b"{}", 0.0
    )


# -- registration -------------------------------------------------------------------------------


def test_type_names_default_to_the_class_name_or_take_the_override() -> None:
    codec = Codec([PostPublished, Renamed])
    assert codec.type_names == frozenset({"PostPublished", "user.renamed"})
    assert codec.class_for("user.renamed") is Renamed
    assert codec.known("PostPublished")
    assert not codec.known("Renamed")


def test_registering_the_same_class_twice_is_harmless() -> None:
    codec = Codec([PostPublished])
    assert codec.register(PostPublished) is PostPublished
    assert codec.type_names == frozenset({"PostPublished"})


def test_two_classes_under_one_type_name_is_a_configuration_error() -> None:
    @dataclass(frozen=True)
    class Impostor(Event):
        __event_type__ = "PostPublished"
        post_id: str

    codec = Codec([PostPublished])
    with pytest.raises(ConfigurationError, match="'PostPublished' is already registered"):
        codec.register(Impostor)
    assert codec.class_for("PostPublished") is PostPublished


def test_class_for_an_unknown_name_raises_unknown_event_type() -> None:
    with pytest.raises(UnknownEventType, match="'Nope'") as info:
        Codec().class_for("Nope")
    assert info.value.type_name == "Nope"


def test_an_upcaster_step_is_registered_once() -> None:
    codec = Codec([Renamed])

    @codec.upcaster("user.renamed", 1)
    def step(data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(ConfigurationError, match="v1 already exists"):
        codec.add_upcaster("user.renamed", 1, step)


# -- encoding -----------------------------------------------------------------------------------


def test_encode_gives_type_version_and_json_payload() -> None:
    codec = Codec([PostPublished, Renamed])
    at = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    name, version, payload = codec.encode(PostPublished("p1", ["a", "b"], at))
    assert (name, version) == ("PostPublished", 1)
    assert json.loads(payload) == {
        "post_id": "p1",
        "tags": ["a", "b"],
        "at": "2024-05-01T12:30:00Z",
    }
    assert codec.encode(Renamed("Ada"))[:2] == ("user.renamed", 3)


def test_encoding_an_unregistered_class_raises_unknown_event_type() -> None:
    with pytest.raises(UnknownEventType, match="'Unregistered'"):
        Codec([PostPublished]).encode(Unregistered(1))


def test_encoding_a_class_that_only_shares_the_registered_name_fails() -> None:
    @dataclass(frozen=True)
    class PostPublished(Event):  # same name, another class
        post_id: str

    with pytest.raises(UnknownEventType):
        Codec([globals()["PostPublished"]]).encode(PostPublished("p"))


def test_metadata_round_trips_and_defaults_to_empty() -> None:
    meta = Metadata(correlation_id="c", causation_id="k", extra={"ip": "127.0.0.1"})
    assert Codec.decode_metadata(Codec.encode_metadata(meta)) == meta
    assert Codec.decode_metadata(Codec.encode_metadata(None)) == Metadata()


# -- decoding -----------------------------------------------------------------------------------


def test_decode_round_trips() -> None:
    codec = Codec([PostPublished, Renamed])
    events: list[Event] = [
        PostPublished("p1", ["x"], datetime(2024, 1, 2, tzinfo=UTC)),
        PostPublished("p2"),
        Renamed("Grace Hopper", "import"),
    ]
    for event in events:
        name, version, payload = codec.encode(event)
        assert codec.decode(record(name, version, payload)) == event


@given(post_id=st.text(), tags=st.lists(st.text(), max_size=5))
def test_decode_inverts_encode(post_id: str, tags: list[str]) -> None:
    codec = Codec([PostPublished])
    event = PostPublished(post_id, tags)
    assert codec.decode_payload(*codec.encode(event)) == event


def test_decoding_an_unknown_type_raises_unknown_event_type() -> None:
    with pytest.raises(UnknownEventType, match="'Gone'"):
        Codec([PostPublished]).decode(record("Gone", 1, b"{}"))


@pytest.mark.parametrize(
    "payload",
    [b"not json", b'{"post_id": 5}', b"{}", b'{"post_id": "p", "tags": "nope"}'],
)
def test_a_payload_that_does_not_fit_is_an_event_decode_error(payload: bytes) -> None:
    with pytest.raises(EventDecodeError) as info:
        Codec([PostPublished]).decode(record("PostPublished", 1, payload))
    assert info.value.type_name == "PostPublished"
    assert info.value.cls is PostPublished
    assert "'PostPublished'" in str(info.value)
    assert "test_codec.PostPublished" in str(info.value)


# -- upcasting ----------------------------------------------------------------------------------


def upcasting_codec(calls: list[int]) -> Codec:
    codec = Codec([Renamed])

    @codec.upcaster("user.renamed", 1)
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return {"full_name": f"{data['first']} {data['last']}"}

    @codec.upcaster("user.renamed", 2)
    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(2)
        return {**data, "source": "upcast"}

    return codec


def test_an_old_payload_runs_the_chain_in_order() -> None:
    calls: list[int] = []
    codec = upcasting_codec(calls)
    event = codec.decode(record("user.renamed", 1, b'{"first": "Ada", "last": "Lovelace"}'))
    assert event == Renamed("Ada Lovelace", "upcast")
    assert calls == [1, 2]


def test_the_chain_starts_at_the_stored_version() -> None:
    calls: list[int] = []
    codec = upcasting_codec(calls)
    assert codec.decode(record("user.renamed", 2, b'{"full_name": "Ada"}')) == Renamed(
        "Ada", "upcast"
    )
    assert calls == [2]
    calls.clear()
    assert codec.decode(record("user.renamed", 3, b'{"full_name": "Ada"}')) == Renamed("Ada")
    assert calls == []


def test_a_missing_step_is_an_upcast_error_naming_type_and_versions() -> None:
    codec = Codec([Renamed])
    codec.add_upcaster("user.renamed", 1, lambda d: d)
    with pytest.raises(UpcastError, match=r"'user.renamed': no upcaster from v2 to v3"):
        codec.decode(record("user.renamed", 1, b'{"full_name": "A"}'))


def test_a_stored_version_newer_than_the_class_is_an_upcast_error() -> None:
    with pytest.raises(UpcastError, match="stored schema v4 is newer than this code's v3"):
        Codec([Renamed]).decode(record("user.renamed", 4, b'{"full_name": "A"}'))


def test_a_failing_upcaster_is_an_upcast_error_with_its_cause() -> None:
    codec = upcasting_codec([])
    with pytest.raises(UpcastError, match=r"upcaster v1->v2 failed") as info:
        codec.decode(record("user.renamed", 1, b'{"first": "Ada"}'))
    assert isinstance(info.value.__cause__, KeyError)


def test_an_upcaster_output_that_does_not_fit_is_an_event_decode_error() -> None:
    codec = Codec([Renamed])
    codec.add_upcaster("user.renamed", 1, lambda d: d)
    codec.add_upcaster("user.renamed", 2, lambda d: {"full_name": 42})
    with pytest.raises(EventDecodeError, match=r"'user\.renamed'"):
        codec.decode(record("user.renamed", 1, b"{}"))


def test_an_old_payload_that_is_not_an_object_is_an_event_decode_error() -> None:
    codec = upcasting_codec([])
    with pytest.raises(EventDecodeError):
        codec.decode(record("user.renamed", 1, b"[1, 2]"))


# -- the envelope -------------------------------------------------------------------------------


def test_recorded_event_exposes_uuid_and_datetime() -> None:
    r = record("x", 1, b"{}")
    assert str(r.uuid) == r.event_id
    assert r.recorded_datetime == datetime(1970, 1, 1, tzinfo=UTC)
