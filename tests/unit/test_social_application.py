"""Command handlers over the in-memory store, read models and their queries over the
in-memory read database (given/when/then: cqrskit.testing), tokens and cursors: no I/O."""

from __future__ import annotations

import ast
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from unittest.mock import ANY

import pytest

from cqrskit import ConcurrencyError, QueryResult, ReadDatabase
from cqrskit.backends.memory import MemoryDatabase, MemoryEventStore
from cqrskit.codec import Codec
from cqrskit.testing import CommandScenario, ProjectionScenario
from social.application.commands import (
    CreatePost,
    FollowUser,
    ForgetUser,
    RegisterUser,
    UnfollowUser,
    UpdateProfile,
)
from social.application.handlers import CommandHandlers
from social.application.projections import Follows, Posts, UserProfiles
from social.application.queries import (
    FollowView,
    GetUser,
    ListFollowers,
    ListFollowing,
    ListPosts,
    Page,
    PostView,
    UserView,
    decode_cursor,
    encode_cursor,
)
from social.application.throttle import LoginThrottle
from social.application.tokens import InvalidToken, TokenService
from social.domain import (
    ALL_EVENTS,
    CannotFollowSelf,
    EmailAlreadyRegistered,
    Follow,
    InvalidValue,
    NotAllowed,
    Post,
    PostCreated,
    ScryptParams,
    UnknownActor,
    User,
    UserFollowed,
    UserForgotten,
    UserNotFound,
    UserProfileUpdated,
    UserRegistered,
    UserUnfollowed,
    WrongPassword,
    verify_password,
)
from social.infrastructure.queries import ReadQueries
from social.infrastructure.read_models import SqlFollowRows, SqlPostRows, SqlProfileRows
from social.infrastructure.write_model import UsersTable

FAST = ScryptParams(n=2**10)
NOW = "2026-01-01T00:00:00Z"


def registered(user_id: str, email: str, name: str | None = None) -> UserRegistered:
    return UserRegistered(user_id, email, "scrypt$not-checked-here", name, None, NOW)


# -- command handlers ----------------------------------------------------------------------------


@pytest.fixture
async def scenario() -> AsyncIterator[CommandScenario]:
    """The write side as the service wires it: the users table kept inline."""
    store = MemoryEventStore(Codec(ALL_EVENTS), inline=[UsersTable()])
    async with CommandScenario(store) as scenario:
        yield scenario


@pytest.fixture
def handlers(scenario: CommandScenario) -> CommandHandlers:
    return CommandHandlers(scenario.store, FAST, clock=lambda: NOW)


async def given_users(scenario: CommandScenario, *users: tuple[str, str]) -> None:
    for user_id, email in users:
        await scenario.given(User.stream_id(user_id), registered(user_id, email))


async def test_register_stores_a_hash_never_the_password(
    scenario: CommandScenario, handlers: CommandHandlers
) -> None:
    result = await scenario.when(
        handlers.register_user, RegisterUser("Ann@Example.com", "password1", "Ann")
    )
    assert result.value.version == 1
    assert result.position == 1
    uid = result.value.id
    scenario.then(
        UserRegistered(uid, "Ann@example.com", ANY, "Ann", None, NOW), stream=User.stream_id(uid)
    )
    (record,) = scenario.new_records
    assert b"password1" not in record.payload
    (event,) = scenario.new_events
    assert isinstance(event, UserRegistered)
    assert verify_password("password1", event.password_hash)


async def test_register_validates_before_anything_is_stored(
    scenario: CommandScenario, handlers: CommandHandlers
) -> None:
    await scenario.when(handlers.register_user, RegisterUser("ann@example.com", "short"))
    scenario.then_raises(InvalidValue, match="^password: ")
    await scenario.when(handlers.register_user, RegisterUser("not-an-email", "password1"))
    scenario.then_raises(InvalidValue, match="^email: ")
    assert await scenario.store.head_position() == 0


async def test_an_address_registers_once_however_it_is_spelled(
    scenario: CommandScenario, handlers: CommandHandlers
) -> None:
    await given_users(scenario, ("ann", "ann@example.com"))
    await scenario.when(handlers.register_user, RegisterUser(" ANN@Example.COM", "password1"))
    scenario.then_raises(EmailAlreadyRegistered)  # and appends nothing


def test_the_password_is_not_in_the_commands_repr() -> None:
    assert "hunter22" not in repr(RegisterUser("a@b.io", "hunter22"))


