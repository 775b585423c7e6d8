"""Request and response bodies. Strict types (a number is not a string, nor the reverse);
length and format rules are the domain's, checked once, there."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = [
    "STATUS_FIELDS",
    "FollowItem",
    "FollowPage",
    "Following",
    "NewPost",
    "PostCreated",
    "PostItem",
    "PostPage",
    "ProfileChange",
    "ProjectionFailureInfo",
    "ProjectionInfo",
    "Registration",
    "SessionRequest",
    "SessionToken",
    "UserOut",
    "UserVersionOut",
]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class Registration(_Body):
    email: str
    password: str
    display_name: str | None = None
    avatar_url: str | None = None


class SessionRequest(_Body):
    email: str
    password: str


class Forget(_Body):
    """The password confirms it: ``DELETE /users/me`` cannot be undone."""

    password: str


class ProfileChange(_Body):
    """A field left out stays as it is; ``null`` clears it (the name falls back to the
    email's local part)."""

    version: int
    display_name: str | None = None
    avatar_url: str | None = None


class NewPost(_Body):
    content: str


class UserVersionOut(BaseModel):
    id: str
    version: int


class SessionToken(BaseModel):
    token: str
    user_id: str


class UserOut(BaseModel):
    id: str
    display_name: str
    avatar_url: str | None
    created_at: str
    post_count: int
    follower_count: int
    following_count: int
    version: int
    email: str | None = None
    """Present only when the caller is this user."""


class PostCreated(BaseModel):
    id: str


class PostItem(BaseModel):
    id: str
    user_id: str
    content: str
    created_at: str


class PostPage(BaseModel):
    items: list[PostItem]
    next: str | None


class FollowItem(BaseModel):
    id: str
    display_name: str


class FollowPage(BaseModel):
    items: list[FollowItem]
    next: str | None


class DeletedOut(BaseModel):
    deleted: bool


class Following(BaseModel):
    following: bool


class ProjectionFailureInfo(BaseModel):
    """Why a projection stopped: the event it stopped at (none for a failure no event
    caused: the log diverged, say) and the error."""

    position: int
    event_id: str
    event_type: str
    stream_id: str
    message: str
    attempts: int
    since: float


class ProjectionInfo(BaseModel):
    name: str
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    state: str
    error: ProjectionFailureInfo | None
    parked: int


STATUS_FIELDS = tuple(ProjectionInfo.model_fields)
"""What ``GET /projections`` and ``social status --json`` show of a ProjectionStatus."""
