"""Command handlers over the in-memory store, tokens and cursors: no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cqrskit import CommandBus, ConcurrencyError
from cqrskit.backends.memory import MemoryEventStore
from cqrskit.codec import Codec
from social.application.commands import (
    CreatePost,
    FollowUser,
    RegisterUser,
    UnfollowUser,
    UpdateProfile,
)
from social.application.handlers import CommandHandlers
from social.application.queries import decode_cursor, encode_cursor
from social.application.tokens import InvalidToken, TokenService
from social.domain import (
    ALL_EVENTS,
    CannotFollowSelf,
    InvalidValue,
    NotAllowed,
    ScryptParams,
    UnknownActor,
    User,
    UserNotFound,
    UserRegistered,
    verify_password,
)

FAST = ScryptParams(n=2**10)


@pytest.fixture
def store() -> MemoryEventStore:
    return MemoryEventStore(Codec(ALL_EVENTS))


@pytest.fixture
def bus(store: MemoryEventStore) -> CommandBus:
    handlers = CommandHandlers(store, FAST, clock=lambda: "2026-01-01T00:00:00Z")
    bus = CommandBus()
    bus.register(RegisterUser, handlers.register_user)
    bus.register(UpdateProfile, handlers.update_profile)
    bus.register(CreatePost, handlers.create_post)
    bus.register(FollowUser, handlers.follow_user)
    bus.register(UnfollowUser, handlers.unfollow_user)
    return bus


async def _register(bus: CommandBus, email: str = "ann@example.com") -> str:
    result = await bus.dispatch(RegisterUser(email, "password1"))
    user_id: str = result.value.id
    return user_id


async def test_register_stores_a_hash_never_the_password(
    bus: CommandBus, store: MemoryEventStore
) -> None:
    result = await bus.dispatch(RegisterUser("Ann@Example.com", "password1", "Ann"))
    assert result.value.version == 1
    assert result.position == 1
    (record,) = await store.read_stream(User.stream_id(result.value.id))
    event = store.codec.decode(record)
    assert isinstance(event, UserRegistered)
    assert event.email == "Ann@example.com"
    assert b"password1" not in record.payload
    assert verify_password("password1", event.password_hash)


async def test_register_validates_before_anything_is_stored(
    bus: CommandBus, store: MemoryEventStore
) -> None:
    with pytest.raises(InvalidValue):
        await bus.dispatch(RegisterUser("ann@example.com", "short"))
    with pytest.raises(InvalidValue):
        await bus.dispatch(RegisterUser("not-an-email", "password1"))
    assert await store.head_position() == 0


def test_the_password_is_not_in_the_commands_repr() -> None:
    assert "hunter22" not in repr(RegisterUser("a@b.io", "hunter22"))


async def test_update_checks_the_clients_version(bus: CommandBus) -> None:
    uid = await _register(bus)
    ok = await bus.dispatch(UpdateProfile(uid, uid, 1, display_name="Annie"))
    assert ok.value.version == 2
    with pytest.raises(ConcurrencyError) as info:
        await bus.dispatch(UpdateProfile(uid, uid, 1, display_name="Again"))
    assert info.value.actual == 2


async def test_only_the_user_updates_their_profile(bus: CommandBus) -> None:
    uid = await _register(bus)
    other = await _register(bus, "bob@example.com")
    with pytest.raises(NotAllowed):
        await bus.dispatch(UpdateProfile(uid, other, 1, display_name="Mallory"))
    with pytest.raises(UserNotFound):
        await bus.dispatch(UpdateProfile("nobody", other, 1, display_name="X"))


async def test_follow_is_idempotent_and_answers_the_position_reached(
    bus: CommandBus, store: MemoryEventStore
) -> None:
    ann = await _register(bus)
    bob = await _register(bus, "bob@example.com")
    first = await bus.dispatch(FollowUser(ann, bob))
    again = await bus.dispatch(FollowUser(ann, bob))
    assert first.value.following
    assert again.value.following
    assert again.position == first.position == await store.head_position()
    gone = await bus.dispatch(UnfollowUser(ann, bob))
    gone_again = await bus.dispatch(UnfollowUser(ann, bob))
    assert not gone.value.following
    assert not gone_again.value.following
    assert await store.head_position() == first.position + 1


async def test_follow_refuses_oneself_and_unknown_users(bus: CommandBus) -> None:
    ann = await _register(bus)
    with pytest.raises(CannotFollowSelf):
        await bus.dispatch(FollowUser(ann, ann))
    with pytest.raises(UserNotFound):
        await bus.dispatch(FollowUser(ann, "nobody"))
    with pytest.raises(UserNotFound):
        await bus.dispatch(UnfollowUser(ann, "nobody"))


async def test_create_post_needs_an_author_and_content(bus: CommandBus) -> None:
    ann = await _register(bus)
    result = await bus.dispatch(CreatePost(ann, "hello"))
    assert result.value.id
    assert result.position == 2
    with pytest.raises(InvalidValue):
        await bus.dispatch(CreatePost(ann, "x" * 5001))
    # An author that does not exist is a request authenticated as nobody (the contract's
    # hardening: 401 at the edge), not a missing resource.
    with pytest.raises(UnknownActor):
        await bus.dispatch(CreatePost("nobody", "hello"))


# -- tokens and cursors --------------------------------------------------------------------------


def test_tokens_verify_and_expire() -> None:
    now = [1000.0]
    tokens = TokenService(b"k" * 32, ttl_seconds=60, clock=lambda: now[0])
    token = tokens.issue("user-1")
    assert tokens.verify(token) == "user-1"
    now[0] += 61
    with pytest.raises(InvalidToken):
        tokens.verify(token)


@pytest.mark.parametrize(
    "mutate", [lambda t: t.replace(".", ".A", 1), lambda t: "x" + t, lambda t: "", str.upper]
)
def test_tampered_tokens_are_refused(mutate: object) -> None:
    tokens = TokenService(b"k" * 32)
    token = tokens.issue("user-1")
    assert callable(mutate)
    with pytest.raises(InvalidToken):
        tokens.verify(mutate(token))


def test_a_token_from_another_secret_is_refused() -> None:
    token = TokenService(b"a" * 32).issue("user-1")
    with pytest.raises(InvalidToken):
        TokenService(b"b" * 32).verify(token)


def test_cursors_round_trip_and_bad_ones_are_invalid_values() -> None:
    assert decode_cursor(encode_cursor(12345)) == 12345
    too_big = encode_cursor(2**63)
    for bad in ("", "!!", "cXh5", "bm90LWEtbnVtYmVy", "\ud800", too_big):
        with pytest.raises(InvalidValue):
            decode_cursor(bad)


# -- layering ------------------------------------------------------------------------------------

APPLICATION = Path(__file__).resolve().parents[2] / "src" / "social" / "application"
OUTER = ("social.infrastructure", "social.api", "social.cli", "sqlite3", "psycopg", "fastapi")


def test_the_application_layer_imports_nothing_outward() -> None:
    found = []
    for path in sorted(APPLICATION.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = ("social." if node.level == 2 else "") + (node.module or "")
                names = [module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n.startswith(OUTER)]
    assert found == []
