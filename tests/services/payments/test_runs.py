"""Payment runs end to end on the real database and the simulated bank (in-process, over ASGI)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import asyncpg
import pytest
from pydantic import ValidationError

from adapters.bank.simulator import get_simulator
from adapters.postgres.database import Database, asyncpg_dsn
from ledger import audit, bulk
from ledger.engine import Ledger
from ledger.models import NormalBalance
from services.config import Settings
from services.payments import report, service
from services.payments import repository as repo
from services.payments.errors import (
    MakerChecker,
    RunExists,
    RunIncident,
    RunNotApproved,
    RunNotFunded,
    RunStateError,
)
from services.payments.execute import _LOCK_CLASS, ExecuteOptions, RunExecutor, cancel_refused_batch
from services.ports.bank import BankPort, BatchStatus, ItemStatus, RejectReason, item_outcome
from services.programs import service as programs
from services.registry.service import get_household
from tests.services.payments.conftest import World, make_world, seed_for

FUND = "program:JUNTOS:fund"
TRANSIT = "program:JUNTOS:in-transit"
FAST = ExecuteOptions(poll_interval=0.0, settle_timeout=120, submit_rounds=12)


async def _create(world: World, period: str = "2026-B5", user: str = "maria", batch_size: int = 4) -> int:
    created = await service.create_run(world.db, "JUNTOS", period, user, batch_size)
    return int(created.run["id"])


async def _approve(world: World, run_id: int, user: str = "jorge") -> None:
    async with world.db.unit_of_work() as conn:
        await service.approve_run(conn, run_id, user)


async def _execute(world: World, run_id: int, options: ExecuteOptions = FAST) -> dict[str, Any]:
    return await RunExecutor(world.db, world.bank, run_id, "maria", options=options).execute()


async def _summary(world: World, run_id: int) -> dict[str, Any]:
    async with world.db.connection() as conn:
        return await report.summary(conn, run_id)


async def test_a_bimester_end_to_end(world: World) -> None:
    await world.register(10, children=(0, 1), students=(0, 0, 2))  # base 200; +100 with a child; +80 a student
    await world.register(2, start=100, bank=False)  # not bankarised yet: their entitlement accrues
    await world.register(1, start=200, status="inactive")
    await world.suspend("J000003", "2026-B5")
    await world.fund(1_000_000_00)

    run_id = await _create(world)
    s = await _summary(world, run_id)
    run = s["run"]
    # 10 bankarised: one suspended -> 9 payments
    assert run["payments_count"] == 9
    assert run["accrued_count"] == 2
    assert run["accrued_total"] == 2 * 200_00
    assert s["exclusions"]["suspended"]["count"] == 1
    assert s["exclusions"]["inactive"]["count"] == 1
    assert run["batches_count"] == 3
    expected = {
        h["household_id"]: 200_00 + 100_00 * h["children_under_4"] + 80_00 * h["upper_secondary_students"]
        for h in world.households[:10]
        if h["household_id"] != "J000003"
    }
    assert run["payments_total"] == sum(expected.values())
    assert await world.balance(FUND) == 1_000_000_00  # nothing moved yet
    # Before execution the districts are ranked by what is planned (nothing is credited yet).
    planned = [d["planned_total"] for d in s["top_districts"]]
    assert planned == sorted(planned, reverse=True)
    assert sum(planned) == run["payments_total"]  # every district of these households is in the top ten
    assert all(d["credited_total"] == 0 for d in s["top_districts"])

    with pytest.raises(RunNotApproved):
        await _execute(world, run_id)
    for same_person in ("maria", "Maria", " MARIA "):  # one person, however the name is typed
        with pytest.raises(MakerChecker):
            await _approve(world, run_id, user=same_person)
    await _approve(world, run_id)
    done = await _execute(world, run_id)
    assert done["status"] == "settled"

    s = await _summary(world, run_id)
    assert s["payments"]["credited"]["count"] == 9
    assert s["payments"]["credited"]["total"] == sum(expected.values())
    assert await world.balance(FUND) == 1_000_000_00 - sum(expected.values())
    assert await world.balance(TRANSIT) == 0
    for hid, amount in expected.items():
        assert await world.balance(f"household:{hid}:savings") == amount
    async with world.db.connection() as conn:
        await audit.seal(conn)
        assert (await audit.verify(conn)).ok
    # Executing again changes nothing.
    again = await _execute(world, run_id)
    assert again["status"] == "settled"
    assert await world.balance(FUND) == 1_000_000_00 - sum(expected.values())
    with pytest.raises(RunExists):
        await _create(world)


async def test_a_household_already_entitled_for_the_period_is_left_out_not_paid_twice(world: World) -> None:
    rows = await world.register(3)
    await world.fund(10_000_00)
    entitled, elsewhere = rows[1]["household_id"], rows[2]["household_id"]
    async with world.db.unit_of_work() as conn:
        # An entitlement of B5 already carried by a payment, recorded behind the service (run and payment 0 exist
        # nowhere): the run must neither pay it again nor write a second one. Another household's entitlement
        # of a period named the same in another program is no reason to leave it out.
        await conn.executemany(
            """insert into payments.entitlements (program, household_id, period, amount, breakdown, rule_version,
                                                  run_id, payment_id)
               values ($1, $2, '2026-B5', 20000, '{"base": 20000}', 1, 0, 0)""",
            [("JUNTOS", entitled), ("HAKU_WINAY_STIPEND", elsewhere)],
        )
    run_id = await _create(world)
    s = await _summary(world, run_id)
    assert s["exclusions"]["already_paid"]["count"] == 1
    async with world.db.connection() as conn:
        paid = {
            r["household_id"]
            for r in await conn.fetch("select household_id from payments.payments where run_id = $1", run_id)
        }
        mine = await conn.fetch("select household_id from payments.entitlements where run_id = $1", run_id)
        kept = await conn.fetch(
            "select run_id, payment_id from payments.entitlements where household_id = $1", entitled
        )
    assert paid == {rows[0]["household_id"], elsewhere}
    assert sorted(r["household_id"] for r in mine) == sorted(paid)  # the run wrote none for the entitled one
    assert [tuple(r) for r in kept] == [(0, 0)]  # and left the earlier one as it was


async def test_payments_are_numbered_into_full_batches_and_reported_in_household_order(
    world: World, tmp_path: Any
) -> None:
    import csv

    # Registered first: earlier in the registry's table than the next ones. Every other household has a child
    # under 4 (S/ 300.00 instead of 200.00), so batches of other households would have other totals; one
    # without a bank account, read between the two groups, accrues and must not take a place in a batch.
    await world.register(6, start=50, children=(0, 1))
    await world.register(1, start=40, bank=False)
    await world.register(5, start=1, children=(0, 1))
    await world.fund(10_000_00)
    run_id = await _create(world, batch_size=4)
    async with world.db.connection() as conn:
        sizes = await conn.fetch(
            """select batch_no, count(*) as n, sum(amount)::bigint as total, min(amount) as low, max(amount) as high
                 from payments.payments where run_id = $1 group by 1 order by 1""",
            run_id,
        )
        batches = await conn.fetch(
            "select batch_no, item_count, total from payments.batches where run_id = $1 order by 1", run_id
        )
        by_id = await conn.fetch("select household_id from payments.payments where run_id = $1 order by id", run_id)
    assert [(r["batch_no"], r["n"]) for r in sizes] == [(0, 4), (1, 4), (2, 3)]
    assert any(r["low"] != r["high"] for r in sizes)  # the amounts differ within batches: the totals below tell
    assert [(r["batch_no"], r["item_count"], r["total"]) for r in batches] == [
        (r["batch_no"], r["n"], r["total"]) for r in sizes
    ]
    assert sum(r["total"] for r in batches) == 5 * 200_00 + 6 * 300_00  # 50, 52, 54, 2, 4 without a child
    # Without this the report's order could not be told from the ids' order.
    paid_households = sorted(r["household_id"] for r in by_id)
    assert [r["household_id"] for r in by_id] != paid_households, "payment ids follow household order here"
    await _approve(world, run_id)
    await _execute(world, run_id)
    path = tmp_path / "run.csv"
    async with world.db.connection() as conn:
        assert await report.write_csv(conn, run_id, path) == 11
    ids = [line["household_id"] for line in csv.DictReader(path.open())]
    assert ids == paid_households


async def test_rejections_return_to_the_fund_and_accrue_to_the_next_run(world: World) -> None:
    rows = await world.register(6)
    await world.register(1, start=50, bank=False)
    # The bank does not know one CCI any more; another household's DNI changed in the registry.
    gone = rows[0]
    await world.bank.close_account((await world.bank.find_accounts(cci=gone["cci"]))[0].id, idempotency_key="close-1")
    mismatch = dict(rows[1], titular_dni="49999999")
    await world.upsert([mismatch])
    await world.fund(10_000_00)
    run_id = await _create(world, "2026-B4")
    await _approve(world, run_id)
    await _execute(world, run_id)
    s = await _summary(world, run_id)
    assert s["payments"]["credited"]["count"] == 4
    assert s["rejected_by_reason"] == {
        "account_closed": {"count": 1, "total": 200_00},
        "dni_mismatch": {"count": 1, "total": 200_00},
    }
    assert await world.balance(FUND) == 10_000_00 - 4 * 200_00
    assert await world.balance(TRANSIT) == 0
    # A rejected payment never reaches the household's ledger account. Every household of the run has one,
    # opened ahead of the credits (RunExecutor._open_accounts): the rejected ones with nothing in it.
    async with world.db.connection() as conn:
        accounts = await conn.fetch(
            """select a.code, a.posted, a.version, a.no_overdraft, a.normal_balance,
                      (select count(*) from ledger.postings p where p.account_id = a.id) as postings
                 from ledger.accounts a where a.code like 'household:%' order by a.code"""
        )
    assert sorted(r["code"] for r in accounts) == sorted(f"household:{r['household_id']}:savings" for r in rows)
    by_code = {r["code"]: r for r in accounts}
    for rejected in (gone, rows[1]):
        row = by_code[f"household:{rejected['household_id']}:savings"]
        assert (row["posted"], row["version"], row["postings"]) == (0, 0, 0)
    assert {(r["no_overdraft"], r["normal_balance"]) for r in accounts} == {(True, -1)}
    assert sum(r["postings"] for r in accounts) == 4

    # Each household's view says what it was paid and what it is owed.
    async with world.db.connection() as conn:
        seen_gone = await get_household(conn, gone["household_id"])
        seen_unbanked = await get_household(conn, world.households[-1]["household_id"])
        seen_paid = await get_household(conn, rows[2]["household_id"])
    assert [(p["run"], p["status"], p["reason"], p["periods"]) for p in seen_gone["payments"]] == [
        (run_id, "rejected", "account_closed", ["2026-B4"])
    ]
    assert [(a["period"], a["amount"]) for a in seen_gone["accrued"]] == [("2026-B4", 200_00)]
    assert (seen_unbanked["payments"], [a["period"] for a in seen_unbanked["accrued"]]) == ([], ["2026-B4"])
    assert [(p["status"], p["amount"]) for p in seen_paid["payments"]] == [("credited", 200_00)]
    assert seen_paid["payments"][0]["ledger_transfer_id"] is not None
    assert seen_paid["accrued"] == []

    # The household gets its account fixed and the unbanked one is bankarised: the next run pays them
    # both periods, in full, once.
    await world.upsert([dict(rows[1])])
    opened = await world.control.seed_accounts([("40000050", "Luz Apaza Choque", "080206")])
    unbanked = dict(world.households[-1], cci=opened[0].cci)
    await world.upsert([unbanked])
    run2 = await _create(world, "2026-B5")
    async with world.db.connection() as conn:
        amounts = dict(await conn.fetch("select household_id, amount from payments.payments where run_id = $1", run2))
    assert amounts[rows[1]["household_id"]] == 2 * 200_00  # B4 (rejected, accrued) + B5
    assert amounts[unbanked["household_id"]] == 2 * 200_00  # B4 (no account) + B5
    assert amounts[rows[2]["household_id"]] == 200_00
    assert amounts[gone["household_id"]] == 2 * 200_00  # still accrues; the bank will reject it again
    await _approve(world, run2)
    await _execute(world, run2)
    assert await world.balance(f"household:{rows[1]['household_id']}:savings") == 2 * 200_00
    assert await world.balance(f"household:{rows[2]['household_id']}:savings") == 2 * 200_00
    async with world.db.connection() as conn:
        fixed = await get_household(conn, rows[1]["household_id"])
    assert [(p["run"], p["status"], p["periods"]) for p in fixed["payments"]] == [
        (run2, "credited", ["2026-B4", "2026-B5"]),  # the arrears with the period, newest run first
        (run_id, "rejected", ["2026-B4"]),
    ]
    assert fixed["accrued"] == []
    async with world.db.connection() as conn:
        twice = await conn.fetchval(
            """select count(*) from (select e.household_id, e.period from payments.entitlements e
                 join payments.payment_states p on p.id = e.payment_id where p.status = 'credited'
                group by e.household_id, e.period having count(*) > 1) x"""
        )
        assert twice == 0


async def test_settlement_opens_the_accounts_not_opened_ahead_and_finds_the_rest(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settlement finds each household's ledger account with the snapshot; those the opener ahead of it has not
    reached (here: it opens none, and two households had accounts from before) are opened in the settling
    transaction, and each household is credited once, into its own account."""
    rows = await world.register(9)
    await world.fund(10_000_00)
    async with world.db.unit_of_work() as conn:  # two households' accounts exist from before
        before = await bulk.ensure_account_ids(
            conn,
            [f"household:{r['household_id']}:savings" for r in rows[:2]],
            currency="PEN",
            normal=NormalBalance.CREDIT,
            no_overdraft=True,
        )

    async def opens_none(self: RunExecutor, run: dict[str, Any]) -> None:
        return None

    monkeypatch.setattr(RunExecutor, "_open_accounts", opens_none)
    run_id = await _create(world)
    await _approve(world, run_id)
    await _execute(world, run_id)
    async with world.db.connection() as conn:
        accounts = {
            r["code"]: r
            for r in await conn.fetch(
                """select a.id, a.code, a.posted, a.version, a.no_overdraft, a.normal_balance
                     from ledger.accounts a where a.code like 'household:%'"""
            )
        }
    assert sorted(accounts) == sorted(f"household:{r['household_id']}:savings" for r in rows)
    assert [accounts[f"household:{r['household_id']}:savings"]["id"] for r in rows[:2]] == before
    assert {(a["posted"], a["version"], a["no_overdraft"], a["normal_balance"]) for a in accounts.values()} == {
        (200_00, 1, True, -1)
    }
    assert await world.balance(FUND) == 10_000_00 - 9 * 200_00
    assert await world.balance(TRANSIT) == 0


