"""Request dependencies: the container, the caller's identity, the read's min position.

Every dependency is ``async def`` although none awaits: FastAPI runs a plain ``def``
dependency in a worker thread, a thread hop per dependency per request (a fifth of the
event loop's time under load). These are all microseconds of CPU (an HMAC at most), so
they run on the loop instead."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request

from ..application.tokens import InvalidToken
from ..domain import UserNotFound
from ..domain.values import is_clean_text
from ..infrastructure.bootstrap import SocialApp
from .errors import BadRequest

__all__ = ["MAX_POSITION_DIGITS", "Caller", "CurrentUser", "MinPosition", "Services", "UserId"]

MAX_POSITION_DIGITS = 19
"""A position is a signed 64-bit integer (BIGINT) in every store."""


async def _container(request: Request) -> SocialApp:
    container: SocialApp = request.app.state.container
    return container


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("Authorization must be 'Bearer <token>'")
    return token.strip()


async def _current_user(
    container: Annotated[SocialApp, Depends(_container)],
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    token = _bearer(authorization)
    if token is None:
        raise InvalidToken("Missing bearer token")
    return container.tokens.verify(token)


async def _caller(
    container: Annotated[SocialApp, Depends(_container)],
    authorization: Annotated[str | None, Header()] = None,
) -> str | None:
    """The caller on a public route: anonymous when the token is absent or not valid."""
    try:
        token = _bearer(authorization)
        return None if token is None else container.tokens.verify(token)
    except InvalidToken:
        return None


async def _user_id(user_id: Annotated[str, Path()]) -> str:
    """A path id that could not be stored (a NUL, a lone surrogate) names nobody."""
    if not is_clean_text(user_id):
        raise UserNotFound(user_id)
    return user_id


async def _min_position(x_min_position: Annotated[str | None, Header()] = None) -> int | None:
    if x_min_position is None:
        return None
    value = x_min_position.strip()
    # Bounded before int(): Python refuses to convert more than 4,300 digits (a 500), and
    # no position is longer than a BIGINT's 19 digits.
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_POSITION_DIGITS):
        raise BadRequest(
            f"X-Min-Position must be a non-negative integer of at most {MAX_POSITION_DIGITS} digits"
        )
    return int(value)


Services = Annotated[SocialApp, Depends(_container)]
CurrentUser = Annotated[str, Depends(_current_user)]
Caller = Annotated[str | None, Depends(_caller)]
UserId = Annotated[str, Depends(_user_id)]
MinPosition = Annotated[int | None, Depends(_min_position)]
