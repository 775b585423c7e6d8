"""The FastAPI application factory. Nothing happens at import time: ``create_app`` builds
the app, and its lifespan opens the container and runs the projections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from ..infrastructure.bootstrap import Container, bootstrap
from ..infrastructure.settings import Settings
from .errors import install_error_handlers
from .middleware import Guard
from .routes import router

__all__ = ["create_app"]


def create_app(
    settings: Settings, *, run_projections: bool = True, container: Container | None = None
) -> FastAPI:
    """``run_projections=False``: an API process that only reads what others project.

    ``container``: one the caller has opened (and started, as it chose) and will close;
    ``serve`` does so, to report a failure to open in one line before listening. Without
    it, the lifespan opens one and closes it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if container is not None:
            app.state.container = container
            yield
            return
        container_ = await bootstrap(settings)
        app.state.container = container_
        try:
            await container_.open(run_projections)
            yield
        finally:
            # uvicorn has finished the in-flight requests; the runner finishes its batch.
            await container_.close()

    app = FastAPI(
        title="social",
        summary="The cqrskit reference service: users, posts, follows (CQRS + event sourcing)",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below, from the package: FastAPI's loads it from a CDN
        redoc_url=None,
    )
    _serve_docs(app)
    app.include_router(router)
    install_error_handlers(app)
    # Added last: the outermost of ours (catch-all, then deadline, then body limit).
    app.add_middleware(Guard, limit=settings.max_body_bytes, seconds=settings.request_timeout)
    return app


SWAGGER_UI = "/docs/static"


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs``, its scripts and styles served by this process from the
    ``swagger-ui-bundle`` package: the page works offline, and loads nothing that another
    party could change."""
    app.mount(SWAGGER_UI, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        )
