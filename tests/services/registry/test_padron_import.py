"""Importing the padron: validation with exact line/column/reason, all-or-nothing, --skip-invalid, re-imports."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from adapters.postgres.database import Database
from services.registry.errors import ImportRejected, InvalidImportFile
from services.registry.padron import REQUIRED_COLUMNS, rejects_csv
from services.registry.synthetic import generate_households, synthetic_ccis, write_padron_csv
from tests.services.registry.conftest import BN_CCI, csv_text, dni, row, run_import

HEADER = [*REQUIRED_COLUMNS, "program"]
BAD_ROWS = [
    row("H1", dni(1)),  # line 2: valid
    row("H2", dni(2), titular_dni="10117410-3"),
    row("H3", dni(3), cci="00219119184091600052"),
    row("H4", dni(4), ubigeo="260101"),
    row("H5", dni(5), status="activo"),
    row("H6", dni(6), enrolled_on="2026-02-30"),
    row("H7", dni(7), enrolled_on="2027-01-01"),
    row("H8", dni(8), children_under_4="1.0"),
    row("H9", dni(9), upper_secondary_students="-1"),
    row("H10", dni(10), titular_name=" "),
    row("H1", dni(11)),
    row("H12", dni(1)),
    ["H13", "x"],
    row("H14", dni(14), enrolled_on="15/03/2020"),
    row("H 15", dni(15)),
    row("H16", dni(16), program="FOO"),
    row("H17", dni(17), cci="123"),
    row("H18", dni(18), children_under_4="", ubigeo="2601"),
]
EXPECTED = [
    (3, "titular_dni", "check character '3' is wrong (expected 2/G)"),
    (4, "cci", "check digit 2 (account) is 2, expected 1"),
    (5, "ubigeo", "260101 is not a district in the INEI list"),
    (6, "status", "'activo' is not one of active, inactive, exited"),
    (7, "enrolled_on", "'2026-02-30' is not a calendar date"),
    (8, "enrolled_on", "2027-01-01 is in the future (today is 2026-11-28)"),
    (9, "children_under_4", "'1.0' is not a whole number (write 1, not 1.0)"),
    (10, "upper_secondary_students", "-1 is negative"),
    (11, "titular_name", "is required"),
    (12, "household_id", "duplicate: H1 already appears on line 2"),
    (13, "titular_dni", "duplicate: the same DNI is the titular of household H1 on line 2"),
    (14, "*", "the line has 2 fields, the header has 10"),
    (15, "enrolled_on", "'15/03/2020' is not a date written YYYY-MM-DD"),
    (16, "household_id", "'H 15' is not a valid id (1-40 letters, digits, _ or -, starting with a letter or digit)"),
    (17, "program", "unknown program 'FOO' (load programs first: `cct-ledger programs load`)"),
    (18, "cci", "expected 20 digits, got 3"),
    (19, "ubigeo", "expected 6 digits, got '2601'"),
    (19, "children_under_4", "is required"),
]


async def _count(db: Database, table: str) -> int:
    async with db.connection() as conn:
        value: int = await conn.fetchval(f"select count(*) from {table}")
    return value


async def test_a_valid_padron_is_imported(loaded: Database) -> None:
    text = csv_text(
        [
            row("H1", dni(1)),
            row("H2", dni(2), cci="", status="inactive", children_under_4="0", upper_secondary_students="2"),
            row("H3", dni(3), program="HAKU_WINAY_STIPEND", titular_dni=dni(3), cci=BN_CCI),
        ],
        HEADER,
    )
    report = await run_import(loaded, text)
    assert (report.rows, report.inserted, report.updated, report.unchanged, report.rejected) == (3, 3, 0, 0, 0)
    assert report.import_id is not None
    async with loaded.connection() as conn:
        rows = {r["household_id"]: dict(r) for r in await conn.fetch("select * from registry.households")}
        imp = await conn.fetchrow("select * from registry.imports where id = $1", report.import_id)
    assert rows["H1"]["titular_dni"] == dni(1)  # the check character is a typing guard, not stored
    assert rows["H1"]["cci"] == "00219119184091600051"  # another bank's: imported, and said
    assert report.warnings == [
        "1 household(s) have the CCI of another bank than Banco de la Nación (018): payments go only to Banco de "
        "la Nación savings accounts, so their entitlements accrue until the registry gives them one"
    ]
    assert report.to_dict()["warnings"] == report.warnings
    assert rows["H2"]["cci"] is None  # no account yet
    assert (rows["H2"]["status"], rows["H2"]["upper_secondary_students"]) == ("inactive", 2)
    assert rows["H3"]["program"] == "HAKU_WINAY_STIPEND"
    assert {r["version"] for r in rows.values()} == {1}
    assert (imp["kind"], imp["rows"], imp["inserted"], imp["imported_by"], imp["sha256"]) == (
        "households",
        3,
        3,
        "maria",
        report.sha256,
    )
    assert await _count(loaded, "registry.household_history") == 3


async def test_every_kind_of_bad_row_is_reported_and_nothing_is_written(loaded: Database) -> None:
    with pytest.raises(ImportRejected) as caught:
        await run_import(loaded, csv_text(BAD_ROWS, HEADER))
    got = [(e["line"], e["column"], e["reason"]) for e in caught.value.errors]
    assert got == EXPECTED
    assert "17 of 18 rows are invalid (first: line 3, titular_dni" in caught.value.detail
    assert caught.value.extra["errors_total"] == len(EXPECTED)
    assert await _count(loaded, "registry.households") == 0
    assert await _count(loaded, "registry.imports") == 0


async def test_skip_invalid_imports_the_good_rows_and_returns_the_rejects(loaded: Database) -> None:
    report = await run_import(loaded, csv_text(BAD_ROWS, HEADER), skip_invalid=True)
    assert (report.rows, report.inserted, report.rejected) == (18, 1, 17)
    assert [(e.line, e.column, e.reason) for e in report.errors] == EXPECTED
    rejects = list(csv.reader(io.StringIO(rejects_csv(report.header, report.rejected_rows))))
    assert rejects[0] == [*HEADER, "reject_line", "reject_column", "reject_reason"]
    assert rejects[1][:2] == ["H2", "10117410-3"]
    assert rejects[1][-3:] == ["3", "titular_dni", "check character '3' is wrong (expected 2/G)"]
    assert rejects[12] == [
        "H13",
        "x",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "14",
        "*",
        "the line has 2 fields, the header has 10",
    ]
    assert rejects[-1][-3:] == ["19", "ubigeo; children_under_4", "expected 6 digits, got '2601'; is required"]
    assert len(rejects) == 1 + 17
    async with loaded.connection() as conn:
        ids = [r["household_id"] for r in await conn.fetch("select household_id from registry.households")]
        imported = await conn.fetchrow("select rejected, inserted from registry.imports")
    assert ids == ["H1"]
    assert tuple(imported) == (17, 1)


async def test_reimporting_the_same_file_changes_nothing(loaded: Database) -> None:
    text = csv_text([row("H1", dni(1)), row("H2", dni(2))])
    first = await run_import(loaded, text)
    again = await run_import(loaded, text)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
    assert not again.changed
    assert again.import_id is None
    assert again.previous_import == first.import_id
    assert await _count(loaded, "registry.imports") == 1
    assert await _count(loaded, "registry.household_history") == 2


async def test_a_changed_household_gets_a_new_version_and_a_history_row(loaded: Database) -> None:
    await run_import(loaded, csv_text([row("H1", dni(1)), row("H2", dni(2), cci="")]))
    changed = csv_text([row("H1", dni(1)), row("H2", dni(2), cci=BN_CCI, children_under_4="2"), row("H3", dni(3))])
    report = await run_import(loaded, changed)
    assert (report.inserted, report.updated, report.unchanged) == (1, 1, 1)
    async with loaded.connection() as conn:
        h2 = await conn.fetchrow("select * from registry.households where household_id = 'H2'")
        history = await conn.fetch(
            "select * from registry.household_history where household_id = 'H2' order by version"
        )
        h1 = await conn.fetchval("select version from registry.households where household_id = 'H1'")
    assert (h2["version"], h2["cci"], h2["children_under_4"], h2["import_id"]) == (2, BN_CCI, 2, report.import_id)
    assert [(h["version"], h["cci"], h["children_under_4"]) for h in history] == [(1, None, 1), (2, BN_CCI, 2)]
    assert h1 == 1


async def test_a_dni_held_by_another_household_in_the_registry_is_refused(loaded: Database) -> None:
    await run_import(loaded, csv_text([row("H1", dni(1)), row("H2", dni(2))]))
    clash = csv_text([row("H3", dni(1)), row("H4", dni(4))])
    with pytest.raises(ImportRejected) as caught:
        await run_import(loaded, clash)
    assert [(e["line"], e["column"], e["reason"]) for e in caught.value.errors] == [
        (2, "titular_dni", "the same DNI is already the titular of household H1 in the registry")
    ]
    report = await run_import(loaded, clash, skip_invalid=True)
    assert (report.inserted, report.rejected) == (1, 1)
    assert report.rejected_rows[0].raw[0] == "H3"
    # Moving a titular between households in one file is fine: H1 gets a new DNI, H5 takes the old one.
    moved = await run_import(loaded, csv_text([row("H1", dni(9)), row("H5", dni(1))]))
    assert (moved.inserted, moved.updated) == (1, 1)


async def test_extra_columns_are_kept(loaded: Database) -> None:
    text = csv_text([row("H1", dni(1)) | {"zona": "rural", "lengua": "quechua"}], [*REQUIRED_COLUMNS, "zona", "lengua"])
    await run_import(loaded, text)
    async with loaded.connection() as conn:
        extra = await conn.fetchval("select extra from registry.households")
    assert extra == {"zona": "rural", "lengua": "quechua"}


async def test_unreadable_files_are_refused_as_a_whole(loaded: Database) -> None:
    cases = [
        ("", "is empty: expected a header line"),
        ("household_id,titular_dni\nH1,1\n", "missing column(s) titular_name, ubigeo, cci, status"),
        (csv_text([]), "has a header but no rows"),
        ("household_id,household_id\n", "column(s) household_id appear more than once"),
        ('household_id,"titular_dni\n', "unexpected end of data"),
    ]
    for text, message in cases:
        with pytest.raises(InvalidImportFile) as caught:
            await run_import(loaded, text)
        assert message in caught.value.detail, text


async def test_a_file_that_is_not_utf8_is_refused_and_nothing_is_kept(loaded: Database) -> None:
    from services.registry.padron import CsvSource
    from services.registry.service import import_households
    from tests.services.registry.conftest import TODAY

    good = csv_text([row(f"H{i}", dni(i)) for i in range(1, 5)]).encode()
    bad = csv_text([row("H9", dni(9), titular_name="Nélida")]).split("\n", 1)[1]
    data = good + bad.encode("latin-1")
    async with loaded.unit_of_work() as conn:
        with pytest.raises(InvalidImportFile, match=r"is not UTF-8 text .*save it as UTF-8"):
            # one row per COPY: four chunks are staged before the bad bytes are read
            await import_households(conn, CsvSource.from_bytes("p.csv", data), actor="x", today=TODAY, chunk=1)
        assert await conn.fetchval("select count(*) from registry.households") == 0


async def test_the_synthetic_padron_plants_exactly_the_rows_it_reports(loaded: Database, tmp_path: Path) -> None:
    households = generate_households(300, seed=7)
    invalid = write_padron_csv(tmp_path / "p.csv", households, synthetic_ccis(households, 7), 0.04, seed=7)
    assert sorted(set(invalid.values())) == sorted(
        ["bad_dni", "bad_cci", "unknown_ubigeo", "negative_count", "bad_date", "duplicate_id"]
    )
    report = await run_import(loaded, (tmp_path / "p.csv").read_text(encoding="utf-8"), skip_invalid=True)
    columns = {
        "bad_dni": "titular_dni",
        "bad_cci": "cci",
        "unknown_ubigeo": "ubigeo",
        "negative_count": "children_under_4",
        "bad_date": "enrolled_on",
        "duplicate_id": "household_id",
    }
    assert {e.line: e.column for e in report.errors} == {line: columns[kind] for line, kind in invalid.items()}
    assert report.inserted == 300 - len(invalid)


async def test_dni_moves_within_one_file_are_settled_on_the_whole_file(loaded: Database) -> None:
    """A DNI held by a household that the same file moves to another DNI is free; one held by a household
    not in the file is a conflict. The rows are staged in several COPY chunks."""
    from services.registry.service import import_households
    from tests.services.registry.conftest import TODAY, source

    await run_import(loaded, csv_text([row("H1", dni(1)), row("H2", dni(2)), row("H6", dni(6))]))
    text = csv_text(
        [
            row("H3", dni(1)),  # takes H1's DNI: free once H1 (line 4) moves to another DNI
            row("H4", dni(4)),
            row("H1", dni(7)),
            row("H5", dni(2)),  # H2 keeps its DNI (not in the file): a conflict
            row("H6", dni(6), children_under_4="3"),
        ]
    )
    async with loaded.unit_of_work() as conn:
        with pytest.raises(ImportRejected) as caught:
            await import_households(conn, source(text), actor="x", today=TODAY, chunk=2)
    assert [(e["line"], e["reason"]) for e in caught.value.errors] == [
        (5, "the same DNI is already the titular of household H2 in the registry")
    ]
    async with loaded.connection() as conn:
        assert await conn.fetchval("select count(*) from registry.households") == 3  # rolled back
    async with loaded.unit_of_work() as conn:
        report = await import_households(conn, source(text), actor="x", today=TODAY, chunk=2, skip_invalid=True)
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (2, 2, 0, 1)
    assert report.rejected_rows[0].raw[0] == "H5"
    async with loaded.connection() as conn:
        dnis = dict(await conn.fetch("select household_id, titular_dni from registry.households"))
        versions = dict(await conn.fetch("select household_id, version from registry.households"))
    assert dnis == {"H1": dni(7), "H2": dni(2), "H3": dni(1), "H4": dni(4), "H6": dni(6)}
    assert versions == {"H1": 2, "H2": 1, "H3": 1, "H4": 1, "H6": 2}
