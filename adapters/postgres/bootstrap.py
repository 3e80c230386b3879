"""Which database to use: ``DATABASE_URL`` when set, else the embedded server in the data folder."""

from __future__ import annotations

import contextlib

import asyncpg

from adapters.postgres.database import asyncpg_dsn
from adapters.postgres.embedded import EmbeddedPostgres
from services.config import Settings


def embedded_server(settings: Settings) -> EmbeddedPostgres:
    """The persistent embedded cluster of this user (not started)."""
    return EmbeddedPostgres(root=settings.data_dir / "postgres", bindir=settings.pg_bindir)


async def ensure_database(maintenance_dsn: str, name: str) -> None:
    """Create database ``name`` on the server of ``maintenance_dsn`` when it does not exist."""
    conn = await asyncpg.connect(maintenance_dsn)
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'create database "{name}"')
    finally:
        await conn.close()


async def resolve_database_url(settings: Settings, database: str | None = None) -> str:
    """The URL of the database to use, starting the embedded server when no ``DATABASE_URL`` is set.

    Args:
        settings: the configuration.
        database: a database name inside the embedded server (default ``settings.db_name``); ignored
            when ``DATABASE_URL`` is set.
    """
    if settings.database_url:
        return asyncpg_dsn(settings.database_url)
    server = embedded_server(settings)
    server.ensure_running()
    name = database or settings.db_name
    await ensure_database(server.dsn(), name)
    return server.dsn(name)
