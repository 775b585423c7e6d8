"""Fixtures of the in-process HTTP tests: the app on real SQLite files in a temporary
directory (fast scrypt, a short X-Min-Position wait), and an httpx client over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from social.api import create_app
from social.domain import ScryptParams
from social.infrastructure.settings import Settings


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
