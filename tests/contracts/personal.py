"""The contract of personal data in the event store (crypto-shredding, cqrskit.personal):
part of :class:`tests.contracts.eventstore.EventStoreContract`, run on every backend."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from cqrskit import (
    FORGOTTEN,
    Codec,
    ConcurrencyError,
    ConfigurationError,
    Event,
    EventStore,
    SubjectForgotten,
)
from cqrskit.eventstore import StreamAppend


@dataclass(frozen=True)
class Joined(Event):
    __data_subject__ = "member"
    __personal_fields__ = ("email", "nickname", "tags")
    member: str
    email: str
    nickname: str | None
    tags: list[str] | None = None
    plan: str = "free"


@dataclass(frozen=True)
class Renamed(Event):
    __event_type__ = "MemberRenamed"
    __schema_version__ = 2
    __data_subject__ = "member"
    __personal_fields__ = ("full_name",)
    member: str
    full_name: str | None


@dataclass(frozen=True)
class Left(Event):
    __forgets__ = "member"
    member: str


EMAIL = "ada@example.org"


def personal_codec() -> Codec:
    codec = Codec([Joined, Renamed, Left])

    @codec.upcaster("MemberRenamed", 1)
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:  # v1: first and last name
        first, last = data.pop("first"), data.pop("last")
        # Forgotten, an old version's personal field reads None: upcasters expect it.
        return {**data, "full_name": None if first is None else f"{first} {last}"}

    return codec


def _raw(record_payload: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(record_payload)
    return data


class PersonalDataContract:
    """Sealing, opening and forgetting, on every store (uses ``self.open(codec)``)."""

    # Given by EventStoreContract, which this suite is part of: a store on ``codec``.
    open: Callable[[Codec], Awaitable[EventStore]]

    async def test_personal_fields_are_stored_sealed_and_read_in_clear(self) -> None:
        store = await self.open(personal_codec())
        event = Joined("m-1", EMAIL, "ada", ["x"], plan="pro")
        await store.append("member-1", [event])
        (stored,) = await store.read_all(0, sealed=True)
        assert EMAIL.encode() not in stored.payload
        assert b'"ada"' not in stored.payload  # quoted: a random token may hold "ada"
        raw = _raw(stored.payload)
        assert raw["member"] == "m-1"
        assert raw["plan"] == "pro"
        assert "email" not in raw
        assert raw["$sealed"][:2] == ["m-1", ["email", "nickname", "tags"]]
        (opened,) = await store.read_all(0)
        assert store.codec.decode(opened) == event
        (loaded,) = await store.read_stream("member-1")
        assert store.codec.decode(loaded) == event
        assert (opened.position, opened.event_id) == (stored.position, stored.event_id)

    async def test_a_none_field_stays_none_and_unsealed(self) -> None:
        store = await self.open(personal_codec())
        await store.append("member-1", [Joined("m-1", EMAIL, None)])
        (stored,) = await store.read_all(0, sealed=True)
        assert _raw(stored.payload)["nickname"] is None
        assert store.codec.decode((await store.read_all(0))[0]).nickname is None

    async def test_each_subject_has_its_own_key_made_once(self) -> None:
        store = await self.open(personal_codec())
        await store.append("member-1", [Joined("m-1", EMAIL, None)])
        await store.append("member-1", [Renamed("m-1", "Ada L")])
        await store.append("member-2", [Joined("m-2", "bob@example.org", None)])
        keys = await store.keys.get_many(["m-1", "m-2", "m-3"])
        assert keys["m-1"] is not None
        assert keys["m-2"] is not None
        assert keys["m-3"] is None
        assert keys["m-1"] != keys["m-2"]
        events = [store.codec.decode(r) for r in await store.read_all(0)]
        assert [type(e) for e in events] == [Joined, Renamed, Joined]

    async def test_one_append_makes_the_first_keys_of_several_subjects(self) -> None:
        store = await self.open(personal_codec())
        joined = [Joined(f"m-{i}", f"m{i}@example.org", f"n{i}") for i in (1, 2, 3)]
        with pytest.raises(ConcurrencyError):  # not at version 5: neither events nor keys
            await store.append("club-1", joined, expected_version=5)
        assert set((await store.keys.get_many(["m-1", "m-2", "m-3"])).values()) == {None}
        await store.append("club-1", joined, expected_version=0)
        await store.append("club-2", [Renamed("m-4", "Dee")])  # one event, one first key
        keys = await store.keys.get_many(["m-1", "m-2", "m-3", "m-4"])
        assert None not in keys.values()
        assert len(set(keys.values())) == 4
        assert [store.codec.decode(r) for r in await store.read_stream("club-1")] == joined
        (renamed,) = await store.read_stream("club-2")
        assert store.codec.decode(renamed) == Renamed("m-4", "Dee")
        stored = (await store.read_all(0, sealed=True))[-1]
        assert b'"Dee"' not in stored.payload  # as stored: sealed
        assert _raw(stored.payload)["$sealed"][:2] == ["m-4", ["full_name"]]

    async def test_forgetting_destroys_the_key_in_the_append_and_leaves_placeholders(
        self,
    ) -> None:
        store = await self.open(personal_codec())
        await store.append("member-1", [Joined("m-1", EMAIL, "ada", ["x"])])
        await store.append("member-1", [Renamed("m-1", "Ada L")])
        await store.append("member-2", [Joined("m-2", "bob@example.org", "bob")])
        await store.append("member-1", [Left("m-1")])
        assert await store.keys.get("m-1") is None
        events = [store.codec.decode(r) for r in await store.read_all(0)]
        assert events == [
            Joined("m-1", FORGOTTEN, None, None),  # str: the placeholder; optional: None
            Renamed("m-1", None),
            Joined("m-2", "bob@example.org", "bob"),  # others intact
            Left("m-1"),
        ]
        assert [store.codec.decode(r) for r in await store.read_stream("member-1")] == [
            events[0],
            events[1],
            events[3],
        ]

    async def test_a_forgotten_subject_gets_no_new_key_and_nothing_is_stored(self) -> None:
        store = await self.open(personal_codec())
        await store.append("member-1", [Joined("m-1", EMAIL, None), Left("m-1")])
        head = await store.head_position()
        with pytest.raises(SubjectForgotten):
            await store.append("member-1", [Renamed("m-1", "again")])
        with pytest.raises(SubjectForgotten):
            await store.append_streams(
                [StreamAppend("other", [Joined("m-9", "x@y.z", None)]),
                 StreamAppend("member-1", [Renamed("m-1", "again")])]
            )  # fmt: skip
        assert await store.head_position() == head
        assert await store.keys.get("m-9") is None  # the failed append made no key
        with pytest.raises(SubjectForgotten):
            await store.keys.get_or_create("m-1")

    async def test_forgetting_a_subject_never_keyed_leaves_a_tombstone(self) -> None:
        store = await self.open(personal_codec())
        await store.append("member-5", [Left("m-5")])
        with pytest.raises(SubjectForgotten):
            await store.append("member-5", [Joined("m-5", EMAIL, None)])

    async def test_a_failed_append_makes_no_key(self) -> None:
        store = await self.open(personal_codec())
        await store.append("member-1", [Joined("m-1", EMAIL, None)])
        with pytest.raises(ConcurrencyError):
            await store.append("member-2", [Joined("m-2", EMAIL, None)], expected_version=3)
        assert (await store.keys.get_many(["m-2"]))["m-2"] is None
        await store.append("member-2", [Joined("m-2", EMAIL, None)])  # and it can go on
        assert await store.keys.get("m-2") is not None

    async def test_concurrent_first_appends_of_one_subject_share_one_key(self) -> None:
        store = await self.open(personal_codec())
        events = [Joined("m-1", f"ada{i}@example.org", None) for i in range(8)]
        await asyncio.gather(*(store.append(f"s-{i}", [e]) for i, e in enumerate(events)))
        decoded = [store.codec.decode(r) for r in await store.read_all(0)]
        assert sorted(e.email for e in decoded if isinstance(e, Joined)) == sorted(
            e.email for e in events
        )  # every one opens: none was sealed under a key that lost

    async def test_upcasters_see_the_opened_fields(self) -> None:
        old = Codec([Joined, Left])  # this codec's MemberRenamed is v1, a first and last name

        @dataclass(frozen=True)
        class RenamedV1(Event):
            __event_type__ = "MemberRenamed"
            __data_subject__ = "member"
            __personal_fields__ = ("first", "last")
            member: str
            first: str
            last: str

        old.register(RenamedV1)
        store = await self.open(old)
        await store.append("member-1", [RenamedV1("m-1", "Ada", "Lovelace")])
        await store.append("member-2", [RenamedV1("m-2", "Bob", "B"), Left("m-2")])
        store.codec = personal_codec()  # the next version of the code, on the same log
        first, second, _ = [store.codec.decode(r) for r in await store.read_all(0)]
        assert first == Renamed("m-1", "Ada Lovelace")
        assert second == Renamed("m-2", None)

    async def test_a_damaged_or_moved_token_reads_as_its_placeholder(self) -> None:
        store = await self.open(personal_codec())
        await store.append("member-1", [Joined("m-1", EMAIL, "ada"), Renamed("m-1", "Ada L")])
        joined, renamed = await store.read_all(0, sealed=True)
        raw = _raw(joined.payload)
        subject, fields, token = raw["$sealed"]
        damaged = bytearray(base64.b64decode(token))
        damaged[-1] ^= 1
        moved = _raw(renamed.payload)["$sealed"][2]  # another event's token
        key = await store.keys.get("m-1")
        for mark in (
            [subject, fields, base64.b64encode(bytes(damaged)).decode()],
            [subject, fields, moved],
            ["m-2", fields, token],  # another subject's, with m-1's key
        ):
            tampered = msgspec.structs.replace(
                joined, payload=json.dumps({**raw, "$sealed": mark}).encode()
            )
            (opened,) = store._opened([tampered], lambda subjects: dict.fromkeys(subjects, key))
            assert store.codec.decode(opened) == Joined("m-1", FORGOTTEN, None)

    async def test_the_codec_refuses_to_encode_personal_data_without_its_key(self) -> None:
        store = await self.open(personal_codec())
        with pytest.raises(ConfigurationError, match="personal data"):
            store.codec.encode(Joined("m-1", EMAIL, None))
