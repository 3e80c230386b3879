"""The versioned programs file (``services/programs/data/programs.json``): read and validated strictly.

Shape::

    {"format": 1,
     "programs": [{"code": "JUNTOS", "name": "...", "currency": "PEN", "schedule": "bimonthly",
                   "versions": [{"version": 1, "effective_from": "2025-01-01", "base": 20000,
                                 "top_ups": [{"name": "first_childhood", "amount": 10000,
                                              "per": "household_if", "field": "children_under_4", "min": 1}],
                                 "duration_periods": null}]}]}

Amounts are integers of minor units; decimals (``200.0``), strings, booleans, duplicate keys, unknown keys
and unknown registry fields are refused with the path of the value. Versions are numbered 1, 2, 3... with
strictly later ``effective_from`` dates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

from ledger.errors import AppError
from ledger.money import require_currency
from services.programs.errors import InvalidProgramFile
from services.programs.models import FloatLiteral, Program, RuleVersion, parse_rules, require_int, require_keys
from services.programs.periods import Schedule

DEFAULT_PROGRAMS_FILE: Final = Path(__file__).parent / "data" / "programs.json"
FORMAT: Final = 1
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,39}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class ProgramDefinition:
    """A program and every rule version the file declares for it."""

    program: Program
    versions: tuple[RuleVersion, ...]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidProgramFile(f"the key {key!r} appears twice in one object", key=key)
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise InvalidProgramFile(f"{name} is not a valid amount or value")


def parse_programs_text(text: str, source: str = "programs file") -> list[ProgramDefinition]:
    """Parse and validate the programs file's text.

    Args:
        text: the JSON text.
        source: its name, for error messages.

    Returns:
        One definition per program, in file order.

    Raises:
        InvalidProgramFile: not JSON, or any rule of the format broken (the message names the path).
    """
    try:
        data = json.loads(
            text, parse_float=FloatLiteral, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates
        )
    except json.JSONDecodeError as e:
        raise InvalidProgramFile(f"{source}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    top = require_keys(data, "file", {"format", "programs"}, set())
    if top["format"] != FORMAT or isinstance(top["format"], bool):
        raise InvalidProgramFile(f"file.format: must be {FORMAT}, got {top['format']!r}")
    programs = top["programs"]
    if not isinstance(programs, list) or not programs:
        raise InvalidProgramFile("file.programs: must be a non-empty list")
    out = [_program(p, f"programs[{i}]") for i, p in enumerate(programs)]
    codes = [d.program.code for d in out]
    for code in codes:
        if codes.count(code) > 1:
            raise InvalidProgramFile(f"file.programs: program {code} appears twice", program=code)
    return out


def read_programs_file(path: Path | str = DEFAULT_PROGRAMS_FILE) -> list[ProgramDefinition]:
    """Read and validate a programs file (default: the one shipped with cct-ledger).

    Raises:
        InvalidProgramFile: the file is missing, unreadable or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidProgramFile(f"cannot read {path}: {e}", file=str(path)) from e
    return parse_programs_text(text, str(path))


def _program(data: Any, where: str) -> ProgramDefinition:
    obj = require_keys(data, where, {"code", "name", "currency", "schedule", "versions"}, set())
    code = obj["code"]
    if not isinstance(code, str) or not _CODE.match(code):
        raise InvalidProgramFile(
            f"{where}.code: must be 2-40 upper-case letters, digits or _ starting with a letter, got {code!r}",
            path=where,
        )
    where = f"{code}"
    name = obj["name"]
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        raise InvalidProgramFile(f"{where}.name: must be a string of 1 to 200 characters", path=where)
    try:
        currency = require_currency(obj["currency"])
    except AppError as e:
        raise InvalidProgramFile(f"{where}.currency: {e.detail}", path=where) from e
    try:
        schedule = Schedule(obj["schedule"])
    except ValueError:
        raise InvalidProgramFile(
            f"{where}.schedule: must be 'bimonthly' or 'monthly', got {obj['schedule']!r}", path=where
        ) from None
    program = Program(code, name.strip(), currency, schedule)
    raw_versions = obj["versions"]
    if not isinstance(raw_versions, list) or not raw_versions:
        raise InvalidProgramFile(f"{where}.versions: must be a non-empty list", path=where)
    versions = [_version(code, v, f"{where}.versions[{i}]") for i, v in enumerate(raw_versions)]
    _check_sequence(code, versions)
    return ProgramDefinition(program, tuple(versions))


def _version(code: str, data: Any, where: str) -> RuleVersion:
    obj = require_keys(data, where, {"version", "effective_from", "base"}, {"top_ups", "duration_periods"})
    number = require_int(obj["version"], f"{where}.version", minimum=1, maximum=10_000)
    effective = parse_iso_date(obj["effective_from"], f"{where}.effective_from")
    rules = parse_rules({k: v for k, v in obj.items() if k not in ("version", "effective_from")}, where)
    return RuleVersion(code, number, effective, rules)


def _check_sequence(code: str, versions: Sequence[RuleVersion]) -> None:
    for i, v in enumerate(versions):
        if v.version != i + 1:
            raise InvalidProgramFile(
                f"{code}.versions[{i}]: versions must be numbered 1, 2, 3... in order; expected {i + 1}, "
                f"got {v.version}",
                program=code,
            )
        if i and v.effective_from <= versions[i - 1].effective_from:
            raise InvalidProgramFile(
                f"{code} version {v.version}: effective_from {v.effective_from} must be after version "
                f"{v.version - 1}'s {versions[i - 1].effective_from}",
                program=code,
            )


def parse_iso_date(value: Any, where: str) -> date:
    """A ``YYYY-MM-DD`` string as a date, else :class:`InvalidProgramFile` naming ``where``."""
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise InvalidProgramFile(f"{where}: must be a date written YYYY-MM-DD, got {value!r}", path=where)
    try:
        return date.fromisoformat(value)
    except ValueError as e:
        raise InvalidProgramFile(f"{where}: {value} is not a calendar date ({e})", path=where) from e
