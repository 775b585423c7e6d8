"""Errors at the HTTP edge: one table from error classes to statuses, and the handlers
that shape every error as ``{"error": "<message>", ...}``. Bad input never gives a 500."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from cqrskit import (
    ConcurrencyError,
    ConsistencyTimeout,
    DamagedDatabase,
    OperationalError,
    PositionBeyondLog,
    StorageFull,
)

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
)

__all__ = ["STATUS_OF", "BadRequest", "BodyTooLarge", "install_error_handlers"]

log = logging.getLogger("social.api")


class BadRequest(Exception):
    """A request the server cannot even parse (a bad header value, say)."""


class BodyTooLarge(HTTPException):
    """A starlette ``HTTPException`` so that FastAPI's body reading lets it through as is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body too large (limit {limit} bytes)")


STATUS_OF: dict[type[Exception], int] = {
    BadRequest: 400,
    InvalidToken: 401,
    InvalidCredentials: 401,
    TooManyAttempts: 429,
    UnknownActor: 401,
    NotAllowed: 403,
    UserNotFound: 404,
    EmailAlreadyRegistered: 409,
    ConcurrencyError: 409,
    InvalidValue: 422,
    CannotFollowSelf: 422,
    ConsistencyTimeout: 503,
    OperationalError: 503,
    DamagedDatabase: 503,
    StorageFull: 507,
}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    status = next(STATUS_OF[c] for c in type(exc).__mro__ if c in STATUS_OF)
    match exc:
        case ConcurrencyError():
            return error_response(
                status, "Conflict: resource has been modified", current_version=exc.actual
            )
        case PositionBeyondLog():
            # Still a 503 with Retry-After, as the contract says of any position not
            # reached in time; the message and "head" tell a client that retrying cannot
            # help: no write produced this position.
            return error_response(
                status,
                f"X-Min-Position {exc.wanted} is beyond the log, which ends at position"
                f" {exc.head}: no write has produced it",
                headers={"Retry-After": "1"},
                position=exc.reached,
                head=exc.head,
            )
        case ConsistencyTimeout():
            return error_response(
                status,
                f"The read side has not reached position {exc.wanted} yet",
                headers={"Retry-After": "1"},
                position=exc.reached,
            )
        case InvalidValue():
            details = [{"field": exc.field, "message": exc.message}]
            return error_response(status, str(exc), details=details)
        case StorageFull():
            log.error("database full: %s", exc)
            return error_response(
                status, "Insufficient storage: the database's disk is full, nothing was written"
            )
        case DamagedDatabase():
            log.error("database damaged: %s", exc)  # names the file: for the operator only
            return error_response(status, "The database is damaged; the operator must restore it")
        case OperationalError():
            log.warning("database unavailable: %s", exc)
            return error_response(
                status, "The database is unavailable, try again", headers={"Retry-After": "1"}
            )
        case InvalidToken():
            return error_response(status, str(exc), headers={"WWW-Authenticate": "Bearer"})
        case TooManyAttempts():
            return error_response(status, str(exc), headers={"Retry-After": str(exc.retry_after)})
    return error_response(status, str(exc))


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            return error_response(400, "Malformed JSON body")
        if tuple(e.get("loc", ())) == ("body",):  # not an object (or no body at all)
            return error_response(400, "The request body must be a JSON object")
    # Only where, what and why: never the "input" (it may be a password).
    details = [
        {"field": _field(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
        for e in errors
    ]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return error_response(422, f"Invalid request: {summary}", details=details)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, str(exc.detail), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    for cls in STATUS_OF:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