async def test_a_household_with_another_banks_account_accrues_instead_of_stopping_its_batch(world: World) -> None:
    """The bank refuses a whole batch naming another bank's account: such a household is not paid into it,
    its entitlement accrues (as with no account), and the rest of the run settles."""
    rows = await world.register(3)
    elsewhere = dict(rows[0], cci="00219119184091600051")  # a valid CCI, of bank 002, not Banco de la Nación
    await world.upsert([elsewhere])
    await world.fund(10_000_00)
    run_id = await _create(world, "2026-B4")
    s = await _summary(world, run_id)
    assert (s["run"]["payments_count"], s["run"]["accrued_count"]) == (2, 1)
    await _approve(world, run_id)
    assert (await _execute(world, run_id))["status"] == "settled"
    assert await world.balance(FUND) == 10_000_00 - 2 * 200_00
    # Given its account at the bank, the household is paid both periods in the next run, once.
    await world.upsert([dict(rows[0])])
    run2 = await _create(world, "2026-B5")
    async with world.db.connection() as conn:
        amounts = dict(await conn.fetch("select household_id, amount from payments.payments where run_id = $1", run2))
    assert amounts == {
        rows[0]["household_id"]: 2 * 200_00,
        rows[1]["household_id"]: 200_00,
        rows[2]["household_id"]: 200_00,
    }
    await _approve(world, run2)
    assert (await _execute(world, run2))["status"] == "settled"
    assert await world.balance(f"household:{rows[0]['household_id']}:savings") == 2 * 200_00