async def test_update_checks_the_clients_version(
    scenario: CommandScenario, handlers: CommandHandlers
) -> None:
    await given_users(scenario, ("u1", "ann@example.com"))
    ok = await scenario.when(
        handlers.update_profile, UpdateProfile("u1", "u1", 1, display_name="Annie")
    )
    assert ok.value.version == 2
    scenario.then(UserProfileUpdated("u1", "Annie", None, NOW), stream=User.stream_id("u1"))
    await scenario.when(handlers.update_profile, UpdateProfile("u1", "u1", 1, display_name="Again"))
    assert scenario.then_raises(ConcurrencyError).actual == 2


async def test_only_the_user_updates_their_profile(
    scenario: CommandScenario, handlers: CommandHandlers
) -> None:
    await given_users(scenario, ("u1", "ann@example.com"), ("u2", "bob@example.com"))
    await scenario.when(
        handlers.update_profile, UpdateProfile("u1", "u2", 1, display_name="Mallory")
    )
    scenario.then_raises(NotAllowed)
    await scenario.when(handlers.update_profile, UpdateProfile("nobody", "u2", 1, display_name="X"))
    scenario.then_raises(UserNotFound)
    await scenario.when(handlers.update_profile, UpdateProfile("u1", "ghost", 1, display_name="X"))
    scenario.then_raises(UnknownActor)


async def test_follow_is_idempotent_and_answers_the_position_reached(
    scenario: CommandScenario, handlers: CommandHandlers
) -> None:
    await given_users(scenario, ("ann", "ann@example.com"), ("bob", "bob@example.com"))
    pair = Follow.stream_id(Follow.pair_id("ann", "bob"))
    first = await scenario.when(handlers.follow_user, FollowUser("ann", "bob"))
    scenario.then(UserFollowed("ann", "bob", NOW), stream=pair)
    again = await scenario.when(handlers.follow_user, FollowUser("ann", "bob"))
    scenario.then_nothing()
    assert first.value.following
    assert again.value.following
    assert again.position == first.position == await scenario.store.head_position()
    gone = await scenario.when(handlers.unfollow_user, UnfollowUser("ann", "bob"))
    scenario.then(UserUnfollowed("ann", "bob", NOW), stream=pair)
    gone_again = await scenario.when(handlers.unfollow_user, UnfollowUser("ann", "bob"))
    scenario.then_nothing()
    assert not gone.value.following
    assert not gone_again.value.following
    assert await scenario.store.head_position() == first.position + 1


async def test_follow_refuses_oneself_and_unknown_users(
    scenario: CommandScenario, handlers: CommandHandlers
) -> None:
    await given_users(scenario, ("ann", "ann@example.com"))
    await scenario.when(handlers.follow_user, FollowUser("ann", "ann"))
    scenario.then_raises(CannotFollowSelf)
    await scenario.when(handlers.follow_user, FollowUser("ann", "nobody"))
    scenario.then_raises(UserNotFound)
    await scenario.when(handlers.unfollow_user, UnfollowUser("ann", "nobody"))
    scenario.then_raises(UserNotFound)


async def test_create_post_needs_an_author_and_content(
    scenario: CommandScenario, handlers: CommandHandlers
) -> None:
    await given_users(scenario, ("ann", "ann@example.com"))
    result = await scenario.when(handlers.create_post, CreatePost("ann", "hello"))
    assert result.value.id
    assert result.position == 2
    scenario.then(
        PostCreated(result.value.id, "ann", "hello", NOW), stream=Post.stream_id(result.value.id)
    )
    await scenario.when(handlers.create_post, CreatePost("ann", "x" * 5001))
    scenario.then_raises(InvalidValue, match="^content: ")
    # An author that does not exist is a request authenticated as nobody (the contract's
    # hardening: 401 at the edge), not a missing resource.
    await scenario.when(handlers.create_post, CreatePost("nobody", "hello"))
    scenario.then_raises(UnknownActor)


# -- read models and their queries ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def read_queries(db: ReadDatabase) -> AsyncIterator[ReadQueries]:
    """The query handlers over ``db`` (their store only serves logins: none here)."""
    store = MemoryEventStore(Codec(ALL_EVENTS))
    try:
        yield ReadQueries(db, store, "scrypt$unused", LoginThrottle())
    finally:
        await store.close()


@pytest.fixture
async def profiles() -> AsyncIterator[ProjectionScenario]:
    projection = UserProfiles(SqlProfileRows())
    async with ProjectionScenario(projection, Codec(ALL_EVENTS), MemoryDatabase()) as scenario:
        yield scenario


@pytest.fixture
async def posts() -> AsyncIterator[ProjectionScenario]:
    projection = Posts(SqlPostRows())
    async with ProjectionScenario(projection, Codec(ALL_EVENTS), MemoryDatabase()) as scenario:
        yield scenario


@pytest.fixture
async def follows() -> AsyncIterator[ProjectionScenario]:
    projection = Follows(SqlFollowRows())
    async with ProjectionScenario(projection, Codec(ALL_EVENTS), MemoryDatabase()) as scenario:
        yield scenario


PROFILES = (
    "SELECT id, display_name, avatar_url, post_count, follower_count, following_count, version"
    " FROM user_profiles ORDER BY id"
)


async def test_profiles_count_posts_and_follows_and_keep_the_users_version(
    profiles: ProjectionScenario,
) -> None:
    await profiles.given(registered("ann", "ann@example.com"), stream=User.stream_id("ann"))
    await profiles.given(registered("bob", "bob@example.com", "Bob"), stream=User.stream_id("bob"))
    await profiles.given(PostCreated("p1", "ann", "hello", NOW), stream=Post.stream_id("p1"))
    await profiles.given(UserFollowed("ann", "bob", NOW), UserFollowed("bob", "ann", NOW))
    await profiles.given(UserUnfollowed("bob", "ann", NOW))
    await profiles.then_rows(
        PROFILES,
        ("ann", "ann", None, 1, 0, 1, 1),  # no name chosen: the email's local part
        ("bob", "Bob", None, 0, 1, 0, 1),
    )
    await profiles.given(
        UserProfileUpdated("bob", None, "https://a.io/b", NOW),  # None: back to the default
        UserProfileUpdated("bob", "Bobby", "https://a.io/b", NOW),
        stream=User.stream_id("bob"),
    )
    await profiles.then_rows(
        PROFILES, ("ann", "ann", None, 1, 0, 1, 1), ("bob", "Bobby", "https://a.io/b", 0, 1, 0, 3)
    )
    await profiles.given(UserProfileUpdated("bob", None, None, NOW), stream=User.stream_id("bob"))
    await profiles.then_rows(
        "SELECT display_name, version FROM user_profiles WHERE id = ?", ("bob", 4), params=["bob"]
    )


async def test_get_user_answers_the_profile_and_its_position(profiles: ProjectionScenario) -> None:
    await profiles.given(registered("ann", "ann@example.com"), stream=User.stream_id("ann"))
    await profiles.given(PostCreated("p1", "ann", "hello", NOW), stream=Post.stream_id("p1"))
    async with read_queries(profiles.db) as queries:
        ann = UserView("ann", "ann", None, NOW, 1, 0, 0, 1, email=None)
        assert await queries.get_user(GetUser("ann")) == QueryResult(ann, 2)
        own = await queries.get_user(GetUser("ann", viewer_id="ann"))
        assert own.value.email == "ann@example.com"
        with pytest.raises(UserNotFound):
            await queries.get_user(GetUser("bob"))


async def test_posts_are_listed_newest_first_a_page_at_a_time(posts: ProjectionScenario) -> None:
    await posts.given(registered("ann", "ann@example.com"), registered("bob", "bob@example.com"))
    for n in range(1, 4):  # positions 3, 4, 5
        await posts.given(PostCreated(f"p{n}", "ann", f"post {n}", NOW), stream=f"post-p{n}")
    async with read_queries(posts.db) as queries:
        first = await queries.list_posts(ListPosts("ann", limit=2))
        assert first == QueryResult(
            Page(
                [PostView("p3", "ann", "post 3", NOW), PostView("p2", "ann", "post 2", NOW)],
                encode_cursor(4),
            ),
            5,
        )
        last = await queries.list_posts(ListPosts("ann", limit=2, before=first.value.next))
        assert last.value == Page([PostView("p1", "ann", "post 1", NOW)], None)
        assert (await queries.list_posts(ListPosts("bob"))).value == Page([], None)
        with pytest.raises(UserNotFound):
            await queries.list_posts(ListPosts("nobody"))


async def test_follow_lists_show_current_names_newest_first(follows: ProjectionScenario) -> None:
    await follows.given(
        registered("ann", "ann@example.com"),
        registered("bob", "bob@example.com", "Bob"),
        registered("cat", "cat@example.com"),
    )
    await follows.given(UserFollowed("bob", "ann", NOW), UserFollowed("cat", "ann", NOW))
    await follows.given(UserFollowed("ann", "bob", NOW), UserUnfollowed("ann", "bob", NOW))
    await follows.given(UserProfileUpdated("cat", "Cat", None, NOW))
    await follows.then_rows(
        "SELECT follower_id, followee_id, position FROM follows ORDER BY position",
        ("bob", "ann", 4),
        ("cat", "ann", 5),
    )
    async with read_queries(follows.db) as queries:
        followers = await queries.list_followers(ListFollowers("ann"))
        assert followers == QueryResult(
            Page([FollowView("cat", "Cat"), FollowView("bob", "Bob")], None), 8
        )
        following = await queries.list_following(ListFollowing("bob"))
        assert following.value == Page([FollowView("ann", "ann")], None)
        assert (await queries.list_following(ListFollowing("ann"))).value == Page([], None)


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

