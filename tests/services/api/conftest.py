"""An API client on the test database, with a token per role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest_asyncio

from adapters.postgres.database import Database
from services.api.app import create_app
from services.auth.service import create_token
from services.config import Settings


@dataclass
class Api:
    client: httpx.AsyncClient
    tokens: dict[str, str]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest_asyncio.fixture(loop_scope="session")
async def api(db: Database) -> AsyncIterator[Api]:
    tokens = {}
    async with db.connection() as conn:
        for role in ("admin", "operator", "approver", "auditor"):
            tokens[role], _ = await create_token(conn, f"{role}-user", role)
    app = create_app(Settings(token_cache_seconds=0), database=db, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(client, tokens)