async def test_a_batch_the_bank_refuses_is_recorded_and_the_rest_of_the_run_settles(world: World) -> None:
    """The bank's funding account covers half the run: the batches it refuses do not stop the others being
    sent and settled; the run says which were refused, and once the bank is funded, resuming sends them."""
    await world.register(8)
    async with world.db.unit_of_work() as conn:  # the ledger's fund covers every payment...
        await programs.fund(conn, "JUNTOS", 8 * 200_00, "MEF-2026-001", actor="budget-office")
    await world.control.deposit_funding(4 * 200_00, reference="MEF-2026-001")  # ...the bank's account half
    run_id = await _create(world, batch_size=2)
    await _approve(world, run_id)
    one_at_a_time = dataclasses.replace(FAST, concurrency=1)
    with pytest.raises(RunIncident, match=r"the bank refused batch\(es\) \[2, 3\].*everything else is settled") as err:
        await _execute(world, run_id, one_at_a_time)
    assert err.value.extra["batches"] == [2, 3]
    async with world.db.connection() as conn:
        batches = dict(await conn.fetch("select batch_no, status from payments.batches where run_id = $1", run_id))
        incidents = await conn.fetch("select kind, batch_no from payments.incidents where run_id = $1", run_id)
        run = await conn.fetchval("select status from payments.runs where id = $1", run_id)
    assert batches == {0: "closed", 1: "closed", 2: "submitting", 3: "submitting"}
    assert sorted((r["kind"], r["batch_no"]) for r in incidents) == [("submit_refused", 2), ("submit_refused", 3)]
    assert run == "executing"
    assert await world.balance(FUND) == 4 * 200_00  # the refused batches' money stays held in the fund
    assert await world.balance(TRANSIT) == 0
    await world.control.deposit_funding(4 * 200_00, reference="MEF-2026-002")
    assert (await _execute(world, run_id, one_at_a_time))["status"] == "settled"
    assert await world.balance(FUND) == 0
    assert await world.balance(TRANSIT) == 0
    for h in world.households:
        assert await world.balance(f"household:{h['household_id']}:savings") == 200_00


