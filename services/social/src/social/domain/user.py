"""The User aggregate: registration and profile changes, and the errors they raise."""

from __future__ import annotations

import enum

from cqrskit.aggregate import Aggregate
from cqrskit.messages import Event

from .errors import SocialError
from .events import UserForgotten, UserProfileUpdated, UserRegistered
from .values import normalize_email, validate_avatar_url, validate_display_name

__all__ = [
    "KEEP",
    "EmailAlreadyRegistered",
    "InvalidCredentials",
    "Keep",
    "NotAllowed",
    "UnknownActor",
    "User",
    "UserNotFound",
    "WrongPassword",
]


class EmailAlreadyRegistered(SocialError):
    def __init__(self) -> None:
        super().__init__("Email already registered")


class InvalidCredentials(SocialError):
    """Same message whether the email or the password was wrong: no account probing."""

    def __init__(self) -> None:
        super().__init__("Invalid email or password")


class UnknownActor(SocialError):
    """The user a request acts as (the token's) does not exist, or no longer: the request
    is not authenticated, whatever the token's signature says."""

    def __init__(self) -> None:
        super().__init__("Invalid or expired token")


class WrongPassword(SocialError):
    """The password a user confirmed a destructive change with is not theirs."""

    def __init__(self) -> None:
        super().__init__("Wrong password")


class UserNotFound(SocialError):
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        super().__init__("User not found")


class NotAllowed(SocialError):
    def __init__(self, message: str = "Not allowed") -> None:
        super().__init__(message)


class Keep(enum.Enum):
    """Marks a profile field a change leaves as it is (``None`` clears it)."""

    KEEP = "keep"


KEEP = Keep.KEEP


class User(Aggregate):
    stream_prefix = "user"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.email = ""
        self.password_hash = ""
        self.display_name: str | None = None
        self.avatar_url: str | None = None
        self.forgotten = False

    @property
    def active(self) -> bool:
        """Registered and not forgotten: someone a request may act as or about."""
        return self.exists and not self.forgotten

    @classmethod
    def register(
        cls,
        id: str,
        email: str,
        password_hash: str,
        display_name: str | None,
        avatar_url: str | None,
        now: str,
    ) -> User:
        user = cls(id)
        user.record(
            UserRegistered(
                id=id,
                email=normalize_email(email),
                password_hash=password_hash,
                display_name=None if display_name is None else validate_display_name(display_name),
                avatar_url=None if avatar_url is None else validate_avatar_url(avatar_url),
                registered_at=now,
            )
        )
        return user

    def update_profile(
        self,
        by: str,
        display_name: str | Keep | None,
        avatar_url: str | Keep | None,
        now: str,
    ) -> None:
        """Every accepted change is recorded, even one that repeats the current values:
        it is a write the client made against a version, and the version moves on."""
        if by != self.id:
            raise NotAllowed("You can only change your own profile")
        name = self.display_name if display_name is KEEP else display_name
        url = self.avatar_url if avatar_url is KEEP else avatar_url
        self.record(
            UserProfileUpdated(
                id=self.id,
                display_name=None if name is None else validate_display_name(name),
                avatar_url=None if url is None else validate_avatar_url(url),
                updated_at=now,
            )
        )

    def forget(self, by: str, now: str) -> None:
        """Forget this user (they asked, and confirmed with their password)."""
        if by != self.id:
            raise NotAllowed("You can only delete your own account")
        if not self.forgotten:
            self.record(UserForgotten(id=self.id, forgotten_at=now))

    def apply(self, event: Event) -> None:
        match event:
            case UserRegistered():
                self.email = event.email
                self.password_hash = event.password_hash
                self.display_name = event.display_name
                self.avatar_url = event.avatar_url
            case UserProfileUpdated():
                self.display_name = event.display_name
                self.avatar_url = event.avatar_url
            case UserForgotten():
                self.forgotten = True
                self.email, self.password_hash = "", ""
                self.display_name = self.avatar_url = None
            case _:
                super().apply(event)
