"""Test session: one real PostgreSQL (embedded, throwaway, fsync off) and a migrated template database.

Each test that asks for ``db_url`` gets a fresh database cloned from the template (tens of milliseconds),
so tests are isolated and may commit, run concurrently and even tamper with rows. ``DATABASE_URL``, when
set, names the server to use instead (the role needs CREATEDB).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
import pytest_asyncio
import structlog
from hypothesis import settings

from adapters.postgres import migrate
from adapters.postgres.database import Database, asyncpg_dsn
from adapters.postgres.embedded import EmbeddedPostgres

TEMPLATE = "cct_test_template"

# Property tests judge results, not speed: Hypothesis's per-example deadline (200 ms) would fail a test when
# a loaded machine stalls one example. Failing examples are printed to be replayed (@reproduce_failure).
settings.register_profile("cct", deadline=None, print_blob=True)
settings.load_profile("cct")
_counter = itertools.count(1)


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(asyncpg_dsn(url))
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """A test that configures logging (a CLI command run in-process) leaves the defaults to the next one, so
    a later ``capture_logs`` sees every event whatever order the tests run in."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """The maintenance-database URL of the server the tests use."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield _with_database(external, "postgres")
        return
    server = EmbeddedPostgres.temporary()
    server.ensure_running()
    try:
        yield server.dsn()
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def template_url(pg_server_url: str) -> str:
    conn = await asyncpg.connect(pg_server_url)
    try:
        await conn.execute(f'drop database if exists "{TEMPLATE}" with (force)')
        await conn.execute(f'create database "{TEMPLATE}"')
    finally:
        await conn.close()
    url = _with_database(pg_server_url, TEMPLATE)
    await migrate.upgrade(url)
    return url


async def _create_database(server_url: str) -> tuple[str, str]:
    name = f"cct_test_{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(server_url)
    try:
        # file_copy clones a small database several times faster than the default WAL-logged copy.
        await conn.execute(f'create database "{name}" template "{TEMPLATE}" strategy file_copy')
    finally:
        await conn.close()
    return name, _with_database(server_url, name)


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await conn.close()


@pytest_asyncio.fixture(loop_scope="session")
async def db_url(pg_server_url: str, template_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name, url = await _create_database(pg_server_url)
    yield url
    await _drop_database(pg_server_url, name)


@pytest_asyncio.fixture(loop_scope="session")
async def new_database(pg_server_url: str, template_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """A factory of more fresh, migrated databases (dropped after the test); returns their URLs."""
    made: list[str] = []

    async def make() -> str:
        name, url = await _create_database(pg_server_url)
        made.append(name)
        return url

    yield make
    for name in made:
        await _drop_database(pg_server_url, name)


@pytest_asyncio.fixture(loop_scope="session")
async def db(db_url: str) -> AsyncIterator[Database]:
    """A connection pool on the test's database."""
    database = await Database.connect(db_url, min_size=1, max_size=24)
    try:
        yield database
    finally:
        await database.close()


@pytest_asyncio.fixture(loop_scope="session")
async def conn(db: Database) -> AsyncIterator[asyncpg.Connection]:
    """One connection in autocommit mode."""
    async with db.connection() as c:
        yield c
