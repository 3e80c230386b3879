"""A small world for payment runs: programs loaded, households registered, the simulated bank in-process."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from adapters.bank.client import BankClient
from adapters.bank.simulator import SimControl, connect, create_app, get_simulator
from adapters.postgres.database import Database
from ledger.engine import Ledger
from services.payments import repository
from services.payments import service as payments_service
from services.programs import catalog
from services.programs import service as programs

TITULARS = ["María Quispe Mamani", "Rosa Huamán Condori", "Juana Ccori Puma", "Luz Apaza Choque"]


async def _instant(_: float) -> None:
    return None


@dataclass
class World:
    db: Database
    bank: BankClient
    control: SimControl
    households: list[dict[str, Any]] = field(default_factory=list)
    app: Any = None  # the simulated bank's ASGI app, for more in-process clients

    async def balance(self, code: str) -> int:
        async with self.db.connection() as conn:
            return (await Ledger(conn).balance(code)).posted

    async def fund(self, amount: int, reference: str = "MEF-2026-001") -> None:
        async with self.db.unit_of_work() as conn:
            await programs.fund(conn, "JUNTOS", amount, reference, actor="budget-office")
        await self.control.deposit_funding(amount, reference=reference)

    async def register(
        self,
        count: int,
        *,
        start: int = 1,
        bank: bool = True,
        children: Sequence[int] = (0,),
        students: Sequence[int] = (0,),
        status: str = "active",
        enrolled_on: str = "2025-01-15",
        program: str = "JUNTOS",
    ) -> list[dict[str, Any]]:
        """Register households (opening their bank accounts unless ``bank`` is False)."""
        rows = []
        for i in range(start, start + count):
            rows.append(
                {
                    "household_id": f"{program[:1]}{i:06d}",
                    "titular_dni": f"{40_000_000 + i:08d}",
                    "titular_name": TITULARS[i % len(TITULARS)],
                    "ubigeo": ["080206", "030101", "090101", "050101"][i % 4],
                    "cci": None,
                    "status": status,
                    "enrolled_on": enrolled_on,
                    "children_under_4": children[i % len(children)],
                    "upper_secondary_students": students[i % len(students)],
                    "program": program,
                }
            )
        if bank:
            opened = await self.control.seed_accounts((r["titular_dni"], r["titular_name"], r["ubigeo"]) for r in rows)
            for r, acct in zip(rows, opened, strict=True):
                r["cci"] = acct.cci
        await self.upsert(rows)
        self.households += rows
        return rows

    async def upsert(self, rows: list[dict[str, Any]]) -> None:
        async with self.db.unit_of_work() as conn:
            for r in rows:
                await conn.execute(
                    """insert into registry.households (household_id, titular_dni, titular_name, ubigeo, cci,
                           status, enrolled_on, children_under_4, upper_secondary_students, program)
                       values ($1, $2, $3, $4, $5, $6, $7::text::date, $8, $9, $10)
                       on conflict (household_id) do update set cci = excluded.cci, status = excluded.status,
                                                                titular_dni = excluded.titular_dni""",
                    r["household_id"],
                    r["titular_dni"],
                    r["titular_name"],
                    r["ubigeo"],
                    r["cci"],
                    r["status"],
                    r["enrolled_on"],
                    r["children_under_4"],
                    r["upper_secondary_students"],
                    r["program"],
                )

    async def suspend(self, household_id: str, period: str) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                """insert into registry.compliance (program, period, household_id, compliant, reason)
                   values ('JUNTOS', $1, $2, false, 'school attendance')""",
                period,
                household_id,
            )


def seed_for(request: pytest.FixtureRequest) -> int:
    """The simulated bank's seed for this test: from its id, so it does not depend on which tests ran before."""
    return zlib.crc32(request.node.nodeid.encode())


async def make_world(db: Database, seed: int, faults: str = "none") -> tuple[World, Any]:
    app = create_app(seed=seed, faults=faults)
    bank, control = connect(app, sleep=_instant, max_attempts=8)
    async with db.unit_of_work() as conn:
        await programs.load_programs(conn, catalog.read_programs_file(), actor="setup")
    return World(db, bank, control, app=app), app


@pytest_asyncio.fixture(loop_scope="session")
async def world(db: Database, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    w, app = await make_world(db, seed_for(request))
    try:
        yield w
    finally:
        await w.bank.aclose()
        await w.control.aclose()
        await get_simulator(app).aclose()


async def interrupted_creation(
    db: Database, monkeypatch: pytest.MonkeyPatch, parts: int, period: str = "2026-B5", user: str = "maria"
) -> None:
    """Create JUNTOS ``period`` in ``parts`` parts with part 1's connection lost before it records itself:
    the run is left ``creating`` with the other parts written."""
    record = repository.record_part

    async def lost_connection(conn: Any, run_id: int, part: int, *args: Any) -> None:
        if part == 1:
            raise ConnectionResetError("connection lost")
        await record(conn, run_id, part, *args)

    with monkeypatch.context() as patch:
        patch.setattr(repository, "record_part", lost_connection)
        with pytest.raises(ConnectionResetError):
            await payments_service.create_run(db, "JUNTOS", period, user, 2, parts=parts)
