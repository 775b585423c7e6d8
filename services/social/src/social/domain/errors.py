"""The root of the social domain's errors; each aggregate's errors live beside it."""

from __future__ import annotations

__all__ = ["InvalidValue", "SocialError"]


class SocialError(Exception):
    """Root of every error the social domain raises (mapped to HTTP statuses at the edge)."""


class InvalidValue(SocialError):
    """A field's value breaks a rule (too short, too long, malformed)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")