class _BankThatHasIt:
    """The simulated bank's client, but the bank answers that it has every batch looked up by reference."""

    def __init__(self, bank: Any) -> None:
        self._bank = bank

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bank, name)

    async def get_batch_by_reference(self, reference: str) -> Any:
        return (await self._bank.list_batches(limit=1)).data[0]


async def test_a_refused_batch_can_be_cancelled_and_its_payments_accrue_to_the_next_run(world: World) -> None:
    rows = await world.register(6)
    async with world.db.unit_of_work() as conn:
        await programs.fund(conn, "JUNTOS", 6 * 200_00, "MEF-2026-001", actor="budget-office")
    await world.control.deposit_funding(4 * 200_00, reference="MEF-2026-001")  # the bank's account: two batches
    run_id = await _create(world, batch_size=2)
    await _approve(world, run_id)
    one_at_a_time = dataclasses.replace(FAST, concurrency=1)
    with pytest.raises(RunIncident, match=r"refused batch\(es\) \[2\]"):
        await _execute(world, run_id, one_at_a_time)
    reference = await _batch_reference(world, run_id, 2)

    async def cancel(batch_no: int, reason: str = "the bank will not take it", bank: Any = None) -> dict[str, Any]:
        return await cancel_refused_batch(world.db, bank or world.bank, run_id, batch_no, "maria", reason)

    with pytest.raises(RunStateError, match="batch 1 is closed and the bank never refused it"):
        await cancel(1)
    with pytest.raises(RunStateError, match="has no batch 9"):
        await cancel(9)
    with pytest.raises(RunStateError, match="say why"):
        await cancel(2, " ")
    with pytest.raises(RunStateError, match="accepted after all"):
        await cancel(2, bank=_BankThatHasIt(world.bank))
    assert (await cancel(2))["status"] == "settled"
    assert await world.bank.get_batch_by_reference(reference) is None  # the bank never saw it
    assert await world.balance(FUND) == 2 * 200_00  # the cancelled batch's hold came back
    assert await world.balance(TRANSIT) == 0
    s = await _summary(world, run_id)
    assert s["rejected_by_reason"] == {"cancelled": {"count": 2, "total": 2 * 200_00}}
    async with world.db.connection() as conn:
        events = [e["event"] for e in await repo.events(conn, run_id)]
        accrued = await conn.fetch("select household_id from payments.entitlements where payment_id is null")
    assert events[-2:] == ["batch_cancelled", "settled"]
    cancelled = {r["household_id"] for r in accrued}
    assert len(cancelled) == 2
    with pytest.raises(RunStateError, match="batch 2 is closed"):
        await cancel(2)
    # The next bimester pays them both periods, once.
    await world.control.deposit_funding(20 * 200_00, reference="MEF-2026-002")
    async with world.db.unit_of_work() as conn:
        await programs.fund(conn, "JUNTOS", 10 * 200_00, "MEF-2026-002", actor="budget-office")
    run2 = await _create(world, "2026-B6")
    await _approve(world, run2)
    assert (await _execute(world, run2))["status"] == "settled"
    for h in rows:
        paid = 2 * 200_00
        assert await world.balance(f"household:{h['household_id']}:savings") == paid, h["household_id"]


