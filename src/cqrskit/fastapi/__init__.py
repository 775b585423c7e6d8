"""cqrskit in any FastAPI application: its lifespan, the consistency headers, the errors.

::

    api = FastAPI()
    bank = Bank("sqlite:///data")
    connect(api, bank, errors={AccountNotFound: 404})

    @api.post("/accounts", status_code=201, responses=responses(status=201, write=True))
    async def open_account(body: Opening) -> Response:
        result = await bank.dispatch(OpenAccount(body.owner))
        return respond(result, {"id": result.value}, status_code=201)

    @api.get("/accounts/{id}", responses=READ_RESPONSES)
    async def account(id: str, min_position: MinPosition) -> Response:
        return respond(await bank.ask(GetAccount(id), min_position=min_position))

- :func:`connect` opens the app with the FastAPI app (and closes it after the requests
  in flight), unless whoever runs it opened it already; ``run_projections=False`` makes
  an API process that reads what worker processes project. It installs the error answers
  (:data:`DEFAULT_ERRORS` plus the app's own).
- :data:`MinPosition` reads ``X-Min-Position`` (400 when malformed); ``app.ask(...,
  min_position=)`` waits, bounded, and answers 503 with ``Retry-After`` when the read side
  is not there in time; :func:`respond` puts ``X-Position`` on the answer.
- :func:`responses` (and :data:`READ_RESPONSES`, :data:`WRITE_RESPONSES`) documents, per
  route, the ``X-Position`` header and the error answers with their real body shape.
- :func:`connect` also makes :class:`RequestTracing` the outermost layer: ``X-Request-ID``
  on every response, the request id in log lines (:func:`current_request_id`) and in the
  events' correlation id, one ``cqrskit.access`` log line per request, ``on_request``
  (metrics) and a span. See docs/observability.md.
- :func:`operations_router`: the operator's ``/ops`` routes and live console, behind an
  operator token (docs/operations-console.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from .._tracing import current_request_id
from ..app import App
from ._errors import (
    DEFAULT_ERRORS,
    BadRequest,
    Conflict,
    Error,
    ErrorHandler,
    NotCaughtUp,
    error_response,
    install_errors,
)
from ._health import health_routes
from ._idempotency import (
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    IdempotencyKeyHeader,
    idempotency_key,
)
from ._operations import DEFAULT_ACTION_WAIT, operations_router
from ._positions import MAX_POSITION_DIGITS, POSITION_HEADER, MinPosition, min_position, respond
from ._tracing import RequestObserver, RequestTracing, trace_requests

__all__ = [
    "DEFAULT_ACTION_WAIT",
    "DEFAULT_ERRORS",
    "IDEMPOTENCY_HEADER",
    "MAX_POSITION_DIGITS",
    "READ_RESPONSES",
    "REPLAYED_HEADER",
    "WRITE_RESPONSES",
    "BadRequest",
    "Conflict",
    "Error",
    "ErrorHandler",
    "IdempotencyKeyHeader",
    "MinPosition",
    "NotCaughtUp",
    "RequestObserver",
    "RequestTracing",
    "application",
    "connect",
    "current_request_id",
    "error_response",
    "health_routes",
    "idempotency_key",
    "min_position",
    "operations_router",
    "respond",
    "responses",
    "trace_requests",
]

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "model": NotCaughtUp,
        "description": "The read side did not reach X-Min-Position in time, or the database"
        " is unavailable (the body then has only `error`); retry after Retry-After.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
    507: {"model": Error, "description": "The database's disk is full: nothing was written."},
}


def responses(
    *, status: int = 200, write: bool = False, extra: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: ``X-Position`` on its ``status``, the errors a read (or,
    with ``write``, a command) may answer with their body shapes, and ``extra`` statuses
    of the app's own (status: description, body ``Error``)."""
    documented: dict[int | str, dict[str, Any]] = {status: {"headers": POSITION_HEADER}}
    if write:
        documented[400] = {"model": Error, "description": "The body is not a JSON object."}
        documented[409] = {"model": Conflict, "description": "The version sent is not current."}
        documented[422] = {"model": Error, "description": "Invalid body (`details`: which)."}
    else:
        documented[400] = {"model": Error, "description": "X-Min-Position is not a position."}
        documented[422] = {"model": Error, "description": "Invalid parameters (`details`)."}
    documented.update(_UNAVAILABLE)
    for code, description in (extra or {}).items():
        documented[code] = {"model": Error, "description": description}
    return documented


READ_RESPONSES = responses()
"""``responses=`` of a read route answering 200."""

WRITE_RESPONSES = responses(write=True)
"""``responses=`` of a write route answering 200 (``responses(status=201, write=True)``
for one that creates)."""


def connect(
    api: FastAPI,
    app: App,
    *,
    errors: Mapping[type[Exception], int | ErrorHandler] | None = None,
    run_projections: bool | None = None,
    on_request: RequestObserver | None = None,
) -> None:
    """Serve ``app`` through ``api``: see the module docstring. ``on_request(method,
    route template, status, seconds)`` is called after each request (metrics)."""
    api.state.cqrskit = app
    install_errors(api, errors or {})
    trace_requests(api, on_request)
    inner = api.router.lifespan_context

    @asynccontextmanager
    async def lifespan(asgi: Any) -> AsyncIterator[Any]:
        if app.is_open:  # opened by whoever runs the server (to fail before listening)
            async with inner(asgi) as state:
                yield state
            return
        await app.open(run_projections=run_projections)
        try:
            async with inner(asgi) as state:
                yield state
        finally:
            await app.close()  # the server has finished the requests in flight

    api.router.lifespan_context = lifespan


async def application(request: Request) -> App:
    """A route dependency: the app :func:`connect` plugged into this FastAPI app."""
    app: App = request.app.state.cqrskit
    return app
