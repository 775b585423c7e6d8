"""The relay without a broker: the message format, the names, and the loop against the
in-memory publisher (which keeps JetStream's guard: a message is stored only right after the
one it was published after)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import pytest

from cqrskit import Codec, ConfigurationError, Metadata, RecordedEvent
from cqrskit.backends.memory import LeaseRegistry, MemoryEventStore, MemoryLease
from cqrskit.relay import (
    MemoryPublisher,
    Relay,
    RelayMessage,
    RelayStatus,
    StreamEnd,
    StreamMoved,
    check_nats_url,
    check_stream_name,
    check_subject_prefix,
    default_stream,
    position_of,
    prometheus_text,
    subject_for,
    to_message,
)
from tests.integration._relay_app import Noted, Renamed, Tagged, _title_to_name, event

PREFIX = "app.events"


def codec() -> Codec:
    c = Codec([Noted, Renamed, Tagged])
    c.add_upcaster("Renamed", 1, _title_to_name)
    return c


def record(position: int, type_name: str, payload: bytes, schema_version: int = 1) -> RecordedEvent:
    return RecordedEvent(
        position=position,
        stream_id="note-1",
        stream_version=position,
        event_id=f"id-{position}",
        type=type_name,
        schema_version=schema_version,
        payload=payload,
        metadata=Codec.encode_metadata(Metadata(correlation_id="c1", extra={"k": "v"})),
        recorded_at=1_700_000_000.25,
    )


# -- the message ----------------------------------------------------------------------------


def test_a_message_carries_the_event_its_id_and_its_place_in_the_log() -> None:
    message = to_message(record(42, "Noted", b'{"n":1,"text":"hi"}'), codec(), PREFIX)
    assert message.subject == "app.events.Noted"
    assert message.event_id == "id-42"
    assert message.position == 42
    body = json.loads(message.body)
    assert body == {
        "id": "id-42",
        "type": "Noted",
        "stream_id": "note-1",
        "version": 42,
        "position": 42,
        "recorded_at": "2023-11-14T22:13:20.250000+00:00",
        "schema_version": 1,
        "data": {"n": 1, "text": "hi"},
        "metadata": {"correlation_id": "c1", "causation_id": None, "extra": {"k": "v"}},
    }
    assert datetime.fromisoformat(body["recorded_at"]).timestamp() == 1_700_000_000.25
    assert position_of(message.body) == 42


def test_an_old_schema_is_published_upcast_and_an_unknown_type_as_stored() -> None:
    old = to_message(record(1, "Renamed", b'{"n":3,"title":"t"}', schema_version=1), codec(), "p")
    assert json.loads(old.body)["data"] == {"n": 3, "name": "t"}
    assert json.loads(old.body)["schema_version"] == 2
    unknown = to_message(record(2, "Gone", b'{"x":[1,2]}', schema_version=4), codec(), "p")
    assert json.loads(unknown.body)["data"] == {"x": [1, 2]}
    assert json.loads(unknown.body)["schema_version"] == 4
    broken = to_message(record(3, "Renamed", b'{"n":"three"}', schema_version=1), codec(), "p")
    assert json.loads(broken.body)["data"] == {"n": "three"}  # cannot upcast: as stored
    assert json.loads(broken.body)["schema_version"] == 1


def test_subjects_and_names() -> None:
    assert subject_for("social.events", "UserRegistered") == "social.events.UserRegistered"
    assert subject_for("p", "notes.Tagged v2") == "p.notes_Tagged_v2"
    assert subject_for("p", "a>*") == "p.a__"
    assert default_stream("SocialApp") == "SOCIAL"
    assert default_stream("Todo") == "TODO"
    assert default_stream("App") == "APP"
    assert check_stream_name("SOCIAL_2-b") == "SOCIAL_2-b"
    assert check_subject_prefix("social.events") == "social.events"
    assert check_nats_url("nats://a:4222,nats://b:4222").startswith("nats://a")
    for bad in ("SO.CIAL", "SO CIAL", "", "a*"):
        with pytest.raises(ConfigurationError):
            check_stream_name(bad)
    for bad in ("social.>", "a..b", ".a", "a b", ""):
        with pytest.raises(ConfigurationError):
            check_subject_prefix(bad)
    for bad in ("127.0.0.1:4222", "http://x", "nats://"):
        with pytest.raises(ConfigurationError):
            check_nats_url(bad)


def test_the_gauges() -> None:
    status = RelayStatus("S", 10, 12, 2, 0.5, "relaying")
    text = prometheus_text(status, published=7)
    assert 'cqrskit_relay_lag_events{stream="S"} 2' in text
    assert 'cqrskit_relay_lag_seconds{stream="S"} 0.5' in text
    assert 'cqrskit_relay_active{stream="S"} 1' in text
    assert 'cqrskit_relay_published_total{stream="S"} 7' in text
    unknown = prometheus_text(RelayStatus("S", None, 12, None, None, "waiting"))
    assert "cqrskit_relay_lag_events{" not in unknown
    assert 'cqrskit_relay_active{stream="S"} 0' in unknown
    assert status.line() == "relay S: relaying, position 10 of 12, 2 events (0.50s) behind"


# -- the in-memory publisher keeps the broker's guard ---------------------------------------


def messages(first: int, count: int) -> list[RelayMessage]:
    return [to_message(record(p, "Noted", b'{"n":0,"text":""}'), codec(), PREFIX)
            for p in range(first, first + count)]  # fmt: skip


async def test_a_message_is_stored_only_where_the_stream_ended() -> None:
    publisher = MemoryPublisher()
    end = await publisher.publish(messages(1, 3), StreamEnd())
    assert end == StreamEnd(3, 3) == await publisher.end()
    with pytest.raises(StreamMoved):
        await publisher.publish(messages(3, 2), StreamEnd(2, 2))  # a stale relay
    assert len(publisher.stored) == 3


# -- the loop -------------------------------------------------------------------------------


async def fill(store: MemoryEventStore, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        await store.append(f"note-{n % 5}", [event(n)])


def positions(stored: Sequence[RelayMessage]) -> list[int]:
    return [position_of(m.body) for m in stored]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 (a state to watch, no event to wait on)
            await asyncio.sleep(0.005)


async def test_the_relay_publishes_the_log_in_order_and_follows_it() -> None:
    store = MemoryEventStore(codec())
    await fill(store, 120)
    publisher = MemoryPublisher()
    states: list[str] = []
    relay = Relay(store, publisher, PREFIX, batch_size=50, on_state=lambda s, _: states.append(s))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await until(lambda: len(publisher.stored) == 120)
    await fill(store, 30, start=120)
    await until(lambda: len(publisher.stored) == 150)
    status = await relay.status()
    assert (status.position, status.head, status.lag_events, status.state) == (
        150,
        150,
        0,
        "relaying",
    )
    stop.set()
    await task
    assert positions(publisher.stored) == list(range(1, 151))
    assert states == ["relaying", "stopped"]
    assert relay.published == 150


async def test_a_relay_resumes_where_the_stream_ends_whatever_it_published_before() -> None:
    store = MemoryEventStore(codec())
    await fill(store, 100)
    publisher = MemoryPublisher()
    publisher.stored.extend(messages(1, 40))  # an earlier relay got this far
    relay = Relay(store, publisher, PREFIX, batch_size=16)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await until(lambda: len(publisher.stored) == 100)
    stop.set()
    await task
    assert positions(publisher.stored) == list(range(1, 101))


async def test_a_broker_lost_mid_batch_costs_a_retry_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryEventStore(codec())
    await fill(store, 100)
    publisher = MemoryPublisher(fail_after=30)  # stores 30, then goes down mid-batch
    relay = Relay(store, publisher, PREFIX, batch_size=25, max_delay=0.01)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="cqrskit.relay"):
        task = asyncio.create_task(relay.run(stop))
        await until(lambda: relay.state == "waiting")
        await asyncio.sleep(0.05)  # several retries
        publisher.down = False
        await until(lambda: len(publisher.stored) == 100)
        stop.set()
        await task
    assert positions(publisher.stored) == list(range(1, 101))
    lines = [r for r in caplog.records if r.name == "cqrskit.relay"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "broker memory is down; retrying" in lines[0].getMessage()
    assert lines[0].exc_info is None
    assert publisher.opened >= 2


async def test_one_relay_publishes_the_other_stands_by_then_takes_over() -> None:
    store = MemoryEventStore(codec())
    await fill(store, 50)
    stored: list[RelayMessage] = []
    registry = LeaseRegistry()
    relays = [
        Relay(store, MemoryPublisher(stored=stored), PREFIX, batch_size=7,
              lease=MemoryLease(registry), lease_interval=0.01)
        for _ in range(2)
    ]  # fmt: skip
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(r.run(s)) for r, s in zip(relays, stops, strict=True)]
    await until(lambda: len(stored) == 50)
    assert sorted(r.state for r in relays) == ["relaying", "standby"]
    active = next(i for i, r in enumerate(relays) if r.state == "relaying")
    stops[active].set()  # it releases the lease
    await tasks[active]
    await fill(store, 50, start=50)
    await until(lambda: len(stored) == 100)
    assert relays[1 - active].state == "relaying"
    stops[1 - active].set()
    await tasks[1 - active]
    assert positions(stored) == list(range(1, 101))


async def test_two_relays_without_a_lease_still_publish_each_event_once() -> None:
    """The broker's guard alone: whoever loses a race is refused and reads the end again."""
    store = MemoryEventStore(codec())
    stored: list[RelayMessage] = []
    relays = [Relay(store, MemoryPublisher(stored=stored), PREFIX, batch_size=3) for _ in range(3)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    for chunk in range(20):
        await fill(store, 10, start=chunk * 10)
        await asyncio.sleep(0)
    await until(lambda: len(stored) == 200)
    stop.set()
    await asyncio.gather(*tasks)
    assert positions(stored) == list(range(1, 201))
