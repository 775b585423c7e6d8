"""social's own errors as HTTP answers (cqrskit.fastapi answers cqrskit's): one table from
error classes to statuses, and the few that carry more than a message."""

from __future__ import annotations

from fastapi.responses import Response
from starlette.exceptions import HTTPException

from cqrskit import UniqueViolation
from cqrskit.fastapi import ErrorHandler, error_response

from ..application.throttle import TooManyAttempts
from ..application.tokens import InvalidToken
from ..domain import (
    CannotFollowSelf,
    EmailAlreadyRegistered,
    InvalidCredentials,
    InvalidValue,
    NotAllowed,
    UnknownActor,
    UserNotFound,
    WrongPassword,
)

__all__ = ["ERRORS", "BodyTooLarge"]


class BodyTooLarge(HTTPException):
    """A starlette ``HTTPException`` so that FastAPI's body reading lets it through as is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body too large (limit {limit} bytes)")


def _invalid_value(exc: Exception) -> Response:
    assert isinstance(exc, InvalidValue)
    details = [{"field": exc.field, "message": exc.message}]
    return error_response(422, str(exc), details=details)


def _email_taken(exc: Exception) -> Response:
    # The write model's one UNIQUE constraint is the email's. Met in the handler, it is
    # EmailAlreadyRegistered; a command run once per idempotency key meets it at its
    # commit, after the handler returned, as cqrskit's UniqueViolation.
    return error_response(409, str(EmailAlreadyRegistered()))


def _invalid_token(exc: Exception) -> Response:
    return error_response(401, str(exc), headers={"WWW-Authenticate": "Bearer"})


def _too_many(exc: Exception) -> Response:
    assert isinstance(exc, TooManyAttempts)
    return error_response(429, str(exc), headers={"Retry-After": str(exc.retry_after)})


ERRORS: dict[type[Exception], int | ErrorHandler] = {
    InvalidToken: _invalid_token,
    InvalidCredentials: 401,
    TooManyAttempts: _too_many,
    UnknownActor: 401,
    WrongPassword: 401,
    NotAllowed: 403,
    UserNotFound: 404,
    EmailAlreadyRegistered: 409,
    UniqueViolation: _email_taken,
    InvalidValue: _invalid_value,
    CannotFollowSelf: 422,
}
