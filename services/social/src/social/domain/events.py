"""What happened, in the past tense. Frozen dataclasses; times are ISO 8601 UTC strings."""

from __future__ import annotations

from dataclasses import dataclass

from cqrskit.messages import Event

__all__ = [
    "ALL_EVENTS",
    "PostCreated",
    "UserFollowed",
    "UserProfileUpdated",
    "UserRegistered",
    "UserUnfollowed",
]


@dataclass(frozen=True)
class UserRegistered(Event):
    id: str
    email: str
    """Normalized (trimmed, domain lower-cased)."""
    password_hash: str
    """``scrypt$n$r$p$salt$hash``: never copied into a read model or a response."""
    display_name: str | None
    avatar_url: str | None
    registered_at: str


@dataclass(frozen=True)
class UserProfileUpdated(Event):
    """The whole public profile after the change (``display_name`` None: the default)."""

    id: str
    display_name: str | None
    avatar_url: str | None
    updated_at: str


@dataclass(frozen=True)
class UserFollowed(Event):
    follower_id: str
    followee_id: str
    followed_at: str


@dataclass(frozen=True)
class UserUnfollowed(Event):
    follower_id: str
    followee_id: str
    unfollowed_at: str


@dataclass(frozen=True)
class PostCreated(Event):
    id: str
    user_id: str
    content: str
    created_at: str


ALL_EVENTS: tuple[type[Event], ...] = (
    UserRegistered,
    UserProfileUpdated,
    UserFollowed,
    UserUnfollowed,
    PostCreated,
)
