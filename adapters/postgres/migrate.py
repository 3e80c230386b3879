"""Schema migrations (Alembic) run programmatically, and the check that refuses an unmigrated database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations
from adapters.postgres.database import asyncpg_dsn, sqlalchemy_url
from ledger.db import Connection
from ledger.errors import AppError, ErrorKind

MIGRATIONS_DIR = Path(migrations.__file__).parent


class DatabaseNotMigrated(AppError):
    """The database schema is missing or behind the code."""

    type = "database-not-migrated"
    title = "Database not migrated"
    kind = ErrorKind.UNAVAILABLE


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration in the code."""
    head = ScriptDirectory.from_config(alembic_config("postgresql://x/y")).get_current_head()
    assert head is not None
    return head


def upgrade_sync(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations from async code (Alembic runs in a worker thread with its own loop)."""
    await asyncio.to_thread(upgrade_sync, url, revision)


async def current_revision(conn: Connection) -> str | None:
    """The revision recorded in the database, or None when Alembic never ran there."""
    exists = await conn.fetchval("select to_regclass('public.alembic_version') is not null")
    if not exists:
        return None
    value: str | None = await conn.fetchval("select version_num from public.alembic_version limit 1")
    return value


async def assert_migrated(url_or_conn: str | Connection) -> None:
    """Raise :class:`DatabaseNotMigrated` unless the database is at the code's head revision."""
    if isinstance(url_or_conn, str):
        conn = await asyncpg.connect(asyncpg_dsn(url_or_conn))
        try:
            current = await current_revision(conn)
            database = await conn.fetchval("select current_database()")
        finally:
            await conn.close()
    else:
        current = await current_revision(url_or_conn)
        database = await url_or_conn.fetchval("select current_database()")
    head = head_revision()
    if current != head:
        empty = (
            " (a database the demo made is `cct_demo`: set CCT_DB_NAME=cct_demo to use it)"
            if current is None and database != "cct_demo"
            else ""
        )
        raise DatabaseNotMigrated(
            f"The database {database!r} is at migration {current or 'none'} but this cct-ledger needs {head}"
            f"{empty}. Run `cct-ledger db upgrade` to apply the migrations.",
            current=current,
            head=head,
            database=database,
        )
