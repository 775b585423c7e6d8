"""The social service's write and read sides over real SQLite files: uniqueness, the
atomic version check, counters, pagination, logins, and rebuild == live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cqrskit import Command, ConcurrencyError, Query
from cqrskit.rebuild import rebuild
from social.application.commands import (
    CreatePost,
    FollowUser,
    RegisterUser,
    UnfollowUser,
    UpdateProfile,
)
from social.application.queries import (
    Authenticate,
    GetUser,
    ListFollowers,
    ListFollowing,
    ListPosts,
    PostView,
)
from social.domain import EmailAlreadyRegistered, InvalidCredentials, ScryptParams, UserNotFound
from social.infrastructure.bootstrap import SocialApp
from social.infrastructure.settings import Settings

FAST = ScryptParams(n=2**10)
READ_MODEL_TABLES = ("user_profiles", "posts", "post_authors", "follows", "follow_users")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SocialApp]:
    """The service's container on SQLite files, or on two PostgreSQL databases."""
    urls: tuple[str | None, str | None] = (None, None)
    if request.param == "postgres":
        urls = request.getfixturevalue("pg_url_pair")
    settings = Settings(
        data_dir=tmp_path,
        write_url=urls[0],
        read_url=urls[1],
        secret=b"s" * 32,
        scrypt=FAST,
        batch_size=7,
    )
    container = SocialApp(settings)
    await container.open()
    try:
        yield container
    finally:
        _written.pop(id(container), None)
        await container.close()


async def register(app: SocialApp, email: str, name: str | None = None) -> str:
    result = await do(app, RegisterUser(email, "password1", name))
    user_id: str = result.value.id
    return user_id


_written: dict[int, int] = {}
"""Per container: the highest position a command of the test reached."""


async def do(app: SocialApp, command: Command) -> Any:
    result = await app.commands.dispatch(command)
    _written[id(app)] = max(_written.get(id(app), 0), result.position)
    return result


async def caught_up(app: SocialApp) -> int:
    """Wait until every read model shows every write made so far (read-your-writes).

    Waits for the last write's position, not ``head_position``: on PostgreSQL the head a
    reader sees may lag a moment behind a commit (up to the oldest running transaction).
    """
    head = _written.get(id(app), 0)
    await app.wait_for([p.name for p in app.projections], head)
    return head


async def test_email_is_unique_case_insensitively_even_under_concurrency(app: SocialApp) -> None:
    variants = ["sam@example.com", "SAM@example.com", "Sam@Example.com", " sam@EXAMPLE.com"] * 2
    results = await asyncio.gather(
        *(do(app, RegisterUser(e, "password1")) for e in variants),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, EmailAlreadyRegistered) for r in results if r not in winners)
    await caught_up(app)
    # Nothing of the refused ones was appended (on PostgreSQL their positions are holes).
    assert len(await app.store.read_all(0, 100)) == 1


