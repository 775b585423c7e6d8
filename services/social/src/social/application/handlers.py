"""Command handlers: load, call the domain, save. No SQL, no HTTP.

The bus registers each method explicitly (see ``social.infrastructure.bootstrap``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from cqrskit import ConcurrencyError, EventStore, Repository, UniqueViolation, new_id

from ..domain import (
    EmailAlreadyRegistered,
    Follow,
    Post,
    ScryptParams,
    UnknownActor,
    User,
    UserNotFound,
    WrongPassword,
    hash_password,
    verify_password,
)
from ..domain.values import (
    is_clean_text,
    normalize_email,
    validate_avatar_url,
    validate_display_name,
    validate_password,
)
from .commands import (
    CreatePost,
    Deleted,
    Following,
    FollowUser,
    ForgetUser,
    PostId,
    RegisterUser,
    UnfollowUser,
    UpdateProfile,
    UserVersion,
)

__all__ = ["CommandHandlers", "UserExists", "utc_now"]

UserExists = Callable[[str], Awaitable[bool]]
"""Is this user registered and not forgotten? (The service asks its write model's table.)"""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class CommandHandlers:
    def __init__(
        self,
        store: EventStore,
        scrypt: ScryptParams | None = None,
        clock: Callable[[], str] = utc_now,
        *,
        exists: UserExists | None = None,
    ) -> None:
        self._store = store
        self._users = Repository.for_type(store, User)
        self._posts = Repository.for_type(store, Post)
        self._follows = Repository.for_type(store, Follow)
        self._scrypt = scrypt or ScryptParams()
        self._clock = clock
        self._exists = exists or self._user_is_active

    async def register_user(self, cmd: RegisterUser) -> UserVersion:
        # Validate before the (deliberately slow) hash so bad input costs nothing.
        normalize_email(cmd.email)
        validate_password(cmd.password)
        if cmd.display_name is not None:
            validate_display_name(cmd.display_name)
        if cmd.avatar_url is not None:
            validate_avatar_url(cmd.avatar_url)
        password_hash = await asyncio.to_thread(hash_password, cmd.password, self._scrypt)
        user = User.register(
            new_id(), cmd.email, password_hash, cmd.display_name, cmd.avatar_url, self._clock()
        )
        try:
            await self._users.save(user)
        except UniqueViolation as exc:  # the write model's UNIQUE(email_lower), same transaction
            raise EmailAlreadyRegistered() from exc
        return UserVersion(user.id, user.version)

    async def update_profile(self, cmd: UpdateProfile) -> UserVersion:
        user = await self._users.load(cmd.user_id)
        if not user.active:
            raise UnknownActor() if cmd.actor_id == cmd.user_id else UserNotFound(cmd.user_id)
        if cmd.actor_id != cmd.user_id:
            await self._require_actor(cmd.actor_id)  # not authenticated before not allowed
        user.update_profile(cmd.actor_id, cmd.display_name, cmd.avatar_url, self._clock())
        if user.committed_version != cmd.version:
            raise ConcurrencyError(User.stream_id(user.id), cmd.version, user.committed_version)
        # save() appends expecting committed_version (== cmd.version): a concurrent change
        # that landed since the load fails this append, so the check is atomic.
        await self._users.save(user)
        return UserVersion(user.id, user.version)

    async def forget_user(self, cmd: ForgetUser) -> Deleted:
        """Forget the user: their key is destroyed in the append of ``UserForgotten``
        (cqrskit.personal), and every read model drops them as it applies it."""
        user = await self._users.load(cmd.user_id)
        if not user.active:
            raise UnknownActor()
        ok = is_clean_text(cmd.password) and await asyncio.to_thread(
            verify_password, cmd.password, user.password_hash
        )
        if not ok:
            raise WrongPassword()
        user.forget(cmd.user_id, self._clock())
        await self._users.save(user)  # expects the version loaded: a change meanwhile retries
        return Deleted(True)

    async def create_post(self, cmd: CreatePost) -> PostId:
        await self._require_actor(cmd.author_id)
        post = Post.create(new_id(), cmd.author_id, cmd.content, self._clock())
        await self._posts.save(post)
        return PostId(post.id)

    async def follow_user(self, cmd: FollowUser) -> Following:
        await self._require_actor(cmd.follower_id)
        await self._require_user(cmd.followee_id)
        follow = await self._follows.load(Follow.pair_id(cmd.follower_id, cmd.followee_id))
        follow.follow(cmd.follower_id, cmd.followee_id, self._clock())
        await self._follows.save(follow)
        return Following(True)

    async def unfollow_user(self, cmd: UnfollowUser) -> Following:
        await self._require_actor(cmd.follower_id)
        await self._require_user(cmd.followee_id)
        follow = await self._follows.load(Follow.pair_id(cmd.follower_id, cmd.followee_id))
        follow.unfollow(cmd.follower_id, cmd.followee_id, self._clock())
        await self._follows.save(follow)
        return Following(False)

    async def _require_user(self, user_id: str) -> None:
        if not await self._exists(user_id):
            raise UserNotFound(user_id)

    async def _require_actor(self, user_id: str) -> None:
        """The user a command acts as exists: a valid token of a user that does not exist
        (forgotten, or gone with a restored backup) authenticates nobody."""
        if not await self._exists(user_id):
            raise UnknownActor()

    async def _user_is_active(self, user_id: str) -> bool:
        return (await self._users.load(user_id)).active
