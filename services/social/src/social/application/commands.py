"""What clients ask the write side to do: imperative names, frozen dataclasses.

Each command names what its handler returns (``Command[UserVersion]``): the bus's
``dispatch`` answers a ``CommandResult`` of that type, and registering a handler that
returns something else is a type error."""

from __future__ import annotations

from dataclasses import dataclass, field

from cqrskit import Command

from ..domain import KEEP, Keep

__all__ = [
    "CreatePost",
    "Deleted",
    "FollowUser",
    "Following",
    "ForgetUser",
    "PostId",
    "RegisterUser",
    "UnfollowUser",
    "UpdateProfile",
    "UserVersion",
]


# -- what the handlers return (defined first: the commands below name them) -------------------


@dataclass(frozen=True, slots=True)
class UserVersion:
    id: str
    version: int


@dataclass(frozen=True, slots=True)
class PostId:
    id: str


@dataclass(frozen=True, slots=True)
class Following:
    following: bool


@dataclass(frozen=True, slots=True)
class Deleted:
    deleted: bool


# -- the commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterUser(Command[UserVersion]):
    email: str
    password: str = field(repr=False)  # never in a log line
    display_name: str | None = None
    avatar_url: str | None = None


@dataclass(frozen=True)
class UpdateProfile(Command[UserVersion]):
    user_id: str
    actor_id: str
    """The authenticated user making the change."""
    version: int
    """The user's version the client saw: checked atomically by the append."""
    display_name: str | Keep | None = KEEP
    avatar_url: str | Keep | None = KEEP


@dataclass(frozen=True)
class ForgetUser(Command[Deleted]):
    """Forget the user (``DELETE /users/me``): confirmed with their password."""

    user_id: str
    password: str = field(repr=False)  # never in a log line


@dataclass(frozen=True)
class CreatePost(Command[PostId]):
    author_id: str
    content: str


@dataclass(frozen=True)
class FollowUser(Command[Following]):
    follower_id: str
    followee_id: str


@dataclass(frozen=True)
class UnfollowUser(Command[Following]):
    follower_id: str
    followee_id: str
