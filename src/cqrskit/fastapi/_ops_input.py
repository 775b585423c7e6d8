"""Reading an operator's request: the JSON body of an action and the query parameters,
checked field by field so that bad input is a 4xx with ``{"error": ...}``, never a 500."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from ..actions import ACTIONS

__all__ = [
    "FIELDS",
    "MAX_BODY",
    "ActionInput",
    "BadInput",
    "count",
    "limited_body",
    "number",
    "operator",
    "read_action",
]

MAX_BODY = 16 * 1024
MAX_TEXT = 1000
MAX_POSITION = 2**63 - 1
"""Positions are BIGINT: a larger one is bad input, not a database error."""
LATEST_EPOCH = 253402300799.0
"""9999-12-31T23:59:59Z: ``to_time`` beyond is bad input."""

FIELDS: dict[str, frozenset[str]] = {
    "pause": frozenset({"reason"}),
    "resume": frozenset({"reason"}),
    "restart": frozenset({"reason"}),
    "retry": frozenset({"reason", "stream_id"}),
    "skip": frozenset({"reason", "stream_id", "position"}),
    "rewind": frozenset({"reason", "position", "to_position", "to_time"}),
}
"""The body fields each action takes (any other is refused)."""
assert set(FIELDS) == set(ACTIONS)


class BadInput(Exception):
    """A request the routes refuse: ``status`` (400, 413 or 422) and why."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ActionInput:
    reason: str = ""
    stream_id: str | None = None
    position: int | None = None
    to_time: float | None = None
    """Epoch seconds."""


async def read_action(request: Request, action: str) -> ActionInput:
    """The body of ``action``: a JSON object of the fields :data:`FIELDS` allows (none,
    or an empty body, for an action that needs none)."""
    raw = await limited_body(request, MAX_BODY)
    if not raw.strip():
        body: Any = {}
    else:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise BadInput("Malformed JSON body", 400) from None
    if not isinstance(body, dict):
        raise BadInput("The request body must be a JSON object", 400)
    allowed = FIELDS[action]
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadInput(
            f"{action} takes {', '.join(sorted(allowed))}; not {', '.join(map(repr, unknown))}"
        )
    reason = _text(body, "reason") or ""
    stream_id = _text(body, "stream_id")
    position = _position(body, "position")
    if action != "rewind":
        return ActionInput(reason, stream_id, position)
    to_position = _position(body, "to_position")
    if position is not None and to_position is not None:
        raise BadInput("give to_position (or position), not both")
    to_time = _moment(body.get("to_time"))
    position = to_position if to_position is not None else position
    if (position is None) == (to_time is None):
        raise BadInput("rewind needs exactly one of to_position and to_time")
    return ActionInput(reason, None, position, to_time)


async def limited_body(request: Request, limit: int) -> bytes:
    """The request's body, read no further than ``limit`` bytes (413 beyond)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadInput(f"The body is over {limit} bytes", 413)
    return bytes(body)


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BadInput(f"{name} must be a string of at most {MAX_TEXT} characters")
    return value


def _position(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POSITION:
        raise BadInput(f"{name} must be a whole number from 0 to {MAX_POSITION}")
    return value


def _moment(value: Any) -> float | None:
    """``to_time`` as epoch seconds: a number, or an ISO 8601 date-time string (UTC when
    it gives no offset)."""
    if value is None:
        return None
    moment: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        text = value.strip()
        try:
            moment = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                moment = None
            else:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                moment = parsed.timestamp()
    if moment is None or not math.isfinite(moment) or not 0 <= moment <= LATEST_EPOCH:
        raise BadInput(
            "to_time must be epoch seconds or an ISO 8601 date-time"
            " (e.g. 2025-01-31T12:00:00Z), from 1970 to 9999"
        )
    return moment


def number(request: Request, name: str, default: float, low: float, high: float) -> float:
    """The query parameter ``name``, a number from ``low`` to ``high``."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw) if len(raw) <= 32 else math.nan
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN too
        raise BadInput(f"{name} must be a number from {low:g} to {high:g}")
    return value


def count(request: Request, name: str, default: int, high: int) -> int:
    """The query parameter ``name``, a whole number from 1 to ``high``."""
    value = number(request, name, default, 1, high)
    if not float(value).is_integer():
        raise BadInput(f"{name} must be a whole number from 1 to {high}")
    return int(value)


def operator(request: Request) -> str:
    """Who asks, for the record: ``http:<client address>``, after the name the client
    gives in ``X-Operator`` when it gives one."""
    where = f"http:{request.client.host if request.client else 'unknown'}"
    who = request.headers.get("x-operator")
    if who is None:
        return where
    who = who.strip()
    if not who or len(who) > 64 or not who.isprintable():
        raise BadInput("X-Operator must be a printable name of at most 64 characters", 400)
    return f"{who} ({where})"