APPLICATION = (
    Path(__file__).resolve().parents[2] / "services" / "social" / "src" / "social" / "application"
)
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


# -- forgetting a user ---------------------------------------------------------------------------


async def test_forgetting_needs_the_password_then_the_user_acts_and_is_found_no_more(
    scenario: CommandScenario, handlers: CommandHandlers
) -> None:
    ann = await scenario.when(handlers.register_user, RegisterUser("ann@example.com", "password1"))
    bob = await scenario.when(handlers.register_user, RegisterUser("bob@example.com", "password2"))
    ann_id, bob_id = ann.value.id, bob.value.id
    for wrong in ("password2", "bad\x00"):
        await scenario.when(handlers.forget_user, ForgetUser(ann_id, wrong))
        scenario.then_raises(WrongPassword)
    done = await scenario.when(handlers.forget_user, ForgetUser(ann_id, "password1"))
    assert done.value is not None
    assert done.value.deleted is True
    scenario.then(UserForgotten(ann_id, NOW))
    for command in (
        CreatePost(ann_id, "still here?"),
        FollowUser(ann_id, bob_id),
        UpdateProfile(ann_id, ann_id, 2, display_name="Ann"),
        ForgetUser(ann_id, "password1"),
    ):
        await scenario.when(getattr(handlers, _HANDLER[type(command)]), command)
        scenario.then_raises(UnknownActor)
    await scenario.when(handlers.follow_user, FollowUser(bob_id, ann_id))
    scenario.then_raises(UserNotFound)
    again = await scenario.when(
        handlers.register_user, RegisterUser("ann@example.com", "pw-again1")
    )
    assert again.value is not None
    assert again.value.id != ann_id  # the email is free again


_HANDLER = {
    CreatePost: "create_post",
    FollowUser: "follow_user",
    UpdateProfile: "update_profile",
    ForgetUser: "forget_user",
}


async def registered_users(scenario: ProjectionScenario, *user_ids: str) -> None:
    """Each user registered, on their own stream (a forget then finds their key)."""
    for user_id in user_ids:
        await scenario.given(registered(user_id, f"{user_id}@x.io"), stream=User.stream_id(user_id))


async def test_forgetting_drops_the_user_and_uncounts_their_follows(
    profiles: ProjectionScenario,
) -> None:
    await registered_users(profiles, "ann", "bob", "cid")
    await profiles.given(
        UserFollowed("ann", "bob", NOW), UserFollowed("cid", "ann", NOW),
        UserFollowed("cid", "bob", NOW), UserFollowed("bob", "ann", NOW),
        UserUnfollowed("bob", "ann", NOW),
    )  # fmt: skip
    await profiles.given(UserForgotten("ann", NOW), stream=User.stream_id("ann"))
    await profiles.then_rows(
        PROFILES, ("bob", "bob", None, 0, 1, 0, 1), ("cid", "cid", None, 0, 0, 1, 1)
    )
    # A follow or unfollow appended just after the forget (it raced it) counts nothing.
    await profiles.given(UserFollowed("bob", "ann", NOW), UserUnfollowed("cid", "ann", NOW))
    await profiles.then_rows(
        PROFILES, ("bob", "bob", None, 0, 1, 0, 1), ("cid", "cid", None, 0, 0, 1, 1)
    )
    await profiles.then_rows("SELECT follower_id, followee_id FROM profile_follows", ("cid", "bob"))


async def test_forgetting_drops_the_author_and_their_posts(posts: ProjectionScenario) -> None:
    await registered_users(posts, "ann", "bob")
    await posts.given(PostCreated("p1", "ann", "a", NOW), PostCreated("p2", "bob", "b", NOW))
    await posts.given(UserForgotten("ann", NOW), stream=User.stream_id("ann"))
    await posts.then_rows("SELECT id FROM post_authors", ("bob",))
    await posts.then_rows("SELECT id, user_id FROM posts", ("p2", "bob"))


async def test_forgetting_drops_the_user_from_every_follow_list(
    follows: ProjectionScenario,
) -> None:
    await registered_users(follows, "ann", "bob", "cid")
    await follows.given(
        UserFollowed("ann", "bob", NOW), UserFollowed("cid", "ann", NOW),
        UserFollowed("cid", "bob", NOW),
    )  # fmt: skip
    await follows.given(UserForgotten("ann", NOW), stream=User.stream_id("ann"))
    await follows.then_rows("SELECT id FROM follow_users ORDER BY id", ("bob",), ("cid",))
    await follows.then_rows("SELECT follower_id, followee_id FROM follows", ("cid", "bob"))
