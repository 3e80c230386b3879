"""Compliance imports: per-period suspension, value parsing, refusals per line, re-imports with history."""

from __future__ import annotations

import pytest

from adapters.postgres.database import Database
from services.programs.errors import InvalidPeriod, ProgramNotFound
from services.programs.service import entitlement_summary
from services.registry.errors import ImportRejected
from services.registry.padron import REQUIRED_COLUMNS
from tests.services.registry.conftest import csv_text, dni, row, run_compliance, run_import

COLUMNS = ["household_id", "compliant", "reason"]


async def _registry(db: Database) -> None:
    rows = [row(f"H{i}", dni(i), children_under_4="0") for i in range(1, 7)]
    rows.append(row("K1", dni(99), program="HAKU_WINAY_STIPEND", children_under_4="0"))
    await run_import(db, csv_text(rows, [*REQUIRED_COLUMNS, "program"]))


async def test_non_compliant_households_are_suspended_for_that_period_only(loaded: Database) -> None:
    await _registry(loaded)
    text = csv_text(
        [
            ["H1", "si", ""],
            ["H2", "No", "inasistencia escolar"],
            ["H3", "TRUE", ""],
            ["H4", "0", "CRED incompleto"],
            ["H5", "sí", ""],
            ["H6", "false", ""],
        ],
        COLUMNS,
    )
    report = await run_compliance(loaded, text)
    assert (report.rows, report.inserted, report.updated, report.program, report.period) == (
        6,
        6,
        0,
        "JUNTOS",
        "2026-B5",
    )
    async with loaded.connection() as conn:
        b5 = await entitlement_summary(conn, "JUNTOS", "2026-B5")
        b6 = await entitlement_summary(conn, "JUNTOS", "2026-B6")
        reasons = dict(await conn.fetch("select household_id, reason from registry.compliance where not compliant"))
    assert b5["groups"]["suspended"] == {"households": 3, "amount": 0}
    assert b5["payable_households"] == 3
    assert b6["payable_households"] == 6
    assert "suspended" not in b6["groups"]
    assert reasons == {"H2": "inasistencia escolar", "H4": "CRED incompleto", "H6": ""}


async def test_bad_values_unknown_and_duplicate_households_are_refused_per_line(loaded: Database) -> None:
    await _registry(loaded)
    text = csv_text(
        [["H1", "maybe", ""], ["H2", "", ""], ["H3", "si", ""], ["H3", "no", ""], ["NOPE", "si", ""], ["K1", "no", ""]],
        COLUMNS,
    )
    with pytest.raises(ImportRejected) as caught:
        await run_compliance(loaded, text)
    assert [(e["line"], e["column"], e["reason"]) for e in caught.value.errors] == [
        (2, "compliant", "'maybe' is not true/false, 1/0, si/sí/no or yes (any case)"),
        (3, "compliant", "is required"),
        (5, "household_id", "duplicate: H3 already appears on line 4"),
    ]
    good_format = csv_text([["H1", "si", ""], ["NOPE", "si", ""], ["K1", "no", ""]], COLUMNS)
    with pytest.raises(ImportRejected) as caught:
        await run_compliance(loaded, good_format)
    assert [(e["line"], e["column"], e["reason"]) for e in caught.value.errors] == [
        (3, "household_id", "household NOPE is not in the registry"),
        (4, "household_id", "household K1 is enrolled in HAKU_WINAY_STIPEND, not JUNTOS"),
    ]
    async with loaded.connection() as conn:
        assert await conn.fetchval("select count(*) from registry.compliance") == 0


async def test_reimporting_updates_changed_values_and_keeps_the_history(loaded: Database) -> None:
    await _registry(loaded)
    first = csv_text([["H1", "no", "inasistencia"], ["H2", "si", ""]], COLUMNS)
    await run_compliance(loaded, first)
    again = await run_compliance(loaded, first)
    assert (again.changed, again.import_id, again.unchanged) == (False, None, 2)
    regularised = await run_compliance(loaded, csv_text([["H1", "si", "regularizó"], ["H2", "si", ""]], COLUMNS))
    assert (regularised.inserted, regularised.updated, regularised.unchanged) == (0, 1, 1)
    async with loaded.connection() as conn:
        latest = await conn.fetchrow("select compliant, reason from registry.compliance where household_id = 'H1'")
        history = await conn.fetch(
            "select compliant, reason from registry.compliance_history where household_id = 'H1' order by id"
        )
        summary = await entitlement_summary(conn, "JUNTOS", "2026-B5")
    assert tuple(latest) == (True, "regularizó")
    assert [tuple(h) for h in history] == [(False, "inasistencia"), (True, "regularizó")]
    assert "suspended" not in summary["groups"]


async def test_program_and_period_are_checked(loaded: Database) -> None:
    text = csv_text([["H1", "si", ""]], COLUMNS)
    with pytest.raises(InvalidPeriod, match=r"bimester must be B1\.\.B6"):
        await run_compliance(loaded, text, period="2026-B7")
    with pytest.raises(InvalidPeriod, match="is not a month"):
        await run_compliance(loaded, text, program="HAKU_WINAY_STIPEND", period="2026-B5")
    with pytest.raises(ProgramNotFound):
        await run_compliance(loaded, text, program="NOPE")


async def test_an_import_reports_its_progress_by_phase(loaded: Database) -> None:
    from services.registry.service import import_compliance
    from tests.services.registry.conftest import source

    await _registry(loaded)
    seen: list[tuple[str, int, int | None]] = []
    text = csv_text([[f"H{i}", "si", ""] for i in range(1, 7)], COLUMNS)
    async with loaded.unit_of_work() as conn:
        report = await import_compliance(
            conn,
            source(text, "verification.csv"),
            program="JUNTOS",
            period="2026-B5",
            actor="ana",
            progress=lambda phase, done, total: seen.append((phase, done, total)),
        )
    assert report.inserted == 6
    assert seen == [("validate", 6, 6), ("merge", 0, None), ("merge", 6, 6)]
