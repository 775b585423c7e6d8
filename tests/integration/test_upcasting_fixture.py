"""Events stored by older code (tests/fixtures/old_events.db, made by make_old_events.py)
decode with today's class through a chain of upcasters; the stored bytes never change."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cqrskit import (
    Codec,
    Event,
    EventDecodeError,
    RecordedEvent,
    UnknownEventType,
    UpcastError,
)
from cqrskit.backends.sqlite import SqliteEventStore

FIXTURE = Path(__file__).parent.parent / "fixtures" / "old_events.db"


@dataclass(frozen=True)
class UserRegistered(Event):
    """Today's v3: v2 split ``name`` in two, v3 added ``newsletter`` (default False)."""

    __schema_version__ = 3
    user_id: str
    first_name: str
    last_name: str
    email: str
    newsletter: bool = False


def split_name(data: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2: ``name`` becomes ``first_name`` and ``last_name`` (split at the first space)."""
    data = dict(data)
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first_name": first, "last_name": last}


def add_newsletter(data: dict[str, Any]) -> dict[str, Any]:
    """v2 -> v3: the new field takes the class default; nothing to compute."""
    return data


def v3_codec(*, with_last_step: bool = True) -> Codec:
    codec = Codec([UserRegistered])
    codec.add_upcaster("UserRegistered", 1, split_name)
    if with_last_step:
        codec.add_upcaster("UserRegistered", 2, add_newsletter)
    return codec


EXPECTED = [
    UserRegistered("u1", "Ada", "Lovelace", "u1@example.com"),
    UserRegistered("u2", "Grace", "Brewster Hopper", "u2@example.com"),
    UserRegistered("u3", "Plato", "", "u3@example.com"),
    UserRegistered("u4", "Alan", "Turing", "u4@example.com"),
    UserRegistered("u5", "Barbara", "Liskov", "u5@example.com"),
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A copy of the fixture: opening a store may add WAL files; the committed file stays as is."""
    copy = tmp_path / "old_events.db"
    shutil.copyfile(FIXTURE, copy)
    return copy


def stored_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT position, type, schema_version, payload, event_id FROM events ORDER BY position"
        ).fetchall()
    finally:
        conn.close()


async def read_fixture(path: Path, codec: Codec) -> list[RecordedEvent]:
    store = await SqliteEventStore.open(path, codec)
    try:
        return await store.read_all(0, limit=100)
    finally:
        await store.close()


def test_the_fixture_holds_old_schema_versions() -> None:
    rows = stored_rows(FIXTURE)
    assert [(r[1], r[2]) for r in rows] == [
        ("UserRegistered", 1),
        ("UserRegistered", 1),
        ("UserRegistered", 1),
        ("LegacyPing", 1),
        ("UserRegistered", 2),
        ("UserRegistered", 2),
    ]
    assert FIXTURE.stat().st_size < 32 * 1024


async def test_old_events_decode_through_the_upcaster_chain(db: Path) -> None:
    fixture_digest = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    before = stored_rows(db)
    codec = v3_codec()
    records = await read_fixture(db, codec)
    users = [codec.decode(r) for r in records if r.type == "UserRegistered"]
    assert users == EXPECTED
    # Appending today's version next to them stores v3, and rewrites none of the old ones.
    store = await SqliteEventStore.open(db, codec)
    try:
        await store.append("user-u6", [UserRegistered("u6", "Edsger", "Dijkstra", "u6@x", True)])
    finally:
        await store.close()
    after = stored_rows(db)
    assert after[: len(before)] == before
    assert after[-1][1:3] == ("UserRegistered", 3)
    assert hashlib.sha256(FIXTURE.read_bytes()).hexdigest() == fixture_digest


async def test_a_missing_upcaster_step_names_the_type_and_version(db: Path) -> None:
    codec = v3_codec(with_last_step=False)
    records = await read_fixture(db, codec)
    for record in (records[0], records[4]):  # a v1 and a v2 event both need step v2 -> v3
        with pytest.raises(UpcastError, match=r"'UserRegistered': no upcaster from v2 to v3"):
            codec.decode(record)


async def test_a_failing_upcaster_is_an_upcast_error(db: Path) -> None:
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("name")

    codec = Codec([UserRegistered])
    codec.add_upcaster("UserRegistered", 1, broken)
    codec.add_upcaster("UserRegistered", 2, add_newsletter)
    records = await read_fixture(db, codec)
    with pytest.raises(UpcastError, match=r"'UserRegistered': upcaster v1->v2 failed") as info:
        codec.decode(records[0])
    assert isinstance(info.value.__cause__, KeyError)
    assert codec.decode(records[4]) == EXPECTED[3]  # v2 events skip the broken step


async def test_a_stored_version_newer_than_the_code_is_an_upcast_error(db: Path) -> None:
    @dataclass(frozen=True)
    class OldUserRegistered(Event):
        __event_type__ = "UserRegistered"
        user_id: str
        name: str
        email: str

    codec = Codec([OldUserRegistered])
    records = await read_fixture(db, codec)
    assert codec.decode(records[0]) == OldUserRegistered("u1", "Ada Lovelace", "u1@example.com")
    with pytest.raises(UpcastError, match="stored schema v2 is newer than this code's v1"):
        codec.decode(records[4])


async def test_an_unknown_type_name_is_named(db: Path) -> None:
    codec = v3_codec()
    records = await read_fixture(db, codec)
    with pytest.raises(UnknownEventType, match="'LegacyPing'") as info:
        codec.decode(records[3])
    assert info.value.type_name == "LegacyPing"


async def test_a_payload_that_does_not_fit_names_type_and_class(db: Path) -> None:
    @dataclass(frozen=True)
    class UserRegisteredWithAge(Event):
        __event_type__ = "UserRegistered"
        __schema_version__ = 2
        user_id: str
        age: int

    codec = Codec([UserRegisteredWithAge])
    codec.add_upcaster("UserRegistered", 1, split_name)
    records = await read_fixture(db, codec)
    for record in (records[0], records[4]):  # through the upcaster, and as stored
        with pytest.raises(EventDecodeError) as info:
            codec.decode(record)
        assert info.value.type_name == "UserRegistered"
        assert info.value.cls is UserRegisteredWithAge
        assert "'UserRegistered'" in str(info.value)
        assert "UserRegisteredWithAge" in str(info.value)
        assert "age" in str(info.value)
