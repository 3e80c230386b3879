"""An API client on the test database, with a token per role."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest_asyncio
from fastapi import FastAPI

from adapters.postgres.database import Database
from services.api.app import create_app
from services.auth.service import create_token
from services.config import Settings


@dataclass
class Api:
    client: httpx.AsyncClient
    tokens: dict[str, str]
    app: FastAPI

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@contextlib.asynccontextmanager
async def open_api(db: Database) -> AsyncIterator[Api]:
    """The API on ``db`` (no lifespan: the database is set on the app's state), a token per role."""
    tokens = {}
    async with db.connection() as conn:
        for role in ("admin", "operator", "approver", "auditor"):
            tokens[role], _ = await create_token(conn, f"{role}-user", role)
    app = create_app(Settings(token_cache_seconds=0), database=db, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(client, tokens, app)


@pytest_asyncio.fixture(loop_scope="session")
async def api(db: Database) -> AsyncIterator[Api]:
    async with open_api(db) as client:
        yield client
