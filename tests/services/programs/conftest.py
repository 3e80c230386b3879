"""Fixtures of the programs tests: a database with the shipped programs loaded, and households written directly."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import date
from typing import Any

import pytest
import pytest_asyncio
from typer.testing import CliRunner, Result

from adapters.postgres.database import Database
from ledger.db import Connection
from services.config import get_settings
from services.programs.catalog import read_programs_file
from services.programs.service import load_programs
from tests.services.api.conftest import Api, open_api

TODAY = date(2026, 11, 28)
HOUSEHOLD_COLUMNS = (
    "household_id",
    "titular_dni",
    "titular_name",
    "ubigeo",
    "cci",
    "status",
    "enrolled_on",
    "children_under_4",
    "upper_secondary_students",
    "program",
)


@pytest_asyncio.fixture(loop_scope="session")
async def loaded(db: Database) -> Database:
    """The test database with the shipped programs (JUNTOS, HAKU_WINAY_STIPEND) loaded."""
    async with db.unit_of_work() as conn:
        await load_programs(conn, read_programs_file(), actor="tester", today=TODAY)
    return db


def household(hid: str, **overrides: Any) -> dict[str, Any]:
    """A valid household row with sensible defaults."""
    base: dict[str, Any] = {
        "household_id": hid,
        "titular_dni": f"{zlib.crc32(hid.encode()) % 90_000_000 + 10_000_000:08d}",
        "titular_name": "María Quispe Mamani",
        "ubigeo": "080206",
        "cci": None,
        "status": "active",
        "enrolled_on": date(2020, 3, 15),
        "children_under_4": 0,
        "upper_secondary_students": 0,
        "program": "JUNTOS",
    }
    base.update(overrides)
    return base


async def insert_households(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write households straight into the registry (the import has its own tests)."""
    records = [tuple(r[c] for c in HOUSEHOLD_COLUMNS) for r in rows]
    await conn.copy_records_to_table("households", schema_name="registry", records=records, columns=HOUSEHOLD_COLUMNS)


async def set_compliance(conn: Connection, program: str, period: str, household_id: str, compliant: bool) -> None:
    await conn.execute(
        """insert into registry.compliance (program, period, household_id, compliant, reason)
           values ($1, $2, $3, $4, '') on conflict (program, period, household_id) do update
           set compliant = excluded.compliant""",
        program,
        period,
        household_id,
        compliant,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def api(loaded: Database) -> AsyncIterator[Api]:
    """The API with programs loaded."""
    async with open_api(loaded) as client:
        yield client


class Cli:
    """Runs ``cct-ledger`` commands in-process against the test database."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        from services.cli.main import app

        get_settings.cache_clear()
        try:
            return self.runner.invoke(app, list(args), catch_exceptions=False)
        finally:
            get_settings.cache_clear()


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The command line on a fresh, migrated database (nothing loaded)."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("CCT_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("CCT_USER", "cli-tester")
    return Cli()
