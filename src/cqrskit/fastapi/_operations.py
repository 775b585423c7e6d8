"""The operator's HTTP API and live console for any app: :func:`operations_router`.

::

    api.include_router(operations_router(app, token=os.environ.get("MYAPP_OPS_TOKEN")))

Routes (under ``prefix``, ``/ops`` by default; none in the OpenAPI document):

- ``GET /ops``: the console page (HTML), or, without a session, the login form (401);
  ``POST /ops/login`` (form field ``token``) sets the session cookie; ``POST
  /ops/logout`` clears it; ``GET /ops/console.js`` and ``/ops/console.css``: its code.
- ``GET /ops/projections`` (``{"projections": [...]}``: each projection's status, with
  ``error``, ``parked`` and ``on_failure``), ``GET /ops/projections/{name}``,
  ``GET /ops/projections/{name}/parked?stream_id=&limit=`` (``{"parked": [...]}``),
  ``GET /ops/actions?projection=&limit=`` (``{"actions": [...]}``, newest first),
  ``GET /ops/actions/{id}``.
- ``GET /ops/relays`` (``{"relays": [...]}``): what each relay to a broker last reported
  of itself in the read database (:func:`cqrskit.monitoring.relay_reports`), with its lag.
- ``POST /ops/projections/{name}/{pause|resume|restart|retry|skip|rewind}[?wait=s]``
  with a JSON body (``reason``, and per action ``stream_id``, ``position``,
  ``to_position``, ``to_time``): 200 with the action once done, 202 while pending
  (``Location``: the action), 409 when it failed (its ``error`` says why).

Bad input: 400, 413 or 422; an unknown projection or action: 404; an action that cannot
be asked as given (a skip without a reason): 422; all as ``{"error": ...}``. Who may: see
:mod:`cqrskit.fastapi._operator_auth`. Without a token every route answers 404.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ..actions import Action
from ..app import App
from ..errors import ConfigurationError, InvalidAction, UnknownProjection
from ..monitoring import relay_reports
from ._operator_auth import SESSION_SECONDS, Denied, OperatorAuth
from ._ops_input import BadInput, count, limited_body, number, operator, read_action

__all__ = ["DEFAULT_ACTION_WAIT", "operations_router"]

DEFAULT_ACTION_WAIT = 5.0
"""Seconds a POST waits for the action to be carried out before answering 202: under
the request deadlines that servers and proxies commonly set."""
MAX_WAIT = 60.0
_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)+")
_ACTION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

_PAGE_HEADERS = {
    # The page's own files only: no inline script or style, no other origin, no framing.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_JSON_HEADERS = {"Cache-Control": "no-store"}

Handler = Callable[..., Awaitable[Response]]


def _asset(name: str) -> str:
    return (resources.files("cqrskit.fastapi") / "_console" / name).read_text("utf-8")


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers={**_JSON_HEADERS, **headers})


def _json(body: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(body, status, headers={**_JSON_HEADERS, **headers})


def _base(request: Request, prefix: str) -> str:
    return f"{request.scope.get('root_path', '').rstrip('/')}{prefix}"


def operations_router(
    app: App,
    *,
    token: str | None,
    prefix: str = "/ops",
    wait: float = DEFAULT_ACTION_WAIT,
    session: float = SESSION_SECONDS,
) -> APIRouter:
    """The operator routes of ``app`` (see the module docstring), behind ``token`` (at
    least 16 characters); ``token`` None or empty: switched off, every route answers 404.
    A POST waits up to ``wait`` seconds (or its ``?wait=``) for its action; a console
    session lasts ``session`` seconds."""
    if not _PREFIX.fullmatch(prefix):
        raise ConfigurationError(f"the operations prefix must be a path like /ops, not {prefix!r}")
    router = APIRouter(prefix=prefix, include_in_schema=False)
    if not token:

        async def switched_off() -> Response:
            return _error(404, "Not Found")

        router.add_api_route("", switched_off, methods=_METHODS)
        router.add_api_route("/{rest:path}", switched_off, methods=_METHODS)
        return router
    auth = OperatorAuth(token, session=session)
    console, login = _asset("console.html"), _asset("login.html")
    script, style = _asset("console.js"), _asset("console.css")

    def page(template: str, request: Request, status: int, message: str = "") -> Response:
        base = html.escape(_base(request, prefix))
        text = template.replace("{{base}}", base).replace("{{message}}", html.escape(message))
        return Response(text, status, headers=_PAGE_HEADERS, media_type="text/html")

    def guarded(handler: Handler, *, change: bool = False) -> Handler:
        """``handler`` behind the token, its bad input and denials as JSON errors (with
        ``handler``'s signature, from which FastAPI takes the path parameters)."""

        @functools.wraps(handler)
        async def run(request: Request, **params: Any) -> Response:
            try:
                auth.check(request, change=change)
                return await handler(request, **params)
            except Denied as denied:
                extra = {"WWW-Authenticate": 'Bearer realm="ops"'} if denied.status == 401 else {}
                return _error(denied.status, denied.message, **extra)
            except BadInput as bad:
                return _error(bad.status, bad.message)
            except UnknownProjection as exc:
                return _error(404, str(exc))
            except InvalidAction as exc:
                return _error(422, str(exc))

        return run

    # -- the page ------------------------------------------------------------------------------

    @router.get("")
    async def console_page(request: Request) -> Response:
        try:
            auth.check(request)
        except Denied:
            return page(login, request, 401)
        return page(console, request, 200)

    @router.post("/login")
    async def log_in(request: Request) -> Response:
        try:
            raw = await limited_body(request, 4096)
        except BadInput as bad:
            return _error(bad.status, bad.message)
        try:
            form = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=4)
        except ValueError:  # more fields than a login form has
            form = {}
        given = (form.get("token") or [""])[0]
        if not auth.token_ok(given.strip()):
            return page(login, request, 401, "That is not the operator token.")
        response = RedirectResponse(_base(request, prefix), 303, headers=_PAGE_HEADERS)
        auth.set_cookie(response, request, _base(request, prefix))
        return response

    @router.post("/logout")
    async def log_out(request: Request) -> Response:
        response = RedirectResponse(_base(request, prefix), 303, headers=_PAGE_HEADERS)
        auth.clear_cookie(response, request, _base(request, prefix))
        return response

    @router.get("/console.js")
    async def console_script() -> Response:
        return Response(script, headers=_PAGE_HEADERS, media_type="text/javascript")

    @router.get("/console.css")
    async def console_style() -> Response:
        return Response(style, headers=_PAGE_HEADERS, media_type="text/css")

    # -- views ---------------------------------------------------------------------------------

    async def statuses(names: set[str] | None = None) -> list[dict[str, Any]]:
        found = []
        for status in await app.status():
            if names is None or status.name in names:
                policy = app.operations.projection(status.name).on_failure
                found.append({**status.to_dict(), "on_failure": policy})
        return found

    async def projections(request: Request) -> Response:
        return _json({"projections": await statuses()})

    async def projection(request: Request, name: str) -> Response:
        app.operations.projection(name)
        (found,) = await statuses({name})
        return _json(found)

    async def parked(request: Request, name: str) -> Response:
        stream_id = request.query_params.get("stream_id")
        limit = count(request, "limit", 100, 1000)
        events = await app.operations.parked(name, stream_id=stream_id, limit=limit)
        return _json({"projection": name, "parked": [e.to_dict() for e in events]})

    async def history(request: Request) -> Response:
        name = request.query_params.get("projection")
        limit = count(request, "limit", 50, 500)
        actions = await app.operations.history(name, limit=limit)
        return _json({"actions": [a.to_dict() for a in actions]})

    async def one_action(request: Request, action_id: str) -> Response:
        await app.operations.history(limit=1)  # creates the table in a fresh database
        found = None
        if _ACTION_ID.fullmatch(action_id):
            found = await app.operations.wait(action_id, 0)
        if found is None:
            return _error(404, f"no action {action_id!r}")
        return _json(found.to_dict())

    async def relays(request: Request) -> Response:
        found = await relay_reports(app.store, app.db)
        return _json({"relays": [r.to_dict() for r in found]})

    # -- actions -------------------------------------------------------------------------------

    async def act(request: Request, name: str, action: str) -> Response:
        ops = app.operations
        ops.projection(name)
        if action not in ("pause", "resume", "restart", "retry", "skip", "rewind"):
            return _error(404, f"no action {action!r}")
        given = await read_action(request, action)
        by = operator(request)
        seconds = number(request, "wait", wait, 0, MAX_WAIT)
        common: dict[str, Any] = {"by": by, "wait": seconds}
        done: Action
        if action == "pause":
            done = await ops.pause(name, reason=given.reason, **common)
        elif action == "resume":
            done = await ops.resume(name, reason=given.reason, **common)
        elif action == "restart":
            done = await ops.restart(name, reason=given.reason, **common)
        elif action == "retry":
            done = await ops.retry(name, stream_id=given.stream_id, reason=given.reason, **common)
        elif action == "skip":
            done = await ops.skip(
                name,
                reason=given.reason,
                stream_id=given.stream_id,
                position=given.position,
                **common,
            )
        else:
            done = await ops.rewind(
                name, position=given.position, to_time=given.to_time, reason=given.reason, **common
            )
        return _answer(done, _base(request, prefix))

    router.add_api_route("/projections", guarded(projections), methods=["GET"])
    router.add_api_route("/projections/{name}", guarded(projection), methods=["GET"])
    router.add_api_route("/projections/{name}/parked", guarded(parked), methods=["GET"])
    router.add_api_route(
        "/projections/{name}/{action}", guarded(act, change=True), methods=["POST"]
    )
    router.add_api_route("/actions", guarded(history), methods=["GET"])
    router.add_api_route("/actions/{action_id}", guarded(one_action), methods=["GET"])
    router.add_api_route("/relays", guarded(relays), methods=["GET"])
    return router


def _answer(action: Action, base: str) -> JSONResponse:
    """200 done, 202 pending (``Location``: where to see it end), 409 failed."""
    body = action.to_dict()
    if action.state == "done":
        return _json(body)
    if action.state == "pending":
        return _json(body, 202, Location=f"{base}/actions/{action.id}")
    return _json({"error": action.result or f"the {action.action} failed", **body}, 409)
