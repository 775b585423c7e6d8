"""Errors at the HTTP edge: cqrskit's errors (and an app's own) as statuses, each answered
as ``{"error": "<message>", ...}``; request validation as 422 (400 for a body that is not
JSON). Bad input never gives a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from ..errors import (
    ConcurrencyError,
    ConsistencyTimeout,
    DamagedDatabase,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    OperationalError,
    PositionBeyondLog,
    StorageFull,
    StreamNotFound,
)

__all__ = [
    "BadRequest",
    "Conflict",
    "Error",
    "ErrorHandler",
    "NotCaughtUp",
    "error_response",
    "install_errors",
]

log = logging.getLogger("cqrskit.fastapi")

ErrorHandler = Callable[[Exception], Response]
"""Shapes the answer to one kind of error (for errors that carry more than a message)."""


class Error(BaseModel):
    """Every error's body: a message, and for some errors more fields."""

    model_config = ConfigDict(extra="allow")
    error: str


class Conflict(Error):
    """409: the version the client sent is not the current one."""

    current_version: int


class NotCaughtUp(Error):
    """503: the read side has not reached ``X-Min-Position`` in time (``head`` when the
    position is beyond the log: no write produced it, retrying cannot help)."""

    position: int
    head: int | None = None


class BadRequest(Exception):
    """A request the server cannot even parse (a bad header value, say): 400."""


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _conflict(exc: Exception) -> Response:
    assert isinstance(exc, ConcurrencyError)
    return error_response(409, "Conflict: resource has been modified", current_version=exc.actual)


def _not_caught_up(exc: Exception) -> Response:
    assert isinstance(exc, ConsistencyTimeout)
    if isinstance(exc, PositionBeyondLog):
        # Still a 503 with Retry-After, as for any position not reached in time; the
        # message and "head" tell a client that retrying cannot help.
        return error_response(
            503,
            f"X-Min-Position {exc.wanted} is beyond the log, which ends at position"
            f" {exc.head}: no write has produced it",
            headers={"Retry-After": "1"},
            position=exc.reached,
            head=exc.head,
        )
    return error_response(
        503,
        f"The read side has not reached position {exc.wanted} yet",
        headers={"Retry-After": "1"},
        position=exc.reached,
    )


def _storage_full(exc: Exception) -> Response:
    log.error("database full: %s", exc)  # names the file: for the operator only
    return error_response(
        507, "Insufficient storage: the database's disk is full, nothing was written"
    )


def _damaged(exc: Exception) -> Response:
    log.error("database damaged: %s", exc)
    return error_response(503, "The database is damaged; the operator must restore it")


def _unavailable(exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc)
    return error_response(
        503, "The database is unavailable, try again", headers={"Retry-After": "1"}
    )


DEFAULT_ERRORS: dict[type[Exception], int | ErrorHandler] = {
    BadRequest: 400,
    InvalidIdempotencyKey: 400,
    IdempotencyKeyReused: 422,
    StreamNotFound: 404,
    ConcurrencyError: _conflict,
    ConsistencyTimeout: _not_caught_up,
    StorageFull: _storage_full,
    DamagedDatabase: _damaged,
    OperationalError: _unavailable,
}
"""cqrskit's errors as HTTP answers; an app adds its own (``connect(..., errors=)``)."""


def install_errors(api: FastAPI, errors: Mapping[type[Exception], int | ErrorHandler]) -> None:
    """Answer each class of ``errors`` (and its subclasses: the most specific entry wins)
    with its status and ``{"error": str(exc)}``, or with its handler's response."""
    table = {**DEFAULT_ERRORS, **errors}

    def answer(request: Request, exc: Exception) -> Response:
        how = next(table[c] for c in type(exc).__mro__ if c in table)
        return how(exc) if callable(how) else error_response(how, str(exc))

    for cls in table:
        api.add_exception_handler(cls, answer)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(HTTPException, _http_error)


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
