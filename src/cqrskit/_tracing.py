"""Request ids: the one of the request being served, and log records that carry it.

The HTTP integration (:class:`cqrskit.fastapi.RequestTracing`) sets the request id for the
time of a request; :meth:`cqrskit.App.dispatch` makes it the correlation id of the
commands dispatched meanwhile (so of their events), and :class:`RequestIdFilter` puts it
on every log record written meanwhile. Standard library only: the core needs no web
framework for it.

A request id a client sends is kept when it is 1 to 128 characters of ``A-Z a-z 0-9 . _
: -`` (what fits a log line and a header unescaped); any other value is replaced by a new
one (a uuid4 in hex).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, ClassVar

from .context import current_context

__all__ = [
    "JsonFormatter",
    "RequestIdFilter",
    "TextFormatter",
    "current_request_id",
    "escape_controls",
    "new_request_id",
    "reset_request_id",
    "set_request_id",
    "valid_request_id",
]

_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

_request_id: ContextVar[str | None] = ContextVar("cqrskit_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the HTTP request being served (None outside one)."""
    return _request_id.get()


def set_request_id(value: str | None) -> Token[str | None]:
    return _request_id.set(value)


def reset_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)


def valid_request_id(value: bytes) -> str | None:
    """``value`` (a header's bytes) as a request id, or None when it is not one."""
    return value.decode("ascii") if _VALID.fullmatch(value) else None


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current request's, else None) and ``correlation_id`` (the
    current command's, else None) to every record it sees, unless the record has its own.
    Put it on a handler (not a logger): a handler's filters see the records of every
    logger that reaches it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        if not hasattr(record, "correlation_id"):
            ctx = current_context()
            record.correlation_id = (ctx.correlation_id or ctx.command_id) if ctx else None
        return True


_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, 0x85)}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


_CONTROLS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with every control character and line separator written escaped: what a
    client sent (a path, a header) cannot start what reads as a new log line."""
    # The search first: a line rarely has any, and it costs a tenth of the translation.
    return text.translate(_ESCAPES) if _CONTROLS.search(text) else text


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER MESSAGE`` and, when the record has them, ``request_id=...``
    and ``correlation_id=...`` (when it differs from the request id). The message part is
    always one line (see :func:`escape_controls`); a traceback keeps its lines."""

    def __init__(self, fmt: str | None = "%(asctime)s %(levelname)s %(name)s %(message)s") -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = escape_controls(super().formatMessage(record))
        request_id = getattr(record, "request_id", None)
        correlation_id = getattr(record, "correlation_id", None)
        if request_id:
            line += f" request_id={request_id}"
        if correlation_id and correlation_id != request_id:
            line += f" correlation_id={escape_controls(str(correlation_id))}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``; ``request_id`` and ``correlation_id`` when the record has them; the
    fields of :attr:`FIELDS` a record carries (the access log's); ``exc_info`` (the
    traceback, one string) and ``stack_info`` when present."""

    FIELDS: ClassVar[tuple[str, ...]] = ("method", "path", "route", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "correlation_id", *self.FIELDS):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)
