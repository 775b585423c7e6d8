"""What happened, in the past tense. Frozen dataclasses; times are ISO 8601 UTC strings.

A user's personal data (email, password hash, display name, avatar URL) is declared on the
events that carry it: cqrskit stores those fields sealed with the user's own key
(``cqrskit.personal``), and :class:`UserForgotten` destroys the key in its append. The
events stay; what they held of the user becomes unreadable, and reads as placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass

from cqrskit.messages import Event

__all__ = [
    "ALL_EVENTS",
    "PostCreated",
    "UserFollowed",
    "UserForgotten",
    "UserProfileUpdated",
    "UserRegistered",
    "UserUnfollowed",
]


@dataclass(frozen=True)
class UserRegistered(Event):
    __data_subject__ = "id"
    __personal_fields__ = ("email", "password_hash", "display_name", "avatar_url")
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

    __data_subject__ = "id"
    __personal_fields__ = ("display_name", "avatar_url")
    id: str
    display_name: str | None
    avatar_url: str | None
    updated_at: str


@dataclass(frozen=True)
class UserForgotten(Event):
    """The user asked to be forgotten: their key goes in this event's append, the read
    models drop them, and their email may register again."""

    __forgets__ = "id"
    id: str
    forgotten_at: str


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
    UserForgotten,
)
