"""Entitlements: worked examples, the set-based SQL checked against the Python rule on random households."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.postgres.database import Database
from services.programs.errors import NoRuleVersion
from services.programs.models import Rules, RuleVersion, TopUp
from services.programs.periods import Period, Schedule, parse_period, period_containing
from services.programs.rules import ENTITLEMENT_COLUMNS, compute_entitlement, entitlements_sql
from tests.services.programs.conftest import household, insert_households, set_compliance

JUNTOS = RuleVersion(
    "JUNTOS",
    1,
    date(2025, 1, 1),
    Rules(
        200_00,
        (
            TopUp("first_childhood", 100_00, "household_if", "children_under_4", 1),
            TopUp("upper_secondary", 80_00, "count", "upper_secondary_students", 0),
        ),
    ),
)
HAKU = RuleVersion("HAKU_WINAY_STIPEND", 1, date(2025, 1, 1), Rules(100_00, (), 9))
B5 = parse_period("2026-B5", "bimonthly")


def test_worked_examples_for_juntos() -> None:
    base_only = compute_entitlement(JUNTOS, household("A"), B5)
    assert (base_only.amount, base_only.breakdown) == (
        200_00,
        {"base": 200_00, "first_childhood": 0, "upper_secondary": 0},
    )
    full = compute_entitlement(JUNTOS, household("B", children_under_4=2, upper_secondary_students=2), B5)
    # 200 + 100 (once, however many small children) + 2 x 80
    assert full.amount == 460_00
    assert full.breakdown == {"base": 200_00, "first_childhood": 100_00, "upper_secondary": 160_00}
    assert full.exclusion is None
    assert full.rule_version == 1


@pytest.mark.parametrize(
    ("overrides", "compliant", "exclusion"),
    [
        ({"status": "inactive"}, True, "inactive"),
        ({"status": "exited"}, False, "inactive"),
        ({"enrolled_on": date(2026, 11, 2)}, True, "not_started"),
        ({}, False, "suspended"),
        ({"enrolled_on": date(2026, 10, 31)}, True, None),
    ],
)
def test_exclusions(overrides: dict[str, Any], compliant: bool, exclusion: str | None) -> None:
    result = compute_entitlement(JUNTOS, household("A", **overrides), B5, compliant=compliant)
    assert result.exclusion == exclusion
    if exclusion is not None:
        assert (result.amount, result.breakdown) == (0, {})


def test_haku_pays_the_nine_months_starting_with_the_enrolment_month() -> None:
    h = household("H", enrolled_on=date(2026, 3, 20), program="HAKU_WINAY_STIPEND")
    paid = {}
    for month in range(1, 13):
        period = Period.of(Schedule.MONTHLY, 2026, month)
        paid[period.code] = compute_entitlement(HAKU, h, period)
    assert paid["2026-02"].exclusion == "not_started"
    assert [code for code, e in paid.items() if e.exclusion is None] == [f"2026-{m:02d}" for m in range(3, 12)]
    assert paid["2026-12"].exclusion == "ended"
    assert sum(e.amount for e in paid.values()) == 9 * 100_00


async def _sql_rows(db: Database, rules: RuleVersion, period: Period) -> dict[str, dict[str, Any]]:
    sql, params = entitlements_sql(rules.program, period, rules)
    async with db.connection() as conn:
        rows = await conn.fetch(sql, *params)
    assert all(tuple(r.keys()) == ENTITLEMENT_COLUMNS for r in rows)
    return {r["household_id"]: dict(r) for r in rows}


async def test_the_sql_matches_the_worked_examples(loaded: Database) -> None:
    async with loaded.connection() as conn:
        await insert_households(
            conn,
            [
                household("A"),
                household("B", children_under_4=3, upper_secondary_students=1),
                household("C", status="inactive"),
                household("D", enrolled_on=date(2026, 11, 1)),
                household("E", children_under_4=1),
                household("H", program="HAKU_WINAY_STIPEND", enrolled_on=date(2026, 3, 20)),
            ],
        )
        await set_compliance(conn, "JUNTOS", "2026-B5", "E", False)
        await set_compliance(conn, "JUNTOS", "2026-B4", "A", False)  # another period: no effect on B5
    rows = await _sql_rows(loaded, JUNTOS, B5)
    assert set(rows) == {"A", "B", "C", "D", "E"}  # HAKU's household is not a JUNTOS one
    assert (rows["A"]["amount"], rows["A"]["exclusion"]) == (200_00, None)
    assert rows["B"]["amount"] == 380_00
    assert rows["B"]["breakdown"] == {"base": 200_00, "first_childhood": 100_00, "upper_secondary": 80_00}
    assert (rows["C"]["amount"], rows["C"]["breakdown"], rows["C"]["exclusion"]) == (0, {}, "inactive")
    assert rows["D"]["exclusion"] == "not_started"
    assert rows["E"]["exclusion"] == "suspended"
    assert {r["rule_version"] for r in rows.values()} == {1}
    haku = {}
    for month in range(1, 13):
        period = Period.of(Schedule.MONTHLY, 2026, month)
        haku[period.code] = (await _sql_rows(loaded, HAKU, period))["H"]
    assert [code for code, r in haku.items() if r["amount"] == 100_00] == [f"2026-{m:02d}" for m in range(3, 12)]
    assert (haku["2026-02"]["exclusion"], haku["2026-12"]["exclusion"]) == ("not_started", "ended")


async def test_the_sql_can_follow_the_callers_parameters(loaded: Database) -> None:
    async with loaded.connection() as conn:
        await insert_households(conn, [household("A"), household("B", children_under_4=1)])
        sql, params = entitlements_sql("JUNTOS", B5, JUNTOS, param_offset=1)
        total = await conn.fetchval(f"select sum(amount) + $1::bigint from ({sql}) e", 5, *params)
    assert total == 200_00 + 300_00 + 5


async def test_the_sql_can_carry_registry_columns_read_in_the_same_scan(loaded: Database) -> None:
    async with loaded.connection() as conn:
        await insert_households(conn, [household("A"), household("B", status="inactive")])
        sql, params = entitlements_sql("JUNTOS", B5, JUNTOS, carry=("titular_dni", "ubigeo"))
        rows = {r["household_id"]: r for r in await conn.fetch(sql, *params)}
        registry = {
            r["household_id"]: r
            for r in await conn.fetch("select household_id, titular_dni, ubigeo from registry.households")
        }
    assert tuple(rows["A"].keys()) == (*ENTITLEMENT_COLUMNS, "titular_dni", "ubigeo")
    for hid in ("A", "B"):  # excluded households carry them too
        assert (rows[hid]["titular_dni"], rows[hid]["ubigeo"]) == (
            registry[hid]["titular_dni"],
            registry[hid]["ubigeo"],
        )
    assert (rows["A"]["amount"], rows["B"]["exclusion"]) == (200_00, "inactive")


def test_only_known_registry_columns_can_be_carried() -> None:
    with pytest.raises(ValueError, match=r"cannot carry registry column\(s\) status; 1 from x"):
        entitlements_sql("JUNTOS", B5, JUNTOS, carry=("cci", "status; 1 from x"))


def test_a_rule_version_not_in_force_or_of_another_program_is_refused() -> None:
    later = RuleVersion("JUNTOS", 2, date(2027, 1, 1), Rules(250_00))
    with pytest.raises(NoRuleVersion, match="takes effect on 2027-01-01, after period 2026-B5 starts"):
        entitlements_sql("JUNTOS", B5, later)
    with pytest.raises(NoRuleVersion, match="rule version of HAKU_WINAY_STIPEND given for program JUNTOS"):
        entitlements_sql("JUNTOS", B5, HAKU)


households_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "status": st.sampled_from(["active", "active", "active", "inactive", "exited"]),
            "enrolled_on": st.dates(min_value=date(2024, 1, 1), max_value=date(2027, 6, 30)),
            "children_under_4": st.integers(0, 5),
            "upper_secondary_students": st.integers(0, 4),
            "compliant": st.sampled_from([None, True, False]),
        }
    ),
    min_size=1,
    max_size=40,
)
top_up_strategy = st.builds(
    TopUp,
    name=st.sampled_from(["a", "b", "c"]),
    amount=st.integers(1, 500_00),
    per=st.sampled_from(["household_if", "count"]),
    field=st.sampled_from(["children_under_4", "upper_secondary_students"]),
    min=st.integers(0, 3),
)
rules_strategy = st.builds(
    Rules,
    base=st.integers(0, 1_000_00),
    top_ups=st.lists(top_up_strategy, max_size=3, unique_by=lambda t: t.name).map(tuple),
    duration_periods=st.none() | st.integers(1, 12),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    people=households_strategy,
    rules=rules_strategy,
    schedule=st.sampled_from([Schedule.BIMONTHLY, Schedule.MONTHLY]),
    day=st.dates(min_value=date(2025, 1, 1), max_value=date(2027, 12, 31)),
)
async def test_sql_and_python_agree_on_random_households(
    loaded: Database, people: list[dict[str, Any]], rules: Rules, schedule: Schedule, day: date
) -> None:
    program = "JUNTOS" if schedule is Schedule.BIMONTHLY else "HAKU_WINAY_STIPEND"
    period = period_containing(day, schedule)
    version = RuleVersion(program, 7, date(2025, 1, 1), rules)
    rows = [
        household(f"R{i}", program=program, **{k: v for k, v in p.items() if k != "compliant"})
        for i, p in enumerate(people)
    ]
    async with loaded.connection() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await insert_households(conn, rows)
            for row, p in zip(rows, people, strict=True):
                if p["compliant"] is not None:
                    await set_compliance(conn, program, period.code, row["household_id"], p["compliant"])
            sql, params = entitlements_sql(program, period, version)
            got = {r["household_id"]: r for r in await conn.fetch(sql, *params)}
        finally:
            await tx.rollback()
    assert set(got) == {r["household_id"] for r in rows}
    for row, p in zip(rows, people, strict=True):
        expected = compute_entitlement(version, row, period, compliant=p["compliant"] is not False)
        actual = got[row["household_id"]]
        assert (actual["amount"], actual["breakdown"], actual["exclusion"], actual["rule_version"]) == (
            expected.amount,
            expected.breakdown,
            expected.exclusion,
            7,
        ), (row, p, period.code, rules)
