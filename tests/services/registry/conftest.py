"""Fixtures and helpers of the registry tests: a database with programs loaded, padron files to import."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from adapters.postgres.database import Database
from services.registry.padron import REQUIRED_COLUMNS, CsvSource
from services.registry.service import ImportReport, import_compliance, import_households
from services.registry.synthetic import dni_with_check
from tests.services.programs.conftest import TODAY, Api, Cli, api, cli, loaded

__all__ = ["TODAY", "Api", "Cli", "api", "cli", "loaded"]

VALID_CCI = "00219119184091600051"
BN_CCI = "01828600000000000158"


def row(hid: str, dni: str = "10117410", **overrides: Any) -> dict[str, str]:
    """A valid padron row (every value a string, as in a CSV)."""
    base = {
        "household_id": hid,
        "titular_dni": dni_with_check(dni),
        "titular_name": "María Quispe Mamani",
        "ubigeo": "080206",
        "cci": VALID_CCI,
        "status": "active",
        "enrolled_on": "2020-03-15",
        "children_under_4": "1",
        "upper_secondary_students": "0",
    }
    base.update({k: str(v) for k, v in overrides.items()})
    return base


def csv_text(rows: Sequence[dict[str, str] | list[str]], header: Sequence[str] = REQUIRED_COLUMNS) -> str:
    """A CSV with ``header``; dict rows follow the header, list rows are written as they are."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        writer.writerow([r.get(c, "") for c in header] if isinstance(r, dict) else r)
    return buffer.getvalue()


def source(text: str, name: str = "padron.csv") -> CsvSource:
    return CsvSource.from_bytes(name, text.encode())


async def run_import(db: Database, text: str, *, skip_invalid: bool = False, actor: str = "maria") -> ImportReport:
    async with db.unit_of_work() as conn:
        return await import_households(conn, source(text), actor=actor, skip_invalid=skip_invalid, today=TODAY)


async def run_compliance(db: Database, text: str, program: str = "JUNTOS", period: str = "2026-B5") -> ImportReport:
    async with db.unit_of_work() as conn:
        return await import_compliance(
            conn, source(text, "verification.csv"), program=program, period=period, actor="ana"
        )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def dni(n: int) -> str:
    """A distinct 8-digit DNI per ``n``."""
    return f"{40_000_000 + n:08d}"


def enrolled(day: date) -> str:
    return day.isoformat()
