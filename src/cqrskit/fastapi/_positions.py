"""The consistency headers: ``X-Position`` on answers, ``X-Min-Position`` on reads."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import Depends, Header
from fastapi.responses import Response

from ..bus import CommandResult, QueryResult
from ._errors import BadRequest

__all__ = ["MAX_POSITION_DIGITS", "POSITION_HEADER", "MinPosition", "min_position", "respond"]

MAX_POSITION_DIGITS = 19
"""A position is a signed 64-bit integer (BIGINT) in every store."""

POSITION_HEADER = {
    "X-Position": {
        "description": "The log position this answer reflects: send it as X-Min-Position"
        " to read your writes.",
        "schema": {"type": "integer", "minimum": 0},
    }
}
"""The response header, as OpenAPI documents it."""

_json = msgspec.json.Encoder()


async def min_position(
    x_min_position: Annotated[
        str | None,
        Header(
            description="A position (0 to 19 digits) from an X-Position: wait, bounded,"
            " until the read side has reached it; 503 with Retry-After if it does not in"
            " time, 400 if it is not a position.",
            examples=["42"],
        ),
    ] = None,
) -> int | None:
    """The ``X-Min-Position`` header; 400 unless a non-negative integer of at most 19
    digits. ``async``: a plain ``def`` dependency would cost a thread hop per request."""
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


MinPosition = Annotated[int | None, Depends(min_position)]
"""A route parameter: the read's ``X-Min-Position`` (None when absent)."""


def respond(
    result: CommandResult[Any] | QueryResult[Any], body: Any = None, status_code: int = 200
) -> Response:
    """A JSON answer (``body``, else ``result.value``) carrying ``X-Position``. Encoded by
    msgspec (dataclasses and structs as objects), a fraction of ``json.dumps``'s time."""
    content = result.value if body is None else body
    headers = {"X-Position": str(result.position)}
    if isinstance(result, CommandResult) and result.replayed:
        headers["Idempotent-Replayed"] = "true"  # answered from its idempotency key
    return Response(
        _json.encode(content),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )
