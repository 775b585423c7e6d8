"""Request dependencies: the container, the caller's identity, the read's min position.

Every dependency is ``async def`` although none awaits: FastAPI runs a plain ``def``
dependency in a worker thread, a thread hop per dependency per request (a fifth of the
event loop's time under load). These are all microseconds of CPU (an HMAC at most), so
they run on the loop instead."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cqrskit.fastapi import MinPosition as _MinPosition

from ..application.tokens import InvalidToken
from ..domain import UserNotFound
from ..domain.values import is_clean_text
from ..infrastructure.bootstrap import SocialApp

__all__ = ["Caller", "CurrentUser", "MinPosition", "Services", "UserId"]

_BEARER = HTTPBearer(auto_error=False, description="The token of POST /sessions.")
"""Documents the bearer scheme in OpenAPI; the header itself is parsed below, so that a
malformed one gets its own 401 message."""


async def _container(request: Request) -> SocialApp:
    container: SocialApp = request.app.state.cqrskit
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
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
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


Services = Annotated[SocialApp, Depends(_container)]
CurrentUser = Annotated[str, Depends(_current_user)]
Caller = Annotated[str | None, Depends(_caller)]
UserId = Annotated[str, Depends(_user_id)]
MinPosition = _MinPosition
