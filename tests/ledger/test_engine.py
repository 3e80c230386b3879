"""Worked accounting examples for the online ledger, on the real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ledger import bulk
from ledger.engine import Ledger, Resolution
from ledger.errors import (
    AccountClosed,
    AccountExists,
    AccountNotFound,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidTransfer,
    PeriodClosed,
    TransferExpired,
    TransferNotFound,
    TransferNotPending,
    TransferNotReversible,
)
from ledger.models import AccountSpec, NormalBalance, PostingSpec, TransferRequest

FUND = "program:JUNTOS:fund"
TREASURY = "mef:treasury"
HH1 = "household:000001:savings"
HH2 = "household:000002:savings"


def pay(debit: str, credit: str, amount: int, **kw: object) -> TransferRequest:
    return TransferRequest((PostingSpec(debit, debit=amount), PostingSpec(credit, credit=amount)), "PEN", **kw)  # type: ignore[arg-type]


async def chart(ledger: Ledger) -> None:
    """The program's chart: the treasury (an asset of the state), the fund and two savings accounts.

    The fund and the savings accounts are credit-normal (money owed to the program and to households);
    the fund and the savings may never be overdrawn.
    """
    await ledger.create_account(AccountSpec(TREASURY, "PEN", NormalBalance.DEBIT))
    await ledger.create_account(AccountSpec(FUND, "PEN", NormalBalance.CREDIT, no_overdraft=True, hot=True))
    for code in (HH1, HH2):
        await ledger.create_account(AccountSpec(code, "PEN", NormalBalance.CREDIT, no_overdraft=True))


@pytest.fixture
async def ledger(conn: asyncpg.Connection) -> Ledger:
    led = Ledger(conn, actor="tester")
    await chart(led)
    return led


async def test_appropriation_payment_and_balances(ledger: Ledger) -> None:
    # The budget arrives: the treasury (debit) funds the program (credit).
    await ledger.transfer(pay(TREASURY, FUND, 1_000_00), "approp-1")
    # A bimester payment: the fund (debit) pays the household's savings (credit).
    t = await ledger.transfer(pay(FUND, HH1, 200_00, description="2026-B5"), "pay-1")
    assert t.status == "posted"
    assert t.postings == ({"account": FUND, "debit": 200_00}, {"account": HH1, "credit": 200_00})
    fund = await ledger.balance(FUND)
    hh = await ledger.balance(HH1)
    treasury = await ledger.balance(TREASURY)
    assert (fund.posted, fund.available, fund.version) == (800_00, 800_00, 2)
    assert (hh.posted, hh.available, hh.version) == (200_00, 200_00, 1)
    assert treasury.posted == 1_000_00  # debit-normal: the state's asset went out as an appropriation
    lines, cursor = await ledger.statement(FUND)
    assert cursor is None
    assert [(line.debit, line.credit, line.posted_after) for line in lines] == [
        (200_00, 0, 800_00),
        (0, 1_000_00, 1_000_00),
    ]


async def test_overdraft_refused_names_the_account_and_changes_nothing(ledger: Ledger) -> None:
    await ledger.transfer(pay(TREASURY, FUND, 100_00), "a")
    with pytest.raises(InsufficientFunds) as err:
        await ledger.transfer(pay(FUND, HH1, 100_01), "b")
    assert err.value.extra["account"] == FUND
    assert err.value.extra["available"] == 100_00
    assert (await ledger.balance(FUND)).posted == 100_00
    assert (await ledger.balance(HH1)).version == 0


async def test_one_account_on_several_legs_moves_once_per_posting(ledger: Ledger, conn: asyncpg.Connection) -> None:
    await ledger.transfer(pay(TREASURY, FUND, 100_00), "fund")
    split = TransferRequest(
        (
            PostingSpec(FUND, debit=30_00),
            PostingSpec(HH1, credit=30_00),
            PostingSpec(FUND, debit=20_00),
            PostingSpec(HH2, credit=20_00),
        ),
        "PEN",
    )
    t = await ledger.transfer(split, "split")
    rows = await conn.fetch(
        """select a.code, p.leg, p.version, p.posted_after from ledger.postings p
             join ledger.accounts a on a.id = p.account_id where p.transfer_id = $1 order by p.leg""",
        t.id,
    )
    # each posting records the balance after itself: the fund's two legs follow each other
    assert [tuple(r) for r in rows] == [
        (FUND, 1, 2, 70_00),
        (HH1, 2, 1, 30_00),
        (FUND, 3, 3, 50_00),
        (HH2, 4, 1, 20_00),
    ]
    assert ((await ledger.balance(FUND)).posted, (await ledger.balance(FUND)).version) == (50_00, 3)
    with pytest.raises(InsufficientFunds) as err:  # 30 + 30 out of 50: the second leg overdraws
        await ledger.transfer(
            TransferRequest(
                (PostingSpec(FUND, debit=30_00), PostingSpec(HH1, credit=60_00), PostingSpec(FUND, debit=30_00)), "PEN"
            ),
            "too-much",
        )
    assert (err.value.extra["account"], err.value.extra["available"]) == (FUND, 50_00)
    assert (await ledger.balance(FUND)).version == 3


async def test_two_phase_hold_counts_against_available_then_posts_once(ledger: Ledger) -> None:
    await ledger.transfer(pay(TREASURY, FUND, 300_00), "fund")
    hold = await ledger.transfer(pay(FUND, HH1, 200_00, pending=True), "hold")
    fund = await ledger.balance(FUND)
    assert hold.status == "pending"
    assert (fund.posted, fund.pending_debits, fund.available) == (300_00, 200_00, 100_00)
    hh = await ledger.balance(HH1)
    assert (hh.posted, hh.pending_credits, hh.available) == (0, 200_00, 0)
    # A second hold larger than what is available is refused.
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(pay(FUND, HH2, 100_01, pending=True), "hold-2")
    posted = await ledger.post(hold.id, "post")
    assert posted.status == "posted"
    assert posted.posted_amount == 200_00
    fund = await ledger.balance(FUND)
    assert (fund.posted, fund.pending_debits, fund.available) == (100_00, 0, 100_00)
    assert (await ledger.balance(HH1)).posted == 200_00
    with pytest.raises(TransferNotPending):
        await ledger.void(hold.id, "void-after-post")
    with pytest.raises(TransferNotPending):
        await ledger.post(hold.id, "post-again")


async def test_void_releases_the_hold(ledger: Ledger) -> None:
    await ledger.transfer(pay(TREASURY, FUND, 300_00), "fund")
    hold = await ledger.transfer(pay(FUND, HH1, 200_00, pending=True), "hold")
    voided = await ledger.void(hold.id, "void", reason="account closed at the bank")
    assert voided.status == "voided"
    fund = await ledger.balance(FUND)
    assert (fund.posted, fund.pending_debits, fund.available, fund.version) == (300_00, 0, 300_00, 3)
    assert (await ledger.balance(HH1)).available == 0


async def test_partial_post_commits_part_and_releases_the_rest(ledger: Ledger) -> None:
    await ledger.transfer(pay(TREASURY, FUND, 1_000_00), "fund")
    hold = await ledger.transfer(pay(FUND, HH1, 600_00, pending=True), "batch-hold")
    done = await ledger.post(hold.id, "batch-post", amount=400_00)
    assert done.status == "posted"
    assert done.posted_amount == 400_00
    fund = await ledger.balance(FUND)
    assert (fund.posted, fund.pending_debits, fund.available) == (600_00, 0, 600_00)
    assert (await ledger.balance(HH1)).posted == 400_00
    hold2 = await ledger.transfer(pay(FUND, HH1, 10_00, pending=True), "h2")
    with pytest.raises(InvalidTransfer):
        await ledger.post(hold2.id, "p2", amount=10_01)
    with pytest.raises(InvalidTransfer, match="void"):
        await ledger.post(hold2.id, "p3", amount=0)


async def test_several_holds_resolved_in_one_statement_as_one_by_one(ledger: Ledger) -> None:
    """resolve_many posts (all, or part) and voids in order, and the same keys replay through post and void."""
    await ledger.transfer(pay(TREASURY, FUND, 1_000_00), "fund")
    holds = [
        await ledger.transfer(pay(FUND, HH1, a, pending=True), f"h{i}") for i, a in enumerate((300_00, 200_00, 100_00))
    ]
    with pytest.raises(InvalidTransfer, match="more than zero"):  # an amount on a void: nothing is resolved
        await ledger.resolve_many([Resolution(holds[0].id, "p0", True), Resolution(holds[2].id, "v2", False, amount=1)])
    assert (await ledger.balance(FUND)).pending_debits == 600_00
    done = await ledger.resolve_many(
        [
            Resolution(holds[1].id, "p1", True, amount=150_00),
            Resolution(holds[0].id, "p0", True),
            Resolution(holds[2].id, "v2", False, reason="every item rejected"),
        ]
    )
    assert [(t.id, t.status, t.posted_amount) for t in done] == [
        (holds[1].id, "posted", 150_00),
        (holds[0].id, "posted", 300_00),
        (holds[2].id, "voided", 0),
    ]
    fund = await ledger.balance(FUND)
    assert (fund.posted, fund.pending_debits) == (1_000_00 - 450_00, 0)
    assert (await ledger.balance(HH1)).posted == 450_00
    # The same keys through the one-at-a-time calls are replays: the same transfers, nothing new.
    assert (await ledger.post(holds[1].id, "p1", amount=150_00)).id == done[0].id
    assert (await ledger.void(holds[2].id, "v2", reason="every item rejected")).id == done[2].id
    assert (await ledger.balance(FUND)).posted == 1_000_00 - 450_00


async def test_reversing_a_partly_posted_hold_reverses_what_it_moved(ledger: Ledger) -> None:
    await ledger.transfer(pay(TREASURY, FUND, 1_000_00), "fund")
    hold = await ledger.transfer(pay(FUND, HH1, 600_00, pending=True), "batch-hold")
    await ledger.post(hold.id, "batch-post", amount=400_00)
    reversal = await ledger.reverse(hold.id, "batch-reverse")
    assert reversal.postings == ({"account": FUND, "credit": 400_00}, {"account": HH1, "debit": 400_00})
    assert (await ledger.balance(FUND)).posted == 1_000_00
    assert (await ledger.balance(HH1)).posted == 0


async def test_expired_hold_cannot_be_posted_and_the_sweep_voids_it(ledger: Ledger, conn: asyncpg.Connection) -> None:
    await ledger.transfer(pay(TREASURY, FUND, 300_00), "fund")
    # The database's clock decides expiry: a second from its now, then wait until its clock has passed it.
    soon = await conn.fetchval("select clock_timestamp()") + timedelta(seconds=1)
    hold = await ledger.transfer(pay(FUND, HH1, 200_00, pending=True, expires_at=soon), "hold")
    while await conn.fetchval("select clock_timestamp() <= $1", soon):
        await asyncio.sleep(0.05)
    with pytest.raises(TransferExpired):
        await ledger.post(hold.id, "late-post")
    async with conn.transaction():
        assert await bulk.void_expired(conn) == 1
    assert (await ledger.get_transfer(hold.id)).status == "expired"
    assert (await ledger.balance(FUND)).available == 300_00
    async with conn.transaction():
        assert await bulk.void_expired(conn) == 0


async def test_reversal_undoes_once_and_links_both_ways(ledger: Ledger) -> None:
    await ledger.transfer(pay(TREASURY, FUND, 300_00), "fund")
    t = await ledger.transfer(pay(FUND, HH1, 200_00), "pay")
    r = await ledger.reverse(t.id, "rev", description="paid in error")
    assert r.reverses_id == t.id
    assert r.postings == ({"account": FUND, "credit": 200_00}, {"account": HH1, "debit": 200_00})
    assert (await ledger.get_transfer(t.id)).reversed_by == r.id
    assert (await ledger.balance(FUND)).posted == 300_00
    assert (await ledger.balance(HH1)).posted == 0
    with pytest.raises(TransferNotReversible):
        await ledger.reverse(t.id, "rev-again")
    hold = await ledger.transfer(pay(FUND, HH1, 10_00, pending=True), "hold")
    with pytest.raises(TransferNotReversible):
        await ledger.reverse(hold.id, "rev-pending")


async def test_reversal_refused_when_the_money_is_gone(ledger: Ledger) -> None:
    await ledger.transfer(pay(TREASURY, FUND, 300_00), "fund")
    t = await ledger.transfer(pay(FUND, HH1, 200_00), "pay")
    await ledger.transfer(pay(HH1, TREASURY, 150_00, description="withdrawal"), "withdraw")
    with pytest.raises(InsufficientFunds) as err:
        await ledger.reverse(t.id, "rev")
    assert err.value.extra["account"] == HH1


async def test_idempotent_replay_and_key_reuse(ledger: Ledger, conn: asyncpg.Connection) -> None:
    first = await ledger.transfer(pay(TREASURY, FUND, 50_00), "k-1")
    again = await ledger.transfer(pay(TREASURY, FUND, 50_00), "k-1")
    assert again.id == first.id
    assert again.replayed
    assert not first.replayed
    assert (await ledger.balance(FUND)).posted == 50_00
    with pytest.raises(IdempotencyConflict):
        await ledger.transfer(pay(TREASURY, FUND, 50_01), "k-1")
    assert await conn.fetchval("select count(*) from ledger.transfers") == 1
    # A failed request stores no key: the same key may be retried once the cause is fixed.
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(pay(FUND, HH1, 60_00), "k-2")
    await ledger.transfer(pay(TREASURY, FUND, 10_00), "k-3")
    ok = await ledger.transfer(pay(FUND, HH1, 60_00), "k-2")
    assert ok.status == "posted"


async def test_bad_transfers_are_refused_before_anything_moves(ledger: Ledger, conn: asyncpg.Connection) -> None:
    with pytest.raises(InvalidTransfer, match="do not balance"):
        TransferRequest((PostingSpec(FUND, debit=100), PostingSpec(HH1, credit=99)), "PEN")
    with pytest.raises(InvalidTransfer, match="at least two"):
        TransferRequest((PostingSpec(FUND, debit=100),), "PEN")
    with pytest.raises(InvalidTransfer):
        PostingSpec(FUND, debit=100, credit=100)
    with pytest.raises(Exception, match="integer"):
        PostingSpec(FUND, debit=1.5)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="integer"):
        PostingSpec(FUND, debit=True)
    with pytest.raises(AccountNotFound) as err:
        await ledger.transfer(pay("nope", HH1, 1), "x")
    assert err.value.extra["accounts"] == ["nope"]
    await ledger.create_account(AccountSpec("usd:cash", "USD", NormalBalance.DEBIT))
    with pytest.raises(CurrencyMismatch):
        await ledger.transfer(pay("usd:cash", HH1, 1), "y")
    assert await conn.fetchval("select count(*) from ledger.transfers") == 0


async def test_accounts_unique_closed_and_listed(ledger: Ledger) -> None:
    with pytest.raises(AccountExists):
        await ledger.create_account(AccountSpec(FUND, "PEN", NormalBalance.CREDIT))
    await ledger.create_account(AccountSpec("household:9:savings", "PEN", NormalBalance.CREDIT), "acct-key")
    same = await ledger.create_account(AccountSpec("household:9:savings", "PEN", NormalBalance.CREDIT), "acct-key")
    assert same.code == "household:9:savings"
    closed = await ledger.close_account("household:9:savings")
    assert closed.closed
    with pytest.raises(AccountClosed):
        await ledger.transfer(pay(TREASURY, "household:9:savings", 1), "to-closed")
    await ledger.transfer(pay(TREASURY, FUND, 1_00), "f")
    with pytest.raises(AccountClosed, match="balance"):
        await ledger.close_account(FUND)
    page, cursor = await ledger.list_accounts(prefix="household:", limit=2)
    assert [a.code for a in page] == [HH1, HH2]
    assert cursor is not None
    rest, end = await ledger.list_accounts(prefix="household:", limit=2, cursor=cursor)
    assert [a.code for a in rest] == ["household:9:savings"]
    assert end is None


async def test_balance_at_any_past_instant(ledger: Ledger) -> None:
    marks = []
    for i in range(5):
        await ledger.transfer(pay(TREASURY, FUND, 10_00), f"f{i}")
        marks.append(datetime.now(UTC))
        await asyncio.sleep(0.002)
    before = datetime.now(UTC) - timedelta(days=1)
    assert (await ledger.balance(FUND, as_of=before)).posted == 0
    for i, mark in enumerate(marks):
        bal = await ledger.balance(FUND, as_of=mark)
        assert (bal.posted, bal.version) == (10_00 * (i + 1), i + 1)


async def test_statement_pages_newest_first(ledger: Ledger) -> None:
    for i in range(7):
        await ledger.transfer(pay(TREASURY, FUND, (i + 1) * 100), f"s{i}")
    seen = []
    cursor = None
    while True:
        lines, cursor = await ledger.statement(FUND, limit=3, cursor=cursor)
        seen += [line.version for line in lines]
        if cursor is None:
            break
    assert seen == [7, 6, 5, 4, 3, 2, 1]


async def test_closed_period_refuses_effective_times_inside_it(ledger: Ledger) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = datetime(2026, 3, 1, tzinfo=UTC)
    await ledger.close_period("2026-B1", start, end)
    with pytest.raises(PeriodClosed) as err:
        await ledger.transfer(pay(TREASURY, FUND, 1_00, effective_at=datetime(2026, 2, 1, tzinfo=UTC)), "late")
    assert err.value.extra["period"] == "2026-B1"
    ok = await ledger.transfer(pay(TREASURY, FUND, 1_00, effective_at=end), "on-time")
    assert ok.effective_at == end
    with pytest.raises(PeriodClosed):
        await ledger.close_period("2026-B1", start, end)


async def test_batch_is_all_or_nothing(ledger: Ledger, conn: asyncpg.Connection) -> None:
    await ledger.transfer(pay(TREASURY, FUND, 300_00), "fund")
    items = [("b1", pay(FUND, HH1, 100_00)), ("b2", pay(FUND, HH2, 100_00)), ("b3", pay(FUND, HH1, 200_00))]
    with pytest.raises(InsufficientFunds):
        async with conn.transaction():
            await ledger.transfer_batch(items)
    assert (await ledger.balance(FUND)).posted == 300_00
    async with conn.transaction():
        done = await ledger.transfer_batch(items[:2])
    assert [t.status for t in done] == ["posted", "posted"]
    async with conn.transaction():
        again = await ledger.transfer_batch(items[:2])
    assert [t.id for t in again] == [t.id for t in done]
    assert all(t.replayed for t in again)


async def test_unknown_transfer(ledger: Ledger) -> None:
    with pytest.raises(TransferNotFound):
        await ledger.get_transfer(999_999)
    with pytest.raises(TransferNotFound):
        await ledger.post(999_999, "p")


async def test_transfer_json_reads_each_postings_account_by_a_probe(ledger: Ledger, conn: asyncpg.Connection) -> None:
    """Whatever join the planner would prefer (statistics after a payment run once made it hash the whole
    accounts table on every call), ledger.transfer_json reads each posting's account by its id: with nested
    loops switched off, a join could only hash or merge; the probe is a subquery and stays one."""
    await ledger.transfer(pay(TREASURY, FUND, 300_00), "fund")
    hold = await ledger.transfer(pay(FUND, HH1, 200_00, pending=True), "hold")
    await ledger.post(hold.id, "post", amount=150_00)
    plans: list[str] = []

    def listen(_conn: object, message: object) -> None:
        plans.append(str(getattr(message, "message", "")))

    conn.add_log_listener(listen)
    await conn.execute(
        """load 'auto_explain'; set auto_explain.log_min_duration = 0; set auto_explain.log_nested_statements = on;
           set auto_explain.log_level = notice; set client_min_messages = notice; set enable_nestloop = off"""
    )
    data = await conn.fetchval("select ledger.transfer_json($1)", hold.id)
    await conn.execute("set auto_explain.log_min_duration = -1; reset enable_nestloop")
    await asyncio.sleep(0.05)  # notices are delivered through the event loop
    conn.remove_log_listener(listen)
    plan = next(p for p in plans if "'postings'" in p)
    assert "Index Cond: (id = p.account_id)" in plan, plan  # a probe per posting
    assert "Seq Scan on accounts" not in plan, plan
    assert (data["status"], data["posted_amount"]) == ("posted", 150_00)
    assert data["postings"] == [{"account": FUND, "debit": 200_00}, {"account": HH1, "credit": 200_00}]
