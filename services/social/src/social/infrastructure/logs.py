"""Log lines that a request cannot forge.

What a client sends (a path, a header, an email) ends up in log messages. A line break in
it would start what reads as a new line of the log (a fake ``CRITICAL ...`` after a
``%0A`` in the path), so every control character of a message, line and paragraph
separators included, is written escaped (``\\n``, ``\\x1b``): one log record, one line. A
traceback, which the formatter appends after the message, keeps its lines.
"""

from __future__ import annotations

import logging

__all__ = ["OneLineFormatter", "escape_controls"]

_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, 0x85)}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_controls(text: str) -> str:
    """``text`` with every control character and line separator written escaped."""
    return text.translate(_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose message part is always one line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))