async def test_of_16_concurrent_updates_with_one_version_exactly_one_wins(app: SocialApp) -> None:
    uid = await register(app, "ann@example.com")
    results = await asyncio.gather(
        *(do(app, UpdateProfile(uid, uid, 1, display_name=f"Ann {i}")) for i in range(16)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(winners) == 1
    assert len(conflicts) == 15
    assert {c.actual for c in conflicts} == {2}
    await caught_up(app)
    user = (await app.queries.ask(GetUser(uid))).value
    assert user.version == 2


async def test_counters_names_and_lists_follow_the_events(app: SocialApp) -> None:
    ann = await register(app, "ann@example.com")
    bob = await register(app, "bob@example.com", "Bob")
    cat = await register(app, "cat@example.com")
    for i in range(3):
        await do(app, CreatePost(ann, f"post {i}"))
    await do(app, FollowUser(bob, ann))
    await do(app, FollowUser(bob, ann))  # nothing new
    await do(app, FollowUser(cat, ann))
    await do(app, FollowUser(ann, bob))
    await do(app, UnfollowUser(cat, ann))
    await do(app, UnfollowUser(cat, ann))  # nothing new
    await do(app, UpdateProfile(bob, bob, 1, display_name="Robert"))
    head = await caught_up(app)

    shown = await app.queries.ask(GetUser(ann, viewer_id=ann))
    assert shown.position == head
    user = shown.value
    assert (user.post_count, user.follower_count, user.following_count) == (3, 1, 1)
    assert user.display_name == "ann"  # the email's local part
    assert user.email == "ann@example.com"
    assert (await app.queries.ask(GetUser(ann, viewer_id=bob))).value.email is None

    followers = (await app.queries.ask(ListFollowers(ann))).value
    assert [(f.id, f.display_name) for f in followers.items] == [(bob, "Robert")]
    following = (await app.queries.ask(ListFollowing(ann))).value
    assert [(f.id, f.display_name) for f in following.items] == [(bob, "Robert")]
    assert (await app.queries.ask(ListFollowing(cat))).value.items == []

    await do(app, UpdateProfile(bob, bob, 2, display_name=None))
    await caught_up(app)
    assert (await app.queries.ask(GetUser(bob))).value.display_name == "bob"
    followers = (await app.queries.ask(ListFollowers(ann))).value
    assert [f.display_name for f in followers.items] == ["bob"]


async def test_unknown_users_are_not_found_on_every_read(app: SocialApp) -> None:
    await caught_up(app)
    queries: list[Query[Any]] = [GetUser("nobody"), ListPosts("nobody"), ListFollowers("nobody")]
    for query in queries:
        with pytest.raises(UserNotFound):
            await app.queries.ask(query)


async def _all_pages(app: SocialApp, uid: str, limit: int) -> list[PostView]:
    seen: list[PostView] = []
    before: str | None = None
    while True:
        page = (await app.queries.ask(ListPosts(uid, limit, before))).value
        seen.extend(page.items)
        if page.next is None:
            return seen
        before = page.next
        await asyncio.sleep(0)  # let the concurrent writer in between pages


async def test_pages_show_every_post_exactly_once_while_posts_are_added(app: SocialApp) -> None:
    uid = await register(app, "ann@example.com")
    before_paging = [(await do(app, CreatePost(uid, f"old {i}"))).value.id for i in range(30)]
    await caught_up(app)

    async def keep_posting() -> None:
        for i in range(20):
            await do(app, CreatePost(uid, f"new {i}"))

    writer = asyncio.create_task(keep_posting())
    seen = await _all_pages(app, uid, limit=7)
    await writer
    ids = [p.id for p in seen]
    assert len(ids) == len(set(ids))
    # Paging backwards from the newest: posts added meanwhile are newer than the first
    # page (so not shown); every post that existed is shown once, newest first.
    old = [i for i in ids if i in set(before_paging)]
    assert old == before_paging[::-1]

    await caught_up(app)
    everything = await _all_pages(app, uid, limit=100)
    assert len(everything) == 50
    assert [p.content for p in everything[:3]] == ["new 19", "new 18", "new 17"]


async def test_login_answers_the_same_error_for_email_and_password(app: SocialApp) -> None:
    uid = await register(app, "Ann@Example.com")
    ok = await app.queries.ask(Authenticate("ann@EXAMPLE.com", "password1"))
    assert (ok.value, ok.position) == (uid, 1)
    errors = []
    for email, password in (("ann@example.com", "wrong-one"), ("zed@example.com", "password1")):
        with pytest.raises(InvalidCredentials) as info:
            await app.queries.ask(Authenticate(email, password))
        errors.append(str(info.value))
    assert errors[0] == errors[1]


def _dump(tx: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(tx.fetchall(f"SELECT * FROM {t}")) for t in READ_MODEL_TABLES}


async def test_a_rebuild_gives_the_read_model_the_live_projections_built(app: SocialApp) -> None:
    users = [await register(app, f"u{i}@example.com") for i in range(4)]
    for i, uid in enumerate(users):
        await do(app, CreatePost(uid, f"hello {i}"))
        await do(app, FollowUser(uid, users[(i + 1) % 4]))
    await do(app, UnfollowUser(users[0], users[1]))
    await do(app, UpdateProfile(users[2], users[2], 1, display_name="Two"))
    await caught_up(app)
    live = await app.db.read(_dump)
    for projection in app.projections:
        result = await rebuild(app.store, app.db, projection)
        assert result.position >= await caught_up(app)
    assert await app.db.read(_dump) == live
    assert live["user_profiles"]  # the comparison compared something
    assert b"scrypt$" not in repr(live).encode()  # no password hash in any read model
