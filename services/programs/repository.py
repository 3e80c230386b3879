"""Every query of the programs capability (schema ``programs``)."""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from ledger.db import Connection
from services.programs.models import Program, RuleVersion, parse_rules
from services.programs.periods import Schedule


def _program(row: asyncpg.Record) -> Program:
    return Program(row["code"], row["name"], row["currency"], Schedule(row["schedule"]))


def _version(row: asyncpg.Record) -> RuleVersion:
    where = f"{row['program']} version {row['version']}"
    return RuleVersion(row["program"], row["version"], row["effective_from"], parse_rules(row["rules"], where))


async def get_program(conn: Connection, code: str) -> Program | None:
    """The program with this code, or None."""
    row = await conn.fetchrow("select * from programs.programs where code = $1", code)
    return None if row is None else _program(row)


async def list_programs(conn: Connection, *, after: str | None = None, limit: int = 100) -> list[Program]:
    """Programs in code order, after the code ``after``."""
    rows = await conn.fetch(
        "select * from programs.programs where code > $1 order by code limit $2", after or "", limit
    )
    return [_program(r) for r in rows]


async def program_codes(conn: Connection) -> set[str]:
    """Codes of every loaded program."""
    return {r["code"] for r in await conn.fetch("select code from programs.programs")}


async def insert_program(conn: Connection, program: Program) -> None:
    """Add a program (its accounts are opened by the loader)."""
    await conn.execute(
        """insert into programs.programs (code, name, currency, schedule, fund_account, in_transit_account)
           values ($1, $2, $3, $4, $5, $6)""",
        program.code,
        program.name,
        program.currency,
        program.schedule.value,
        program.fund_account,
        program.in_transit_account,
    )


async def rename_program(conn: Connection, code: str, name: str) -> None:
    """Change a program's display name (the only field that may change)."""
    await conn.execute(
        "update programs.programs set name = $2, updated_at = clock_timestamp() where code = $1", code, name
    )


async def lock_program(conn: Connection, code: str) -> None:
    """Serialise writers of one program's definition for the rest of the transaction."""
    await conn.execute("select pg_advisory_xact_lock(hashtext('programs.program'), hashtext($1))", code)


async def rule_versions(conn: Connection, code: str) -> list[RuleVersion]:
    """Every rule version of the program, oldest first."""
    rows = await conn.fetch("select * from programs.rule_versions where program = $1 order by version", code)
    return [_version(r) for r in rows]


async def rule_version_rows(conn: Connection, code: str) -> list[dict[str, Any]]:
    """Rule versions with who loaded them and when, oldest first."""
    rows = await conn.fetch("select * from programs.rule_versions where program = $1 order by version", code)
    return [dict(r) for r in rows]


async def insert_rule_version(conn: Connection, version: RuleVersion, actor: str) -> None:
    """Append a rule version (the table refuses updates and deletes)."""
    await conn.execute(
        """insert into programs.rule_versions (program, version, effective_from, rules, loaded_by)
           values ($1, $2, $3, $4, $5)""",
        version.program,
        version.version,
        version.effective_from,
        version.rules.to_dict(),
        actor,
    )


async def rule_version_at(conn: Connection, code: str, day: date) -> RuleVersion | None:
    """The version in force on ``day``: the latest ``effective_from`` on or before it."""
    row = await conn.fetchrow(
        """select * from programs.rule_versions where program = $1 and effective_from <= $2
           order by effective_from desc limit 1""",
        code,
        day,
    )
    return None if row is None else _version(row)


async def appropriation(conn: Connection, code: str, reference: str) -> dict[str, Any] | None:
    """The appropriation recorded for this program and reference, or None."""
    row = await conn.fetchrow(
        "select * from programs.appropriations where program = $1 and reference = $2", code, reference
    )
    return None if row is None else dict(row)


async def appropriation_by_key(conn: Connection, key: str) -> dict[str, Any] | None:
    """The appropriation recorded with this API idempotency key, or None."""
    row = await conn.fetchrow("select * from programs.appropriations where idempotency_key = $1", key)
    return None if row is None else dict(row)


async def insert_appropriation(
    conn: Connection,
    *,
    code: str,
    reference: str,
    amount: int,
    currency: str,
    transfer_id: int,
    idempotency_key: str | None,
    actor: str,
) -> None:
    """Record the appropriation (a replay of the same reference inserts nothing)."""
    await conn.execute(
        """insert into programs.appropriations
               (program, reference, amount, currency, transfer_id, idempotency_key, recorded_by)
           values ($1, $2, $3, $4, $5, $6, $7)
           on conflict (program, reference) do nothing""",
        code,
        reference,
        amount,
        currency,
        transfer_id,
        idempotency_key,
        actor,
    )


async def appropriation_totals(conn: Connection, code: str) -> tuple[int, int]:
    """(count, total minor units) of the program's appropriations."""
    row = await conn.fetchrow(
        "select count(*) as n, coalesce(sum(amount), 0)::bigint as total from programs.appropriations "
        "where program = $1",
        code,
    )
    assert row is not None
    return int(row["n"]), int(row["total"])
