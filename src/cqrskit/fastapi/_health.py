"""``GET /livez`` and ``GET /readyz`` for any app: liveness (the process answers) and
readiness (its databases answer, and no projection is stopped in error or stalled; see
:func:`cqrskit.monitoring.readiness`). A load balancer sends traffic on ``/readyz``; an
orchestrator restarts on ``/livez``, which never looks at the databases: a database that
is down is not cured by restarting the process."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..app import App
from ..monitoring import readiness

__all__ = ["health_routes"]


def health_routes(app: App) -> APIRouter:
    """A router with ``GET /livez`` (200 while the process runs) and ``GET /readyz`` (200,
    or 503 with the reasons: ``{"error": "not ready: ...", "reasons": [...]}``)."""
    router = APIRouter(tags=["operations"])

    @router.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @router.get(
        "/readyz",
        responses={503: {"description": "Not ready: the reasons, one per line of `reasons`."}},
    )
    async def readyz() -> JSONResponse:
        if not app.is_open:  # starting, or shutting down
            reasons = ["the application is not open"]
        else:
            reasons = await readiness(app.store, app.db, app.status)
        if reasons:
            body = {"error": "not ready: " + "; ".join(reasons), "reasons": reasons}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready"})

    return router
