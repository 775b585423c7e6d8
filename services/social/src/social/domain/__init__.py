"""The social domain: aggregates, events, rules and errors. Plain Python, no I/O."""

from .errors import InvalidValue, SocialError
from .events import (
    ALL_EVENTS,
    PostCreated,
    UserFollowed,
    UserForgotten,
    UserProfileUpdated,
    UserRegistered,
    UserUnfollowed,
)
from .follow import CannotFollowSelf, Follow
from .passwords import ScryptParams, hash_password, verify_password
from .post import Post
from .user import (
    KEEP,
    EmailAlreadyRegistered,
    InvalidCredentials,
    Keep,
    NotAllowed,
    UnknownActor,
    User,
    UserNotFound,
    WrongPassword,
)

__all__ = [
    "ALL_EVENTS",
    "KEEP",
    "CannotFollowSelf",
    "EmailAlreadyRegistered",
    "Follow",
    "InvalidCredentials",
    "InvalidValue",
    "Keep",
    "NotAllowed",
    "Post",
    "PostCreated",
    "ScryptParams",
    "SocialError",
    "UnknownActor",
    "User",
    "UserFollowed",
    "UserForgotten",
    "UserNotFound",
    "UserProfileUpdated",
    "UserRegistered",
    "UserUnfollowed",
    "WrongPassword",
    "hash_password",
    "verify_password",
]
