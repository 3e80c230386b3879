"""Loading programs (idempotent, append-only rule versions, ledger accounts) and funding them."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import asyncpg
import pytest

from adapters.postgres.database import Database
from ledger.engine import Ledger
from ledger.models import NormalBalance
from ledger.money import InvalidMoney
from services.programs import service
from services.programs.catalog import DEFAULT_PROGRAMS_FILE, parse_programs_text, read_programs_file
from services.programs.errors import (
    AppropriationConflict,
    InvalidAppropriation,
    NoRuleVersion,
    ProgramChanged,
    ProgramNotFound,
    RuleVersionChanged,
    RuleVersionNotAllowed,
)
from services.programs.periods import parse_period
from tests.services.programs.conftest import TODAY, household, insert_households


def _file(change: Any) -> str:
    data = json.loads(DEFAULT_PROGRAMS_FILE.read_text(encoding="utf-8"))
    change(data)
    return json.dumps(data)


def _add_juntos_version(effective_from: str, base: int) -> Any:
    def change(data: dict[str, Any]) -> None:
        versions = data["programs"][0]["versions"]
        versions.append({**versions[-1], "version": len(versions) + 1, "effective_from": effective_from, "base": base})

    return change


async def test_loading_opens_the_accounts_and_reloading_changes_nothing(loaded: Database) -> None:
    async with loaded.connection() as conn:
        accounts = await Ledger(conn).get_accounts(
            ["program:JUNTOS:fund", "program:JUNTOS:in-transit", "mef:treasury", "program:HAKU_WINAY_STIPEND:fund"]
        )
    fund, in_transit, treasury = (
        accounts["program:JUNTOS:fund"],
        accounts["program:JUNTOS:in-transit"],
        accounts["mef:treasury"],
    )
    assert (fund.normal_balance, fund.no_overdraft, fund.hot, fund.currency) == (
        NormalBalance.CREDIT,
        True,
        True,
        "PEN",
    )
    assert (in_transit.normal_balance, in_transit.no_overdraft, in_transit.hot) == (NormalBalance.CREDIT, False, True)
    assert (treasury.normal_balance, treasury.no_overdraft) == (NormalBalance.DEBIT, False)
    assert "program:HAKU_WINAY_STIPEND:fund" in accounts
    async with loaded.unit_of_work() as conn:
        report = await service.load_programs(conn, read_programs_file(), actor="someone", today=TODAY)
        count = await conn.fetchval("select count(*) from programs.rule_versions")
        accounts_count = await conn.fetchval("select count(*) from ledger.accounts")
    assert not report.changed
    assert report.versions_unchanged == [("JUNTOS", 1), ("HAKU_WINAY_STIPEND", 1)]
    assert (count, accounts_count) == (2, 5)


async def test_a_changed_amount_in_a_loaded_version_is_refused(loaded: Database) -> None:
    changed = parse_programs_text(_file(lambda d: d["programs"][0]["versions"][0].update(base=250_00)))
    async with loaded.unit_of_work() as conn:
        with pytest.raises(
            RuleVersionChanged, match=r"JUNTOS version 1 is already loaded .*base 20000 → 25000.*add version 2"
        ):
            await service.load_programs(conn, changed, actor="someone", today=TODAY)


async def test_a_new_version_changes_only_later_periods(loaded: Database) -> None:
    definitions = parse_programs_text(_file(_add_juntos_version("2027-01-01", 250_00)))
    async with loaded.unit_of_work() as conn:
        report = await service.load_programs(conn, definitions, actor="budget-office", today=TODAY)
    assert report.versions_added == [("JUNTOS", 2)]
    async with loaded.connection() as conn:
        await insert_households(conn, [household("A", enrolled_on=date(2020, 1, 1))])
        by_period = {}
        for code in ("2026-B5", "2026-B6", "2027-B1", "2027-B2"):
            period = parse_period(code, "bimonthly")
            version = await service.rule_version_for(conn, "JUNTOS", period)
            summary = await service.entitlement_summary(conn, "JUNTOS", code)
            by_period[code] = (version.version, summary["payable_amount"])
    assert by_period == {
        "2026-B5": (1, 200_00),
        "2026-B6": (1, 200_00),
        "2027-B1": (2, 250_00),
        "2027-B2": (2, 250_00),
    }


async def test_a_new_version_may_not_take_effect_today_or_earlier(loaded: Database) -> None:
    definitions = parse_programs_text(_file(_add_juntos_version("2026-11-28", 250_00)))
    async with loaded.unit_of_work() as conn:
        with pytest.raises(RuleVersionNotAllowed, match="may change future periods only"):
            await service.load_programs(conn, definitions, actor="x", today=TODAY)


async def test_currency_and_schedule_cannot_change(loaded: Database) -> None:
    definitions = parse_programs_text(_file(lambda d: d["programs"][1].update(schedule="bimonthly")))
    async with loaded.unit_of_work() as conn:
        with pytest.raises(ProgramChanged, match="HAKU_WINAY_STIPEND: schedule is monthly in the database"):
            await service.load_programs(conn, definitions, actor="x", today=TODAY)


async def test_renaming_a_program_is_allowed(loaded: Database) -> None:
    definitions = parse_programs_text(_file(lambda d: d["programs"][0].update(name="Juntos")))
    async with loaded.unit_of_work() as conn:
        report = await service.load_programs(conn, definitions, actor="x", today=TODAY)
        assert (await service.get_program(conn, "JUNTOS")).name == "Juntos"
    assert report.programs_renamed == ["JUNTOS"]


async def test_rule_versions_and_appropriations_are_append_only(loaded: Database) -> None:
    async with loaded.unit_of_work() as conn:
        await service.fund(conn, "JUNTOS", 10_00, "RM-1", actor="maria")
    async with loaded.connection() as conn:
        for statement in (
            "update programs.rule_versions set rules = '{}'::jsonb",
            "delete from programs.rule_versions",
            "truncate programs.rule_versions cascade",
            "update programs.appropriations set amount = 1",
            "delete from programs.appropriations",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only") as caught:
                await conn.execute(statement)
            assert caught.value.sqlstate == "CL200"


async def test_lookups_name_what_is_missing(loaded: Database) -> None:
    async with loaded.connection() as conn:
        with pytest.raises(NoRuleVersion, match="no rule version in force on 2024-11-01"):
            await service.rule_version_for(conn, "JUNTOS", parse_period("2024-B6", "bimonthly"))
        with pytest.raises(
            ProgramNotFound, match=r"program 'NOPE' not found .*loaded programs: HAKU_WINAY_STIPEND, JUNTOS"
        ):
            await service.get_program(conn, "NOPE")


async def test_an_appropriation_is_recorded_once_per_reference(loaded: Database) -> None:
    async with loaded.unit_of_work() as conn:
        first = await service.fund(conn, "JUNTOS", 150_000_000_00, "RM-045-2026-MIDIS", actor="maria")
    async with loaded.unit_of_work() as conn:
        again = await service.fund(conn, "JUNTOS", 150_000_000_00, "RM-045-2026-MIDIS", actor="maria")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.transfer_id == first.transfer_id
    assert again.fund_balance == first.fund_balance == 150_000_000_00
    async with loaded.connection() as conn:
        ledger = Ledger(conn)
        assert (await ledger.get_account("mef:treasury")).balance.posted == 150_000_000_00
        transfer = await ledger.get_transfer(first.transfer_id)
        count = await conn.fetchval("select count(*) from programs.appropriations")
        key = await conn.fetchval("select key from ledger.idempotency_keys")
    assert key == service.appropriation_key("JUNTOS", "RM-045-2026-MIDIS") == "appropriation:JUNTOS:RM-045-2026-MIDIS"
    assert transfer.metadata == {"kind": "appropriation", "program": "JUNTOS", "reference": "RM-045-2026-MIDIS"}
    assert count == 1
    async with loaded.unit_of_work() as conn:
        with pytest.raises(AppropriationConflict, match=r"already appropriated to JUNTOS for S/ 150,000,000.00"):
            await service.fund(conn, "JUNTOS", 1_00, "RM-045-2026-MIDIS", actor="maria")


async def test_bad_appropriations_are_refused(loaded: Database) -> None:
    cases: list[tuple[Any, str, type[Exception], str]] = [
        (0, "RM-1", InvalidMoney, "amount must be greater than zero"),
        (1.5, "RM-1", InvalidMoney, "must be an integer number of minor units"),
        ("100", "RM-1", InvalidMoney, "must be an integer number of minor units"),
        (100, "", InvalidAppropriation, "reference '' must be 1-100 letters"),
        (100, "RM 1", InvalidAppropriation, "reference 'RM 1'"),
    ]
    async with loaded.connection() as conn:
        for amount, reference, error, message in cases:
            with pytest.raises(error, match=message):
                await service.fund(conn, "JUNTOS", amount, reference, actor="maria")
        with pytest.raises(ProgramNotFound):
            await service.fund(conn, "NOPE", 100, "RM-1", actor="maria")
        assert await conn.fetchval("select count(*) from ledger.transfers") == 0


async def test_an_idempotency_key_reused_for_another_appropriation_is_refused(loaded: Database) -> None:
    async with loaded.unit_of_work() as conn:
        await service.fund(conn, "JUNTOS", 10_00, "RM-1", actor="maria", idempotency_key="k1")
    async with loaded.unit_of_work() as conn:
        with pytest.raises(AppropriationConflict, match="Idempotency-Key 'k1' was used for appropriation RM-1"):
            await service.fund(conn, "JUNTOS", 10_00, "RM-2", actor="maria", idempotency_key="k1")


async def test_describe_shows_versions_balances_and_appropriations(loaded: Database) -> None:
    async with loaded.unit_of_work() as conn:
        await service.fund(conn, "JUNTOS", 500_00, "RM-1", actor="maria")
    async with loaded.connection() as conn:
        data = await service.describe_program(conn, "JUNTOS", today=date(2026, 9, 15))
    assert data["current_period"] == "2026-B5"
    assert data["version_in_force"] == 1
    assert data["fund_balance"]["posted"] == 500_00
    assert data["in_transit_balance"]["posted"] == 0
    assert data["appropriations"] == {"count": 1, "total": 500_00}
    assert data["rule_versions"][0]["rules"]["base"] == 200_00
