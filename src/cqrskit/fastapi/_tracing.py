"""Tracing each HTTP request: its id, one access log line, a metrics callback and a span,
in one pure ASGI layer (a ``BaseHTTPMiddleware`` costs a task and a stream per request).

:func:`cqrskit.fastapi.connect` wraps the whole middleware stack of the FastAPI app with
it, so it is the outermost layer whatever middleware the app adds, before or after
``connect``: even a 500 from Starlette's error middleware carries the request id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _telemetry
from .._tracing import new_request_id, reset_request_id, set_request_id, valid_request_id
from ..errors import ConfigurationError

__all__ = ["METHODS", "REQUEST_ID_HEADER", "UNMATCHED", "RequestObserver", "RequestTracing"]

REQUEST_ID_HEADER = b"x-request-id"

METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "QUERY"}
)
"""Methods reported as themselves; any other is ``_OTHER`` (a client picks the method:
metrics labels must stay a bounded set)."""

UNMATCHED = "unmatched"
"""The route of a request that matched none (a 404, a redirect): never the raw path."""

RequestObserver = Callable[[str, str, int, float], None]
"""``on_request(method, route template, status, seconds)``, called after each request."""

access_log = logging.getLogger("cqrskit.access")


class RequestTracing:
    """Every HTTP request:

    - gets a request id: the client's ``X-Request-ID`` when valid (1 to 128 characters of
      ``A-Z a-z 0-9 . _ : -``), else a new one; the response carries it back in
      ``X-Request-ID``, and while the request runs it is the id of its log lines and the
      correlation id of the commands it dispatches (:meth:`cqrskit.App.dispatch`);
    - is one line of the ``cqrskit.access`` log, at INFO: ``METHOD PATH STATUS DURATIONms``
      (the record also carries ``method``, ``path``, ``route``, ``status``,
      ``duration_ms``);
    - is passed to ``on_request(method, route, status, seconds)``: the route is the
      template (``/users/{user_id}``), never the raw path, so metrics stay bounded;
    - has an OpenTelemetry span, when the API is installed and an SDK set up (see
      :mod:`cqrskit._telemetry`).
    """

    def __init__(self, app: ASGIApp, on_request: RequestObserver | None = None) -> None:
        self.app = app
        self.on_request = on_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = valid_request_id(value)
                break
        if request_id is None:
            request_id = new_request_id()
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500  # what the server answers when the app sent nothing
        method = scope["method"] if scope["method"] in METHODS else "_OTHER"
        route: str | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = set_request_id(request_id)
        try:
            with _telemetry.request_span(method, scope["headers"], request_id) as span:
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    route = _route(scope)
                    _telemetry.finish_request(span, method, route, status)
        finally:
            try:
                seconds = time.perf_counter() - started
                self._done(scope, method, route or UNMATCHED, status, seconds)
            finally:
                reset_request_id(token)

    def _done(self, scope: Scope, method: str, route: str, status: int, seconds: float) -> None:
        if self.on_request is not None:
            self.on_request(method, route, status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            sent, path, ms = scope["method"], scope["path"], round(seconds * 1000, 1)
            # Made and handled as logger.info would, less the look for the caller's source
            # line (a third of the cost; it would be this line anyway).
            record = access_log.makeRecord(
                access_log.name,
                logging.INFO,
                __file__,
                0,
                "%s %s %d %.1fms",
                (sent, path, status, ms),
                None,
                extra={
                    "method": sent,
                    "path": path,
                    "route": route,
                    "status": status,
                    "duration_ms": ms,
                },
            )
            access_log.handle(record)


def _route(scope: Scope) -> str | None:
    """The template of the route that answered (Starlette puts the route in the scope)."""
    route: Any = scope.get("route")
    if route is None:
        return None
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else None


def trace_requests(api: FastAPI, on_request: RequestObserver | None = None) -> None:
    """Make :class:`RequestTracing` the outermost layer of ``api`` (outside Starlette's
    error middleware and any middleware added before or after this call)."""
    if api.middleware_stack is not None:
        raise ConfigurationError("trace the requests of a FastAPI app before it serves")
    build = api.build_middleware_stack

    def build_traced() -> ASGIApp:
        return RequestTracing(build(), on_request)

    api.build_middleware_stack = build_traced  # type: ignore[method-assign]