async def test_an_entitlement_released_while_a_run_is_created_stays_accrued_for_the_next(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = await world.register(3)
    late, early = rows[0], rows[1]
    for h in (late, early):
        account = (await world.bank.find_accounts(cci=h["cci"]))[0]
        await world.bank.close_account(account.id, idempotency_key=f"close-{h['household_id']}")
    await world.fund(10_000_00)
    b4 = await _create(world, "2026-B4")
    await _approve(world, b4)
    await _execute(world, b4)  # both rejected: their B4 entitlements accrue again
    async with world.db.unit_of_work() as conn:
        # `late`'s rejection is released only while B5 is being created (its settlement still running).
        await conn.execute(
            """update payments.entitlements e set payment_id = p.id from payments.payments p
                where p.run_id = $1 and p.household_id = $2 and e.household_id = $2 and e.period = '2026-B4'""",
            b4,
            late["household_id"],
        )
    snapshot = repo.snapshot_accrued

    async def release_meanwhile(conn: Any, program: str, lower: str | None, upper: str | None) -> None:
        await snapshot(conn, program, lower, upper)
        async with world.db.unit_of_work() as other:
            await other.execute(
                """update payments.entitlements set payment_id = null
                    where household_id = $1 and period = '2026-B4'""",
                late["household_id"],
            )

    monkeypatch.setattr(repo, "snapshot_accrued", release_meanwhile)
    b5 = await _create(world, "2026-B5")  # not refused: the late release is simply not part of it
    async with world.db.connection() as conn:
        amounts = dict(await conn.fetch("select household_id, amount from payments.payments where run_id = $1", b5))
        assert amounts == {late["household_id"]: 200_00, early["household_id"]: 400_00, rows[2]["household_id"]: 200_00}
        carried = dict(
            await conn.fetch(
                """select p.household_id, sum(e.amount)::bigint from payments.payments p
                     join payments.entitlements e on e.payment_id = p.id where p.run_id = $1 group by 1""",
                b5,
            )
        )
        assert carried == amounts  # every payment carries exactly what it pays
        accrued = await conn.fetch("select household_id, period from payments.entitlements where payment_id is null")
        assert [tuple(r) for r in accrued] == [(late["household_id"], "2026-B4")]  # for the next run


async def test_snapshots_and_outcomes_are_final_in_the_database(world: World) -> None:
    rows = await world.register(3)
    gone = rows[0]
    await world.bank.close_account((await world.bank.find_accounts(cci=gone["cci"]))[0].id, idempotency_key="close-f")
    await world.fund(10_000_00)
    run_id = await _create(world)
    await _approve(world, run_id)
    await _execute(world, run_id)
    async with world.db.connection() as conn:
        outcomes = await conn.fetch(
            """select o.payment_id, o.status, o.reason, o.ledger_transfer_id, p.household_id, p.amount
                 from payments.outcomes o join payments.payments p on p.id = o.payment_id
                where p.run_id = $1 order by p.household_id""",
            run_id,
        )
        assert [(r["household_id"], r["status"], r["reason"]) for r in outcomes] == [
            (gone["household_id"], "rejected", "account_closed"),
            (rows[1]["household_id"], "credited", None),
            (rows[2]["household_id"], "credited", None),
        ]
        # The batch is credited by one transfer, as the bank posts it: the in-transit account debited with the
        # credited total, each credited household's account credited with its own payment, the rejected one
        # absent; both credited outcomes name it.
        credited = outcomes[1]
        assert outcomes[2]["ledger_transfer_id"] == credited["ledger_transfer_id"]
        transfer = await Ledger(conn).get_transfer(credited["ledger_transfer_id"])
        assert {p["account"]: p["credit"] for p in transfer.postings if "credit" in p} == {
            f"household:{r['household_id']}:savings": r["amount"] for r in outcomes[1:]
        }
        assert [(p["account"], p["debit"]) for p in transfer.postings if "debit" in p] == [
            ("program:JUNTOS:in-transit", outcomes[1]["amount"] + outcomes[2]["amount"])
        ]
        assert transfer.metadata == {"run": run_id, "batch": 0}
        for statement in (
            "update payments.outcomes set status = 'rejected' where payment_id = $1",
            "delete from payments.outcomes where payment_id = $1",
            "update payments.payments set amount = amount + 1 where id = $1",
            "delete from payments.payments where id = $1",
            "insert into payments.outcomes (payment_id, status, bank_item_id) values ($1, 'rejected', 'itm_x')",
            "insert into payments.outcomes (payment_id, status, bank_item_id) values ($1 + 1000000, 'rejected', 'x')",
        ):
            with pytest.raises(asyncpg.PostgresError, match=r"final|duplicate key|does not exist"):
                await conn.execute(statement, credited["payment_id"])
        # A credited outcome names its ledger transfer; a rejected one has none.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "insert into payments.outcomes (payment_id, status, bank_item_id) values ($1, 'credited', 'x')",
                (await conn.fetchval("select max(id) from payments.payments")) + 1,
            )
        assert [tuple(r) for r in await conn.fetch(
            "select status, count(*) from payments.payment_states where run_id = $1 group by 1 order by 1", run_id
        )] == [("credited", 2), ("rejected", 1)]  # fmt: skip


async def test_the_database_and_the_service_agree_on_who_is_the_same_person(world: World) -> None:
    """Case folding differs between Python and PostgreSQL for some letters (İ): whichever decides, an
    approval by the maker is a MakerChecker refusal, never a raw database error."""
    await world.register(2)
    await world.fund(10_000_00)
    run_id = int((await service.create_run(world.db, "JUNTOS", "2026-B5", "ismail", 4)).run["id"])
    async with world.db.connection() as conn:
        same_for_postgres = await conn.fetchval("select lower(btrim('İsmail')) = lower(btrim('ismail'))")
    if same_for_postgres:
        with pytest.raises(MakerChecker):
            await _approve(world, run_id, user="İsmail")
    else:
        await _approve(world, run_id, user="İsmail")


async def test_a_run_created_before_its_verification_says_so(world: World) -> None:
    await world.register(3)
    early = await service.create_run(world.db, "JUNTOS", "2026-B4", "maria", 4)
    assert len(early.warnings) == 1
    assert "no compliance verification has been imported for JUNTOS 2026-B4" in early.warnings[0]
    await world.suspend("J000001", "2026-B5")
    verified = await service.create_run(world.db, "JUNTOS", "2026-B5", "maria", 4)
    async with world.db.connection() as conn:
        events = await conn.fetch("select detail from payments.run_events where event = 'created' order by id")
    assert verified.warnings == ()
    assert [e["detail"]["compliance_records"] for e in events] == [0, 1]


async def test_approval_refused_when_the_fund_cannot_cover(world: World) -> None:
    await world.register(3)
    await world.fund(500_00)
    run_id = await _create(world)
    with pytest.raises(RunNotFunded) as err:
        await _approve(world, run_id)
    assert err.value.extra["needed"] == 600_00
    assert "pays S/ 600.00 but program:JUNTOS:fund has S/ 500.00 available" in err.value.detail  # as people read


