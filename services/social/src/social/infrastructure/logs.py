"""Log lines that a request cannot forge.

What a client sends (a path, a header, an email) ends up in log messages. A line break in
it would start what reads as a new line of the log (a fake ``CRITICAL ...`` after a
``%0A`` in the path), so every control character of a message, line and paragraph
separators included, is written escaped (``\\n``, ``\\x1b``): one log record, one line. A
traceback, which the formatter appends after the message, keeps its lines.

The service logs through ``cqrskit.cli.configure_logging``, whose text format does this
(and adds the request id); JSON lines (``--log-format json``) are one line by nature.
"""

from __future__ import annotations

from cqrskit.cli import TextFormatter

__all__ = ["OneLineFormatter"]

OneLineFormatter = TextFormatter
"""A :class:`logging.Formatter` whose message part is always one line."""
