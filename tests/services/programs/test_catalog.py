"""The programs file: the shipped definitions, and strict validation with the path of each mistake."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from services.programs.catalog import DEFAULT_PROGRAMS_FILE, parse_programs_text, read_programs_file
from services.programs.errors import InvalidProgramFile
from services.programs.models import TopUp
from services.programs.periods import Schedule


def test_the_shipped_file_defines_juntos_and_the_haku_winay_stipend() -> None:
    defs = {d.program.code: d for d in read_programs_file()}
    juntos, haku = defs["JUNTOS"], defs["HAKU_WINAY_STIPEND"]
    assert juntos.program.schedule is Schedule.BIMONTHLY
    assert juntos.program.currency == "PEN"
    assert juntos.program.fund_account == "program:JUNTOS:fund"
    assert juntos.program.in_transit_account == "program:JUNTOS:in-transit"
    rules = juntos.versions[0].rules
    assert rules.base == 200_00
    assert rules.top_ups == (
        TopUp("first_childhood", 100_00, "household_if", "children_under_4", 1),
        TopUp("upper_secondary", 80_00, "count", "upper_secondary_students", 0),
    )
    assert rules.duration_periods is None
    assert haku.program.schedule is Schedule.MONTHLY
    assert haku.versions[0].rules.base == 100_00
    assert haku.versions[0].rules.duration_periods == 9


def _shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DEFAULT_PROGRAMS_FILE.read_text(encoding="utf-8"))
    return data


def _with(change: Any) -> str:
    data = copy.deepcopy(_shipped())
    change(data)
    return json.dumps(data)


def _juntos_v1(data: dict[str, Any]) -> dict[str, Any]:
    version: dict[str, Any] = data["programs"][0]["versions"][0]
    return version


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: _juntos_v1(d).update(base=200.0), r"JUNTOS.versions\[0\].base: must be an integer .*decimal 200.0"),
        (lambda d: _juntos_v1(d).update(base="20000"), r"base: must be an integer .*got str '20000'"),
        (lambda d: _juntos_v1(d).update(base=True), r"base: must be an integer .*got bool True"),
        (lambda d: _juntos_v1(d).update(base=-1), r"base: must be between 0 and"),
        (lambda d: _juntos_v1(d)["top_ups"][0].update(amount=100.5), r"top_ups\[0\].amount: must be an integer"),
        (
            lambda d: _juntos_v1(d)["top_ups"][0].update(field="income"),
            r"top_ups\[0\].field: 'income' is not a registry field a rule may use",
        ),
        (lambda d: _juntos_v1(d)["top_ups"][0].update(per="each"), r"per: must be 'household_if' or 'count'"),
        (lambda d: _juntos_v1(d)["top_ups"][1].update(name="first_childhood"), "appears twice"),
        (lambda d: _juntos_v1(d).update(bonus=1), r"unknown key\(s\) bonus"),
        (lambda d: _juntos_v1(d).pop("base"), r"missing key\(s\) base"),
        (lambda d: _juntos_v1(d).update(effective_from="2025-1-1"), "must be a date written YYYY-MM-DD"),
        (lambda d: _juntos_v1(d).update(effective_from="2025-02-30"), "is not a calendar date"),
        (lambda d: _juntos_v1(d).update(version=2), "versions must be numbered 1, 2, 3"),
        (
            lambda d: d["programs"][0]["versions"].append({**_juntos_v1(d), "version": 2}),
            "effective_from 2025-01-01 must be after version 1's 2025-01-01",
        ),
        (lambda d: d["programs"][0].update(schedule="weekly"), "schedule: must be 'bimonthly' or 'monthly'"),
        (lambda d: d["programs"][0].update(currency="XXX"), "currency: currency XXX is not supported"),
        (lambda d: d["programs"][0].update(code="juntos"), "code: must be 2-40 upper-case letters"),
        (lambda d: d["programs"].append(d["programs"][0]), "program JUNTOS appears twice"),
        (lambda d: d.update(format=2), "file.format: must be 1"),
        (lambda d: _juntos_v1(d).update(duration_periods=0), "duration_periods: must be between 1"),
        (lambda d: _juntos_v1(d).update(base=0, top_ups=[]), "pays nothing"),
    ],
)
def test_mistakes_are_refused_with_their_path(change: Any, message: str) -> None:
    with pytest.raises(InvalidProgramFile, match=message):
        parse_programs_text(_with(change))


def test_duplicate_keys_and_bad_json_are_refused() -> None:
    with pytest.raises(InvalidProgramFile, match="the key 'base' appears twice"):
        parse_programs_text('{"format": 1, "programs": [{"code": "X", "base": 1, "base": 2}]}')
    with pytest.raises(InvalidProgramFile, match="not valid JSON"):
        parse_programs_text('{"format": 1,')
    with pytest.raises(InvalidProgramFile, match="NaN is not a valid"):
        parse_programs_text('{"format": 1, "programs": NaN}')


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidProgramFile, match="cannot read"):
        read_programs_file(tmp_path / "nope.json")


def test_a_second_version_parses_in_order() -> None:
    def add(d: dict[str, Any]) -> None:
        d["programs"][0]["versions"].append(
            {**_juntos_v1(d), "version": 2, "effective_from": "2027-01-01", "base": 250_00}
        )

    juntos = parse_programs_text(_with(add))[0]
    assert [(v.version, v.effective_from, v.rules.base) for v in juntos.versions] == [
        (1, date(2025, 1, 1), 200_00),
        (2, date(2027, 1, 1), 250_00),
    ]