async def test_two_concurrent_executions_make_one_set_of_payments(world: World) -> None:
    await world.register(9)
    await world.fund(100_000_00)
    run_id = await _create(world, batch_size=2)
    await _approve(world, run_id)
    results = await asyncio.gather(_execute(world, run_id), _execute(world, run_id))
    assert {r["status"] for r in results} == {"settled"}
    assert await world.balance(FUND) == 100_000_00 - 9 * 200_00
    async with world.db.connection() as conn:
        assert await conn.fetchval("select count(*) from payments.payment_states where status = 'credited'") == 9
        assert await conn.fetchval("select count(*) from ledger.transfers where kind = 1") == 5  # one hold per batch


async def test_an_execution_waiting_for_the_runs_lock_keeps_no_connection_from_the_pool(
    world: World, db_url: str
) -> None:
    """Two connections are enough to execute a run (the lock's and one for the work), and one waiting its
    turn takes a connection only for each try: the pool stays free for the execution it waits for."""
    await world.register(4)
    await world.fund(100_000_00)
    run_id = await _create(world, batch_size=2)
    await _approve(world, run_id)
    small = await Database.connect(db_url, min_size=1, max_size=2)
    other = await asyncpg.connect(asyncpg_dsn(db_url))  # another process's execution, holding the run's lock
    try:
        assert await other.fetchval("select pg_try_advisory_lock($1, $2)", _LOCK_CLASS, run_id)
        waiting = asyncio.create_task(
            RunExecutor(small, world.bank, run_id, "maria", options=dataclasses.replace(FAST, lock_wait=60)).execute()
        )
        await asyncio.sleep(0.5)
        for _ in range(5):  # both of the pool's connections at once, while the execution waits
            async with asyncio.timeout(5), small.connection() as a, small.connection() as b:
                assert await a.fetchval("select 1") == await b.fetchval("select 1") == 1
            await asyncio.sleep(0.1)
        assert not waiting.done()
        await other.execute("select pg_advisory_unlock($1, $2)", _LOCK_CLASS, run_id)
        assert (await asyncio.wait_for(waiting, timeout=120))["status"] == "settled"
    finally:
        await other.close()
        await small.close()
    assert await world.balance(FUND) == 100_000_00 - 4 * 200_00


