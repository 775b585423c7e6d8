"""The FastAPI application factory. Nothing happens at import time: ``create_app`` builds
the app; cqrskit.fastapi opens the service with it and runs the projections."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from cqrskit.fastapi import connect, health_routes, operations_router

from ..infrastructure.bootstrap import SocialApp
from ..infrastructure.settings import Settings
from .errors import ERRORS
from .middleware import Guard
from .routes import router

__all__ = ["create_app"]


def create_app(
    settings: Settings, *, run_projections: bool = True, service: SocialApp | None = None
) -> FastAPI:
    """``run_projections=False``: an API process that only reads what others project.

    ``service``: one the caller has opened (and started, as it chose) and will close;
    ``serve`` does so, to report a failure to open in one line before listening. Without
    it, the app's lifespan opens one and closes it."""
    app = FastAPI(
        title="social",
        summary="The cqrskit reference service: users, posts, follows (CQRS + event sourcing)",
        version="0.1.0",
        docs_url=None,  # served below, from the package: FastAPI's loads it from a CDN
        redoc_url=None,
    )
    opened = service or SocialApp(settings, run_projections=run_projections)
    # Also the outermost layer: X-Request-ID, the access log, the HTTP metrics, a span.
    connect(app, opened, errors=ERRORS, on_request=opened.metrics.observe_request)
    _serve_docs(app)
    app.include_router(router)
    app.include_router(health_routes(opened))
    # /ops: the operator's routes and console, behind SOCIAL_OPS_TOKEN (404 without it);
    # an action's POST answers (202 while pending) well within the request deadline.
    ops_wait = min(5.0, settings.request_timeout / 2)
    app.include_router(operations_router(opened, token=settings.ops_token, wait=ops_wait))
    # Added last: the outermost of ours (catch-all, then deadline, then body limit), inside
    # cqrskit's request tracing (so its answers carry the request id too).
    app.add_middleware(Guard, limit=settings.max_body_bytes, seconds=settings.request_timeout)
    return app


SWAGGER_UI = "/docs/static"
_SWAGGER_FILES = Path(fastapi_offline.__file__).parent / "static"


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs``, its scripts and styles served by this process from the
    ``fastapi-offline`` package (Swagger UI 5, which reads OpenAPI 3.1): the page works
    offline, and loads nothing that another party could change."""
    app.mount(SWAGGER_UI, StaticFiles(directory=str(_SWAGGER_FILES)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI}/favicon.png",
        )
