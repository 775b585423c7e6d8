"""What clients ask the read side: noun names, typed answers. The SQL answering them is in
``social.infrastructure.queries``; queries skip the domain."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from cqrskit import Query

from ..domain import InvalidValue

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Authenticate",
    "FollowView",
    "GetUser",
    "ListFollowers",
    "ListFollowing",
    "ListPosts",
    "Page",
    "PostView",
    "UserView",
    "decode_cursor",
    "encode_cursor",
]

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class UserView:
    id: str
    display_name: str
    avatar_url: str | None
    created_at: str
    post_count: int
    follower_count: int
    following_count: int
    version: int
    email: str | None
    """Only filled in when the viewer is the user."""


@dataclass(frozen=True, slots=True)
class PostView:
    id: str
    user_id: str
    content: str
    created_at: str


@dataclass(frozen=True, slots=True)
class FollowView:
    id: str
    display_name: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None
    """Cursor of the next (older) page; None on the last page."""


@dataclass(frozen=True)
class GetUser(Query[UserView]):
    user_id: str
    viewer_id: str | None = None


@dataclass(frozen=True)
class ListPosts(Query[Page[PostView]]):
    user_id: str
    limit: int = DEFAULT_LIMIT
    before: str | None = None


@dataclass(frozen=True)
class ListFollowers(Query[Page[FollowView]]):
    user_id: str
    limit: int = DEFAULT_LIMIT
    before: str | None = None


@dataclass(frozen=True)
class ListFollowing(Query[Page[FollowView]]):
    user_id: str
    limit: int = DEFAULT_LIMIT
    before: str | None = None


@dataclass(frozen=True)
class Authenticate(Query[str]):
    """Answers the user id when the email and password match (on the write model)."""

    email: str
    password: str = field(repr=False)


# Cursors are the global position of the last item shown: positions never repeat and a
# newer item always gets a higher one, so a page after the cursor is unaffected by inserts.
_CURSOR_PREFIX = "p"


def encode_cursor(position: int) -> str:
    raw = f"{_CURSOR_PREFIX}{position}".encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if not raw.startswith(_CURSOR_PREFIX) or not raw[1:].isdigit():
            raise ValueError(cursor)
        position = int(raw[1:])
        if position >= 2**63:  # beyond BIGINT: no database could compare it
            raise ValueError(cursor)
        return position
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidValue("before", "not a valid cursor") from None
