"""Migration 0006 (the one-statement transfer) downgrades to the step-by-step function and back.

A transfer stored with its idempotency key by either version replays the same way through the other.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from alembic import command

from adapters.postgres.database import init_connection
from adapters.postgres.migrate import alembic_config
from ledger.engine import Ledger
from ledger.models import AccountSpec, NormalBalance, PostingSpec, TransferRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _request(amount: int) -> TransferRequest:
    return TransferRequest((PostingSpec("mig:a", debit=amount), PostingSpec("mig:b", credit=amount)), "PEN")


async def _settings(conn: asyncpg.Connection) -> list[str] | None:
    config: list[str] | None = await conn.fetchval(
        "select proconfig from pg_proc where oid = 'ledger.create_transfer'::regproc"
    )
    return config


async def test_downgrade_to_0005_and_back(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    await init_connection(conn)
    try:
        ledger = Ledger(conn, actor="mig")
        for code in ("mig:a", "mig:b"):
            await ledger.create_account(AccountSpec(code, "PEN", NormalBalance.DEBIT))
        new = await ledger.transfer(_request(5), "k-new")
        assert await _settings(conn) == ["plan_cache_mode=force_generic_plan"]

        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0005_online_path")
        await conn.reload_schema_state()
        assert await _settings(conn) == ["plan_cache_mode=force_generic_plan"]
        old = await ledger.transfer(_request(7), "k-old")  # the step-by-step function, whole response
        assert (old.status, old.postings) == (
            "posted",
            ({"account": "mig:a", "debit": 7}, {"account": "mig:b", "credit": 7}),
        )
        replay_new = await ledger.transfer(_request(5), "k-new")
        assert (replay_new.id, replay_new.replayed, replay_new.postings) == (new.id, True, new.postings)

        await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
        await conn.reload_schema_state()
        replay_old = await ledger.transfer(_request(7), "k-old")  # stored whole, read as it is
        assert (replay_old.id, replay_old.replayed, replay_old.created_at) == (old.id, True, old.created_at)
        balances = await conn.fetch("select code, posted, version from ledger.accounts order by code")
        assert [tuple(r) for r in balances] == [("mig:a", 12, 2), ("mig:b", -12, 2)]
    finally:
        await conn.close()
