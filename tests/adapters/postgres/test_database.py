"""The pool: releases skip the reset round trip, yet no state leaks from one use of a connection to the next."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from adapters.postgres.database import Database

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _lock_is_free(url: str, key: int) -> bool:
    other = await asyncpg.connect(url)
    try:
        free = await other.fetchval("select pg_try_advisory_lock(42, $1)", key)
        if free:
            await other.execute("select pg_advisory_unlock(42, $1)", key)
        return bool(free)
    finally:
        await other.close()


@pytest_asyncio.fixture(loop_scope="session")
async def db(db_url: str) -> AsyncIterator[Database]:
    """A pool of one connection: every use reuses the same server session."""
    database = await Database.connect(db_url, min_size=1, max_size=1)
    try:
        yield database
    finally:
        await database.close()


async def test_session_releases_advisory_locks(db: Database, db_url: str) -> None:
    async with db.session() as conn:
        assert await conn.fetchval("select pg_try_advisory_lock(42, 1)")
        assert not await _lock_is_free(db_url, 1)
    assert await _lock_is_free(db_url, 1)
    # the one pooled connection is reused, with its lock gone
    async with db.connection() as conn:
        held = "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
        assert await conn.fetchval(held) == 0


async def test_cancelled_session_does_not_return_a_locked_connection(db: Database, db_url: str) -> None:
    started = asyncio.Event()

    async def hold() -> None:
        async with db.session() as conn:
            await conn.fetchval("select pg_try_advisory_lock(42, 2)")
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _lock_is_free(db_url, 2)


async def test_an_open_transaction_is_rolled_back_on_release(db: Database) -> None:
    async with db.connection() as conn:
        await conn.execute("begin; create table leak (x int)")
    async with db.connection() as conn:
        assert await conn.fetchval("select to_regclass('leak')") is None
