"""The PostgreSQL connection pool and the unit of work.

One :class:`Database` per process wraps an asyncpg pool. A *unit of work* is one connection inside one
transaction: it commits when the block ends normally and rolls back on any exception. Services and the
ledger never commit; they run their statements on the connection they are given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from ledger.db import Connection


def asyncpg_dsn(url: str) -> str:
    """Normalise a SQLAlchemy-style URL (``postgresql+asyncpg://``) to a libpq/asyncpg one."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "postgres":
        scheme = "postgresql"
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def sqlalchemy_url(url: str) -> str:
    """The same database as a SQLAlchemy async URL (for Alembic)."""
    parts = urlsplit(asyncpg_dsn(url))
    return urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, parts.query, parts.fragment))


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def init_connection(conn: asyncpg.Connection[Any]) -> None:
    """Per-connection setup: JSON codecs (orjson) and UTC."""
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """Release without the default reset query (a round trip on every release).

    asyncpg still rolls back an open transaction before calling this. Nothing else outlives a pooled use:
    settings are ``set local``, locks are transaction-level, and the one user of session state (a session
    advisory lock) takes its connection through :meth:`Database.session`, which clears it.
    """


class Database:
    """An asyncpg pool with unit-of-work helpers.

    Args:
        pool: the pool; use :meth:`connect` to create one.
        dsn: the URL it was opened with (for subprocesses and diagnostics).
    """

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> Database:
        """Open a pool on ``dsn`` (any PostgreSQL URL)."""
        dsn = asyncpg_dsn(dsn)
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            reset=_keep_session,
            server_settings={"application_name": "cct-ledger", "timezone": "UTC"},
        )
        return cls(pool, dsn)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit mode (each statement is its own transaction)."""
        async with self.pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Connection]:
        """A pooled connection that may hold session state (advisory locks): on release the locks are
        dropped, or, if that cannot be done (cancelled, broken), the connection is closed rather than reused."""
        async with self.pool.acquire() as conn:
            try:
                yield conn
            finally:
                try:
                    await conn.execute("select pg_advisory_unlock_all()")
                except BaseException:
                    conn.terminate()
                    raise

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[Connection]:
        """A pooled connection inside a transaction: commit on success, rollback on error."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn
