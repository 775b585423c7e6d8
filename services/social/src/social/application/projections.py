"""The read models' event logic: which rows each event changes. The SQL behind the row
protocols lives in ``social.infrastructure.read_models``.

Each projection is one cqrskit :class:`~cqrskit.projection.Projection`: the runner applies
a batch and stores its checkpoint in one transaction, so every event changes a read model
exactly once and the counters equal what a full replay gives.
"""

from __future__ import annotations

from typing import Protocol

from cqrskit import Projection, RecordedEvent, SqlTx, handles

from ..domain import (
    PostCreated,
    UserFollowed,
    UserForgotten,
    UserProfileUpdated,
    UserRegistered,
    UserUnfollowed,
)

__all__ = [
    "FollowRows",
    "Follows",
    "PostRows",
    "Posts",
    "ProfileRows",
    "UserProfiles",
    "default_display_name",
]


def default_display_name(email: str) -> str:
    """The part of the email before ``@``: the name of a user who chose none."""
    return email.rpartition("@")[0]


class ProfileRows(Protocol):
    def create_schema(self, tx: SqlTx) -> None: ...

    def insert(
        self,
        tx: SqlTx,
        *,
        id: str,
        email: str,
        display_name: str | None,
        default_name: str,
        avatar_url: str | None,
        created_at: str,
        version: int,
    ) -> None: ...

    def update(
        self, tx: SqlTx, id: str, display_name: str | None, avatar_url: str | None, version: int
    ) -> None:
        """``display_name`` None falls back to the stored default name."""
        ...

    def add_posts(self, tx: SqlTx, id: str, posts: int) -> None: ...

    def follow(self, tx: SqlTx, follower_id: str, followee_id: str) -> None:
        """Count the follow on both users, and keep it (to uncount it when one of them is
        forgotten); a follow involving a user this model no longer has counts nothing."""
        ...

    def unfollow(self, tx: SqlTx, follower_id: str, followee_id: str) -> None: ...

    def forget(self, tx: SqlTx, id: str) -> None:
        """Drop the user, and their follows from the others' counters."""
        ...


class PostRows(Protocol):
    def create_schema(self, tx: SqlTx) -> None: ...

    def add_author(self, tx: SqlTx, id: str) -> None: ...

    def add_post(
        self, tx: SqlTx, *, position: int, id: str, user_id: str, content: str, created_at: str
    ) -> None: ...

    def forget(self, tx: SqlTx, id: str) -> None:
        """Drop the author and their posts."""
        ...


class FollowRows(Protocol):
    def create_schema(self, tx: SqlTx) -> None: ...

    def add_user(self, tx: SqlTx, id: str, display_name: str | None, default_name: str) -> None: ...

    def rename_user(self, tx: SqlTx, id: str, display_name: str | None) -> None: ...

    def add_follow(self, tx: SqlTx, follower_id: str, followee_id: str, position: int) -> None: ...

    def remove_follow(self, tx: SqlTx, follower_id: str, followee_id: str) -> None: ...

    def forget(self, tx: SqlTx, id: str) -> None:
        """Drop the user and every follow from or to them."""
        ...


class UserProfiles(Projection):
    """Profiles with denormalized counters and the user stream's version; the follows it
    counted are kept beside them, so that forgetting a user uncounts them from the others."""

    name = "user_profiles"
    on_failure = "park"
    pipelined = True  # handlers only write, and never look at row counts
    tables = ("user_profiles", "profile_follows")

    def __init__(self, rows: ProfileRows) -> None:
        self.rows = rows

    def create_schema(self, tx: SqlTx) -> None:
        self.rows.create_schema(tx)

    @handles(UserRegistered)
    def on_registered(self, tx: SqlTx, event: UserRegistered, record: RecordedEvent) -> None:
        self.rows.insert(
            tx,
            id=event.id,
            email=event.email,
            display_name=event.display_name,
            default_name=default_display_name(event.email),
            avatar_url=event.avatar_url,
            created_at=event.registered_at,
            version=record.stream_version,
        )

    @handles(UserProfileUpdated)
    def on_updated(self, tx: SqlTx, event: UserProfileUpdated, record: RecordedEvent) -> None:
        self.rows.update(tx, event.id, event.display_name, event.avatar_url, record.stream_version)

    @handles(PostCreated)
    def on_post(self, tx: SqlTx, event: PostCreated, record: RecordedEvent) -> None:
        self.rows.add_posts(tx, event.user_id, 1)

    @handles(UserFollowed)
    def on_followed(self, tx: SqlTx, event: UserFollowed, record: RecordedEvent) -> None:
        self.rows.follow(tx, event.follower_id, event.followee_id)

    @handles(UserUnfollowed)
    def on_unfollowed(self, tx: SqlTx, event: UserUnfollowed, record: RecordedEvent) -> None:
        self.rows.unfollow(tx, event.follower_id, event.followee_id)

    @handles(UserForgotten)
    def on_forgotten(self, tx: SqlTx, event: UserForgotten, record: RecordedEvent) -> None:
        self.rows.forget(tx, event.id)


class Posts(Projection):
    """Posts per user, ordered by the event's global position (the pagination key); knows
    the registered users too, so a listing answers 404 from this projection alone."""

    name = "posts"
    on_failure = "park"
    pipelined = True  # handlers only write, and never look at row counts
    tables = ("posts", "post_authors")

    def __init__(self, rows: PostRows) -> None:
        self.rows = rows

    def create_schema(self, tx: SqlTx) -> None:
        self.rows.create_schema(tx)

    @handles(UserRegistered)
    def on_registered(self, tx: SqlTx, event: UserRegistered, record: RecordedEvent) -> None:
        self.rows.add_author(tx, event.id)

    @handles(PostCreated)
    def on_post(self, tx: SqlTx, event: PostCreated, record: RecordedEvent) -> None:
        self.rows.add_post(
            tx,
            position=record.position,
            id=event.id,
            user_id=event.user_id,
            content=event.content,
            created_at=event.created_at,
        )

    @handles(UserForgotten)
    def on_forgotten(self, tx: SqlTx, event: UserForgotten, record: RecordedEvent) -> None:
        self.rows.forget(tx, event.id)


class Follows(Projection):
    """Who follows whom, with the users' display names kept current here, so both lists
    (followers, following) are answered from this projection alone."""

    name = "follows"
    on_failure = "park"
    pipelined = True  # handlers only write, and never look at row counts
    tables = ("follows", "follow_users")

    def __init__(self, rows: FollowRows) -> None:
        self.rows = rows

    def create_schema(self, tx: SqlTx) -> None:
        self.rows.create_schema(tx)

    @handles(UserRegistered)
    def on_registered(self, tx: SqlTx, event: UserRegistered, record: RecordedEvent) -> None:
        self.rows.add_user(tx, event.id, event.display_name, default_display_name(event.email))

    @handles(UserProfileUpdated)
    def on_updated(self, tx: SqlTx, event: UserProfileUpdated, record: RecordedEvent) -> None:
        self.rows.rename_user(tx, event.id, event.display_name)

    @handles(UserFollowed)
    def on_followed(self, tx: SqlTx, event: UserFollowed, record: RecordedEvent) -> None:
        self.rows.add_follow(tx, event.follower_id, event.followee_id, record.position)

    @handles(UserUnfollowed)
    def on_unfollowed(self, tx: SqlTx, event: UserUnfollowed, record: RecordedEvent) -> None:
        self.rows.remove_follow(tx, event.follower_id, event.followee_id)

    @handles(UserForgotten)
    def on_forgotten(self, tx: SqlTx, event: UserForgotten, record: RecordedEvent) -> None:
        self.rows.forget(tx, event.id)
