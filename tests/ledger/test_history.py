"""History is append-only and balanced in the database itself, whatever the client does."""

from __future__ import annotations

import asyncpg
import pytest

from ledger.engine import Ledger
from ledger.models import AccountSpec, NormalBalance, PostingSpec, TransferRequest


@pytest.fixture
async def seeded(conn: asyncpg.Connection) -> Ledger:
    led = Ledger(conn)
    await led.create_account(AccountSpec("a", "PEN", NormalBalance.DEBIT))
    await led.create_account(AccountSpec("b", "PEN", NormalBalance.CREDIT))
    await led.transfer(TransferRequest((PostingSpec("a", debit=500), PostingSpec("b", credit=500)), "PEN"), "k")
    return led


@pytest.mark.parametrize(
    "statement",
    [
        "update ledger.postings set amount = amount + 1",
        "delete from ledger.postings",
        "truncate ledger.postings",
        "update ledger.transfers set description = 'edited'",
        "delete from ledger.transfers",
        "delete from ledger.accounts",
        "update ledger.accounts set code = 'renamed' where code = 'a'",
        "update ledger.accounts set currency = 'USD' where code = 'a'",
    ],
)
async def test_history_cannot_be_rewritten(seeded: Ledger, conn: asyncpg.Connection, statement: str) -> None:
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await conn.execute(statement)


async def test_unbalanced_postings_cannot_be_inserted(seeded: Ledger, conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.PostgresError, match="does not balance"):
        await conn.execute(
            """insert into ledger.postings (account_id, version, transfer_id, leg, amount, phase, posted_after,
                                            pending_debits_after, pending_credits_after, recorded_at)
               select id, version + 1, 1, 3, 7, 0, posted + 7, 0, 0, now() from ledger.accounts where code = 'a'"""
        )


async def test_no_overdraft_is_a_database_constraint(conn: asyncpg.Connection) -> None:
    led = Ledger(conn)
    await led.create_account(AccountSpec("fund", "PEN", NormalBalance.CREDIT, no_overdraft=True))
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("update ledger.accounts set posted = -1 where code = 'fund'")


async def test_account_balances_may_move_only_with_postings_checked_by_verify(
    seeded: Ledger, conn: asyncpg.Connection
) -> None:
    from ledger import audit

    assert (await audit.verify(conn)).ok
    await conn.execute("update ledger.accounts set posted = posted + 1 where code = 'a'")
    report = await audit.verify(conn)
    assert not report.ok
    assert {p["check"] for p in report.problems} == {"balances", "trial_balance"}
