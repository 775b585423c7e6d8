"""The relay publishes every event of the log once, in log order, on SQLite and PostgreSQL;
two relays at once still do; the status says how far behind the stream is; ``social relay``
publishes the service's events on ``social.events.<EventType>``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cqrskit.relay import JetStreamPublisher, Relay
from tests.integration._relay_app import RelayedApp, write
from tests.integration.relay._nats import NatsServer, Stream, read_stream
from tests.integration.relay._support import (
    RelayProcess,
    assert_exactly_once_in_order,
    start_social_relay,
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


async def test_every_event_once_in_log_order(db_url: str, nats_url: str, stream: Stream) -> None:
    await write(db_url, 300)
    relay = await RelayProcess.start(db_url, nats_url, stream, "--batch-size", "64")
    line = await relay.line()
    assert line.startswith(f"Relaying to stream {stream.name} at {nats_url}"), line
    assert line.endswith("after position 0"), line
    await write(db_url, 300, writers=8)  # while it relays
    count = await assert_exactly_once_in_order(db_url, nats_url, stream)
    assert count == 600
    assert await relay.stop() == 0
    assert "Traceback" not in await relay.stderr()

    stored = await read_stream(nats_url, stream.name, stream.prefix)
    kinds = {s.rpartition(".")[2] for s in stored.subjects}
    assert kinds == {"Noted", "Renamed", "notes_Tagged_v2"}
    body = json.loads(stored.bodies[0])
    assert set(body) == {
        "id", "type", "stream_id", "version", "position", "recorded_at", "schema_version",
        "data", "metadata",
    }  # fmt: skip
    assert body["data"] == {"n": body["data"]["n"], "text": f"note {body['data']['n']}"}
    assert body["metadata"]["correlation_id"].startswith("writer-")

    # Started again, it resumes where the stream ends: nothing twice.
    await write(db_url, 50)
    relay = await RelayProcess.start(db_url, nats_url, stream)
    assert (await relay.line()).endswith(f"after position {stored.positions[-1]}")
    assert await assert_exactly_once_in_order(db_url, nats_url, stream) == 650
    assert await relay.stop() == 0


async def test_the_status_says_where_the_stream_is(
    tmp_path: Path, nats_url: str, stream: Stream
) -> None:
    db_url = f"sqlite:///{tmp_path / 'db'}"
    await write(db_url, 40)
    relay = await RelayProcess.start(db_url, nats_url, stream)
    await relay.line()
    await assert_exactly_once_in_order(db_url, nats_url, stream)
    status = await RelayProcess.start(db_url, nats_url, stream, "--status", "--json")
    running = json.loads(await status.line())
    assert running == {
        "stream": stream.name, "position": 40, "head": 40, "lag_events": 0,
        "lag_seconds": 0.0, "state": "running",
    }  # fmt: skip
    assert await relay.stop() == 0
    await write(db_url, 10)
    status = await RelayProcess.start(db_url, nats_url, stream, "--status", "--json")
    stopped = json.loads(await status.line())
    assert (stopped["position"], stopped["head"], stopped["lag_events"]) == (40, 50, 10)
    assert stopped["lag_seconds"] > 0
    assert stopped["state"] == "stopped"


async def test_two_relay_processes_one_publishes_the_other_takes_over(
    tmp_path: Path, nats_url: str, stream: Stream
) -> None:
    db_url = f"sqlite:///{tmp_path / 'db'}"
    await write(db_url, 100)
    relays = [await RelayProcess.start(db_url, nats_url, stream, "--batch-size", "16")
              for _ in range(2)]  # fmt: skip
    lines = await asyncio.gather(*(r.line() for r in relays))
    assert sorted(line.split()[0] for line in lines) == ["Relaying", "Standing"], lines
    active = 0 if lines[0].startswith("Relaying") else 1
    writes = asyncio.create_task(write(db_url, 400))
    await asyncio.sleep(0.3)
    await relays[active].kill()  # mid-way through the writes
    taken = await relays[1 - active].line()
    assert taken.startswith("Relaying"), taken
    await writes
    assert await assert_exactly_once_in_order(db_url, nats_url, stream) == 500
    assert await relays[1 - active].stop() == 0


async def test_two_relays_without_a_lease_are_kept_apart_by_the_broker(
    tmp_path: Path, nats_url: str, stream: Stream
) -> None:
    """Both publish at once (no lease): JetStream's expected-sequence guard alone keeps each
    event once and in order."""
    db_url = f"sqlite:///{tmp_path / 'db'}"
    app = RelayedApp(db_url, run_projections=False)
    async with app:
        relays = [
            Relay(app.store, JetStreamPublisher(nats_url, stream.name, stream.prefix),
                  stream.prefix, batch_size=size)
            for size in (7, 50, 128)
        ]  # fmt: skip
        stop = asyncio.Event()
        tasks = [asyncio.create_task(r.run(stop)) for r in relays]
        await write(db_url, 600, writers=6)
        assert await assert_exactly_once_in_order(db_url, nats_url, stream) == 600
        stop.set()
        await asyncio.gather(*tasks)
        assert sum(r.published for r in relays) >= 600


async def test_social_relay_publishes_the_service_events(
    tmp_path: Path, own_nats: NatsServer
) -> None:
    """On a broker of its own: the subjects ``social.events.>`` are the service's; the
    personal data of a user (forgotten since, or not) is never on the stream in clear."""
    from social.application.commands import CreatePost, ForgetUser, RegisterUser
    from social.domain import ScryptParams
    from social.infrastructure.bootstrap import SocialApp
    from social.infrastructure.settings import Settings

    own_nats.start()
    relay, data, name = await start_social_relay(tmp_path, own_nats.url)
    line = await relay.line()
    assert line == (
        f"Relaying to stream {name} at {own_nats.url}"
        " (subjects social.events.<EventType>) after position 0"
    )
    settings = Settings(data_dir=data, secret=b"s" * 32, scrypt=ScryptParams(n=2**10))
    personal = ["ada@example.com", "Ada Lovelace", "https://img.example/ada.png"]
    async with SocialApp(settings, run_projections=False) as service:
        ada = RegisterUser(personal[0], "a long password 1", personal[1], personal[2])
        user = await service.dispatch(ada)
        await service.dispatch(CreatePost(user.value.id, "hello"))
        await service.dispatch(ForgetUser(user.value.id, "a long password 1"))
    for _ in range(100):
        stored = await read_stream(own_nats.url, name, "social.events")
        if len(stored.subjects) == 3:
            break
        await asyncio.sleep(0.05)
    assert stored.subjects == [
        "social.events.UserRegistered", "social.events.PostCreated",
        "social.events.UserForgotten",
    ]  # fmt: skip
    assert stored.positions == [1, 2, 3]
    registered = json.loads(stored.bodies[0])["data"]
    assert "email" not in registered
    assert registered["$sealed"][:2] == [
        user.value.id,
        ["email", "password_hash", "display_name", "avatar_url"],
    ]  # sealed, as stored
    assert [p for p in personal if any(p.encode() in b for b in stored.bodies)] == []
    assert await relay.stop() == 0
    assert "Traceback" not in await relay.stderr()
