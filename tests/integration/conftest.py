"""Fixtures of the integration tests: ``url``, one app URL per backend (memory, a SQLite
directory, a fresh PostgreSQL database); for the in-process HTTP tests, social on real
SQLite files in a temporary directory (fast scrypt, a short X-Min-Position wait), and an
httpx client over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from social.api import create_app
from social.domain import ScryptParams
from social.infrastructure.settings import Settings


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An app URL on each backend (a module may define its own ``url``, as a narrower one)."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(
        data_dir=tmp_path, secret=b"t" * 32, scrypt=ScryptParams(n=2**10), min_position_timeout=0.3
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://social") as client:
        yield client
