"""Where a command's log lines go, and in which format (``--log-format text|json``)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from .._tracing import JsonFormatter, RequestIdFilter, TextFormatter

__all__ = ["LOG_FORMATS", "configure_logging"]

LOG_FORMATS = ("text", "json")


class _CommandHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure_logging` installs (and replaces on a second call)."""


def configure_logging(log_format: str = "text", *, access_log: bool = True) -> None:
    """Log lines on stderr (stdout is for what a command answers), at INFO: ``text``
    (``TIME LEVEL LOGGER MESSAGE request_id=...``, one line each) or ``json`` (one object
    per line, see :class:`~cqrskit.cli.JsonFormatter`); each carries the id of the request
    it was written for. ``access_log=False`` leaves out the ``cqrskit.access`` lines (one
    per request: about 10 us each). A second call replaces the first one's handler."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CommandHandler)]:
        root.removeHandler(old)
    handler = _CommandHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("cqrskit.access").setLevel(logging.NOTSET if access_log else logging.WARNING)
