"""The FastAPI application factory. Nothing happens at import time: ``create_app`` builds
the app, and its lifespan opens the container and runs the projections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ..infrastructure.bootstrap import bootstrap
from ..infrastructure.settings import Settings
from .errors import install_error_handlers
from .middleware import Guard
from .routes import router

__all__ = ["create_app"]


def create_app(settings: Settings, *, run_projections: bool = True) -> FastAPI:
    """``run_projections=False``: an API process that only reads what others project."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = await bootstrap(settings)
        app.state.container = container
        try:
            if run_projections:
                await container.start_projections()
            else:
                await container.prepare_read_side()
            yield
        finally:
            # uvicorn has finished the in-flight requests; the runner finishes its batch.
            await container.close()

    app = FastAPI(
        title="social",
        summary="The cqrskit reference service: users, posts, follows (CQRS + event sourcing)",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
    )
    app.include_router(router)
    install_error_handlers(app)
    # Added last: the outermost of ours (catch-all, then deadline, then body limit).
    app.add_middleware(Guard, limit=settings.max_body_bytes, seconds=settings.request_timeout)
    return app