async def test_a_run_with_more_batches_than_a_bulk_chunk_is_held_in_several(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holds are written a bulk chunk at a time, in one transaction; here a chunk of 2 for 5 batches."""
    await world.register(9)
    await world.fund(100_000_00)
    run_id = await _create(world, batch_size=2)
    await _approve(world, run_id)
    monkeypatch.setattr(bulk, "MAX_CHUNK", 2)
    done = await _execute(world, run_id, dataclasses.replace(FAST, settle_group=1))
    assert done["status"] == "settled"
    async with world.db.connection() as conn:
        holds = await conn.fetch(
            "select hold_transfer_id from payments.batches where run_id = $1 order by batch_no", run_id
        )
        keys = await conn.fetchval("select count(*) from ledger.bulk_chunks where key like $1", f"run:{run_id}:holds%")
    assert len({r["hold_transfer_id"] for r in holds}) == 5
    assert keys == 3
    assert await world.balance(FUND) == 100_000_00 - 9 * 200_00


def test_a_settle_group_larger_than_a_bulk_chunk_is_refused() -> None:
    with pytest.raises(ValueError, match="settle_group must be 1 to 200"):
        ExecuteOptions(settle_group=201)
    with pytest.raises(ValidationError, match="less than or equal to 200"):
        Settings(run_settle_group=201)


async def test_bad_steps_are_refused_with_clear_errors(world: World) -> None:
    with pytest.raises(Exception, match=r"B1\.\.B6"):
        await _create(world, "2026-B7")
    await world.register(1)
    await world.fund(1_000_00)
    run_id = await _create(world)
    await _approve(world, run_id)
    with pytest.raises(RunStateError, match="only a created run"):
        await _approve(world, run_id, user="ana")
    async with world.db.unit_of_work() as conn:
        with pytest.raises(RunStateError, match="only a settled run"):
            await service.close_run(conn, run_id, "maria")


@pytest.mark.parametrize("faults", ["flaky", "hostile"])
async def test_runs_survive_bank_faults(db: Database, faults: str, request: pytest.FixtureRequest) -> None:
    world, app = await make_world(db, seed_for(request), faults)
    try:
        await world.register(40)
        await world.fund(1_000_000_00)
        run_id = await _create(world, batch_size=5)
        await _approve(world, run_id)
        for _ in range(10):
            try:
                await _execute(world, run_id)
                break
            except RunStateError:
                continue  # the bank was unavailable for a while: resume, as an operator would
        s = await _summary(world, run_id)
        assert s["run"]["status"] == "settled"
        credited = s["payments"].get("credited", {"count": 0, "total": 0})
        rejected = s["payments"].get("rejected", {"count": 0, "total": 0})
        assert credited["count"] + rejected["count"] == 40
        assert await world.balance(FUND) == 1_000_000_00 - credited["total"]
        assert await world.balance(TRANSIT) == 0
        async with db.connection() as conn:
            assert (
                await conn.fetchval(
                    "select count(*) from payments.payment_states "
                    "where status = 'credited' and ledger_transfer_id is null"
                )
                == 0
            )
            await audit.seal(conn)
            assert (await audit.verify(conn)).ok
    finally:
        await world.bank.aclose()
        await world.control.aclose()
        await get_simulator(app).aclose()


async def test_a_closed_accounting_period_stops_the_run_with_a_clear_error(world: World) -> None:
    from datetime import UTC, datetime, timedelta

    from ledger.engine import Ledger
    from ledger.errors import PeriodClosed

    await world.register(2)
    await world.fund(1_000_00)
    run_id = await _create(world)
    await _approve(world, run_id)
    now = datetime.now(UTC)
    async with world.db.connection() as conn:
        await Ledger(conn, "controller").close_period("today", now - timedelta(days=1), now + timedelta(days=1))
    with pytest.raises(PeriodClosed, match="today"):
        await _execute(world, run_id)
    assert await world.balance(FUND) == 1_000_00
    async with world.db.connection() as conn:
        assert await conn.fetchval("select count(*) from payments.batches where status <> 'planned'") == 0


async def test_the_report_csv_has_one_masked_line_per_payment(world: World, tmp_path: Any) -> None:
    import csv

    rows = await world.register(3)
    await world.fund(1_000_00)
    run_id = await _create(world)
    await _approve(world, run_id)
    await _execute(world, run_id)
    path = tmp_path / "run.csv"
    async with world.db.connection() as conn:
        assert await report.write_csv(conn, run_id, path) == 3
    lines = list(csv.DictReader(path.open()))
    assert [line["status"] for line in lines] == ["credited"] * 3
    assert {line["household_id"] for line in lines} == {r["household_id"] for r in rows}
    for line, row in zip(lines, rows, strict=True):
        assert line["dni"] == "******" + row["titular_dni"][-2:]
        assert line["cci"].endswith(row["cci"][-2:])
        assert row["cci"] not in line["cci"]
        assert line["periods"] == "2026-B5"
        assert line["ledger_transfer_id"]
        assert (line["amount"], line["amount_decimal"], line["currency"]) == ("20000", "200.00", "PEN")


async def _batch_reference(world: World, run_id: int, batch_no: int) -> str:
    async with world.db.connection() as conn:
        reference: str = await conn.fetchval(
            "select reference from payments.batches where run_id = $1 and batch_no = $2", run_id, batch_no
        )
    return reference


class _MisreportingBank:
    """The simulated bank, but one batch's first item comes back changed (by default, with an amount we never
    sent)."""

    def __init__(self, bank: Any, reference: str, change: Callable[[Any], Any] | None = None) -> None:
        self._bank = bank
        self._reference = reference
        self._wrong: set[str] = set()
        self._change = change or (lambda item: item.model_copy(update={"amount": item.amount + 1}))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bank, name)

    async def get_batch(self, batch_id: str) -> Any:
        found = await self._bank.get_batch(batch_id)
        if found.reference == self._reference:
            self._wrong.add(found.id)
        return found

    async def iter_batch_items(self, batch_id: str, **kwargs: Any) -> AsyncIterator[Any]:
        first = True
        async for item in self._bank.iter_batch_items(batch_id, **kwargs):
            if first and batch_id in self._wrong:
                item = self._change(item)
            first = False
            yield item

    async def iter_batch_outcomes(self, batch_id: str) -> AsyncIterator[Any]:
        async for item in self.iter_batch_items(batch_id):  # the items as changed above
            yield item_outcome(item)


async def test_a_reference_in_other_digits_is_not_taken_for_ours(world: World) -> None:
    """'R1-P٣' is not 'R1-P3': a reference is ours only byte for byte (ASCII digits, as we wrote it)."""
    await world.register(4)
    await world.fund(100_000_00)
    run_id = await _create(world, batch_size=2)
    await _approve(world, run_id)
    reference = await _batch_reference(world, run_id, 1)
    arabic = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
    for change in (
        lambda item: item.model_copy(update={"reference": item.reference[:-1] + item.reference[-1].translate(arabic)}),
        lambda item: item.model_copy(update={"reference": item.reference + "²"}),
    ):
        liar = _MisreportingBank(world.bank, reference, change)
        with pytest.raises(RunIncident, match=r"batch\(es\) \[1\]"):
            await RunExecutor(world.db, cast(BankPort, liar), run_id, "maria", options=FAST).execute()
    async with world.db.connection() as conn:
        incidents = await conn.fetch("select kind, detail from payments.incidents where run_id = $1", run_id)
    assert [r["kind"] for r in incidents] == ["settlement_mismatch", "settlement_mismatch"]
    assert all("not a payment of this batch" in str(r["detail"]) for r in incidents)
    assert await world.balance(TRANSIT) == 0  # nothing of batch 1 reached a household


async def test_items_that_contradict_the_snapshot_hold_their_batch_while_the_rest_settles(world: World) -> None:
    await world.register(6)
    await world.fund(100_000_00)
    run_id = await _create(world, batch_size=2)
    await _approve(world, run_id)
    reference = await _batch_reference(world, run_id, 2)
    liar = _MisreportingBank(world.bank, reference)
    with pytest.raises(RunIncident, match=r"batch\(es\) \[2\]") as err:
        await RunExecutor(world.db, cast(BankPort, liar), run_id, "maria", options=FAST).execute()
    assert err.value.extra["batches"] == [2]
    async with world.db.connection() as conn:
        batches = dict(await conn.fetch("select batch_no, status from payments.batches where run_id = $1", run_id))
        incidents = await conn.fetch("select kind, batch_no from payments.incidents where run_id = $1", run_id)
    assert batches == {0: "closed", 1: "closed", 2: "acknowledged"}
    assert [(r["kind"], r["batch_no"]) for r in incidents] == [("settlement_mismatch", 2)]
    # The held batch's money stays held in the fund; nothing of it reached a household.
    assert await world.balance(FUND) == 100_000_00 - 4 * 200_00
    assert await world.balance(TRANSIT) == 0
    async with world.db.connection() as conn:
        assert (await Ledger(conn).balance(FUND)).pending_debits == 2 * 200_00  # batch 2's hold, still pending
        statuses = await conn.fetch(
            "select batch_no, status, count(*) as n from payments.payment_states group by 1, 2 order by 1, 2"
        )
    assert [tuple(r) for r in statuses] == [(0, "credited", 2), (1, "credited", 2), (2, "snapshotted", 2)]
    # Once the bank reports it truthfully, resuming settles it, exactly once.
    done = await _execute(world, run_id)
    assert done["status"] == "settled"
    assert await world.balance(FUND) == 100_000_00 - 6 * 200_00
    assert await world.balance(TRANSIT) == 0
    async with world.db.connection() as conn:
        assert (await Ledger(conn).balance(FUND)).pending_debits == 0
    async with world.db.connection() as conn:
        assert await conn.fetchval("select count(*) from payments.payment_states where status = 'credited'") == 6


class _ReshapingBank(_MisreportingBank):
    """The simulated bank, but one batch's items come back reshaped: ``reshape`` gets the list and returns
    what the bank reports instead."""

    def __init__(self, bank: Any, reference: str, reshape: Callable[[list[Any]], list[Any]]) -> None:
        super().__init__(bank, reference)
        self._reshape = reshape

    async def iter_batch_items(self, batch_id: str, **kwargs: Any) -> AsyncIterator[Any]:
        items = [item async for item in self._bank.iter_batch_items(batch_id, **kwargs)]
        for item in self._reshape(items) if batch_id in self._wrong else items:
            yield item


def _rejected(item: Any, reason: RejectReason) -> Any:
    return item.model_copy(update={"status": ItemStatus.REJECTED, "reason": reason})


@pytest.mark.parametrize(
    ("reshape", "problem"),
    [
        (lambda items: items[1:], "1 payment(s) missing from the bank's items"),
        (
            lambda items: [*items, items[0].model_copy(update={"id": items[0].id + "-again"})],
            "reported twice, with different content",
        ),
        (  # the same item, first as rejected, then as credited: its outcome is in doubt, not the first one
            lambda items: [_rejected(items[0], RejectReason.PROCESSING_ERROR), *items],
            "reported twice, with different content",
        ),
        (  # the bank credited this reference before: released, it would be paid again
            lambda items: [_rejected(items[0], RejectReason.DUPLICATE_REFERENCE), *items[1:]],
            "rejected as already credited by another item",
        ),
        (  # the items say rejected where the batch's own counters say credited
            lambda items: [_rejected(items[0], RejectReason.PROCESSING_ERROR), *items[1:]],
            "the items do not add up to the batch's counters",
        ),
    ],
    ids=["an item missing", "an item twice", "one item with two statuses", "already credited", "counters differ"],
)
async def test_a_batch_with_an_item_missing_or_twice_stays_open(
    world: World, reshape: Callable[[list[Any]], list[Any]], problem: str
) -> None:
    await world.register(4)
    await world.fund(100_000_00)
    run_id = await _create(world, batch_size=2)
    await _approve(world, run_id)
    reference = await _batch_reference(world, run_id, 1)
    liar = _ReshapingBank(world.bank, reference, reshape)
    with pytest.raises(RunIncident, match=r"batch\(es\) \[1\]"):
        await RunExecutor(world.db, cast(BankPort, liar), run_id, "maria", options=FAST).execute()
    async with world.db.connection() as conn:
        incidents = await conn.fetch("select kind, batch_no, detail from payments.incidents where run_id = $1", run_id)
        first: int = await conn.fetchval(
            "select min(id) from payments.payments where run_id = $1 and batch_no = 1", run_id
        )
        states = dict(await conn.fetch("select batch_no, status from payments.batches where run_id = $1", run_id))
    assert [(r["kind"], r["batch_no"]) for r in incidents] == [("settlement_mismatch", 1)]
    assert problem in str(incidents[0]["detail"])
    if "missing" in problem:
        assert incidents[0]["detail"]["problems"][0]["first"] == [first]  # the payment the bank left out
    assert states == {0: "closed", 1: "acknowledged"}
    assert await world.balance(TRANSIT) == 0  # nothing of batch 1 reached a household


class _SlowBank:
    """The simulated bank, but slow to acknowledge (0.2 s a batch) and it settles nothing: every batch stays
    received."""

    def __init__(self, bank: Any) -> None:
        self._bank = bank

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bank, name)

    async def submit_batch(self, batch: Any, *, idempotency_key: str) -> Any:
        await asyncio.sleep(0.2)
        return await self._bank.submit_batch(batch, idempotency_key=idempotency_key)

    async def get_batch(self, batch_id: str) -> Any:
        found = await self._bank.get_batch(batch_id)
        return found.model_copy(update={"status": BatchStatus.RECEIVED})


async def test_a_bank_that_does_not_settle_stops_the_run_after_the_timeout_and_resume_finishes(world: World) -> None:
    await world.register(6)
    await world.fund(100_000_00)
    run_id = await _create(world, batch_size=2)
    await _approve(world, run_id)
    # Sending the three batches one at a time takes 0.6 s, longer than the timeout: it must not count.
    impatient = ExecuteOptions(concurrency=1, poll_interval=0.01, settle_timeout=0.3)
    with pytest.raises(RunStateError, match=r"3 batch\(es\) not settled by the bank yet.*runs resume"):
        await RunExecutor(world.db, cast(BankPort, _SlowBank(world.bank)), run_id, "maria", options=impatient).execute()
    async with world.db.connection() as conn:
        # Everything was submitted (the timeout counts only after that) and nothing was applied.
        assert await conn.fetchval(
            "select array_agg(distinct status) from payments.batches where run_id = $1", run_id
        ) == ["acknowledged"]
        assert await conn.fetchval("select count(*) from payments.payment_states where status <> 'snapshotted'") == 0
    done = await _execute(world, run_id)
    assert done["status"] == "settled"
    assert await world.balance(FUND) == 100_000_00 - 6 * 200_00
