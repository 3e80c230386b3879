"""Every query of the household registry (schema ``registry``): staging, set-based merges, reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ledger.db import Connection, affected_rows
from services.identifiers import BN_BANK_CODE

IMPORT_WORK_MEM: Final = "256MB"
PADRON_STAGING: Final = "registry_padron_staging"
COMPLIANCE_STAGING: Final = "registry_compliance_staging"
PADRON_COLUMNS: Final = (
    "line",
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
    "extra",
)
COMPLIANCE_COLUMNS: Final = ("line", "household_id", "compliant", "reason")
_DATA = (
    "titular_dni",
    "titular_name",
    "ubigeo",
    "cci",
    "status",
    "enrolled_on",
    "children_under_4",
    "upper_secondary_students",
    "program",
    "extra",
)


async def lock_registry(conn: Connection, what: str) -> None:
    """Serialise imports of one kind for the rest of the transaction, and give its joins enough memory to
    hash a million rows in one pass."""
    await conn.execute("select pg_advisory_xact_lock(hashtext('registry.import'), hashtext($1))", what)
    await conn.execute(f"set local work_mem = '{IMPORT_WORK_MEM}'")


async def create_import(
    conn: Connection,
    *,
    kind: str,
    file_name: str,
    sha256: str,
    actor: str,
    program: str | None = None,
    period: str | None = None,
) -> int:
    """Record an import (its counts are filled in by :func:`finish_import`); returns its id."""
    value: int = await conn.fetchval(
        """insert into registry.imports (kind, file_name, sha256, program, period, imported_by)
           values ($1, $2, $3, $4, $5, $6) returning id""",
        kind,
        file_name,
        sha256,
        program,
        period,
        actor,
    )
    return value


async def finish_import(conn: Connection, import_id: int, counts: dict[str, int]) -> None:
    """Store an import's counts."""
    await conn.execute(
        """update registry.imports set rows = $2, inserted = $3, updated = $4, unchanged = $5, rejected = $6
           where id = $1""",
        import_id,
        counts["rows"],
        counts["inserted"],
        counts["updated"],
        counts["unchanged"],
        counts["rejected"],
    )


async def delete_import(conn: Connection, import_id: int) -> None:
    """Forget an import that changed nothing."""
    await conn.execute("delete from registry.imports where id = $1", import_id)


async def previous_import(conn: Connection, kind: str, sha256: str) -> int | None:
    """The latest import of a file with these bytes, if any."""
    value: int | None = await conn.fetchval(
        "select max(id) from registry.imports where kind = $1 and sha256 = $2", kind, sha256
    )
    return value


# ------------------------------------------------------------------------------------------------- padron
async def create_padron_staging(conn: Connection) -> None:
    """A temporary table for the file's valid rows, dropped at commit."""
    await conn.execute(
        f"""create temporary table {PADRON_STAGING} (
                line integer not null,
                household_id text not null,
                titular_dni text not null,
                titular_name text not null,
                ubigeo text not null,
                cci text,
                status text not null,
                enrolled_on date not null,
                children_under_4 integer not null,
                upper_secondary_students integer not null,
                program text not null,
                extra text
            ) on commit drop"""
    )


async def staged_other_bank_ccis(conn: Connection) -> int:
    """Staged households whose CCI is another bank's than Banco de la Nación's (they are not paid into it)."""
    n: int = await conn.fetchval(
        f"select count(*) from {PADRON_STAGING} where cci is not null and left(cci, 3) <> $1", BN_BANK_CODE
    )
    return n


async def copy_padron(conn: Connection, records: Sequence[tuple[Any, ...]]) -> None:
    """Stream a chunk of valid rows into the staging table (binary COPY)."""
    await conn.copy_records_to_table(PADRON_STAGING, records=records, columns=PADRON_COLUMNS)


async def analyze_staging(conn: Connection, table: str) -> None:
    """Statistics for the planner: a temporary table has none until analysed."""
    await conn.execute(f"analyze {table}")


async def dni_conflicts(conn: Connection) -> list[dict[str, Any]]:
    """Staged rows whose titular DNI belongs to another household that is not in the file.

    A DNI held by a household that is also in the file is free (that household gets its new DNI); a
    household that left the program (``exited``) no longer holds its titular's DNI.
    """
    rows = await conn.fetch(
        f"""select distinct on (s.line) s.line, s.household_id, h.household_id as other
              from {PADRON_STAGING} s
              join registry.households h
                on h.titular_dni = s.titular_dni and h.household_id <> s.household_id and h.status <> 'exited'
             where s.status <> 'exited'
               and not exists (select 1 from {PADRON_STAGING} o where o.household_id = h.household_id)
             order by s.line, h.household_id"""
    )
    return [dict(r) for r in rows]


async def drop_staged_lines(conn: Connection, table: str, lines: Sequence[int]) -> None:
    """Remove rejected lines from a staging table."""
    await conn.execute(f"delete from {table} where line = any($1::integer[])", list(lines))


async def merge_padron(conn: Connection, import_id: int) -> tuple[int, int]:
    """Update changed households (version + 1), insert new ones, append a history row for each.

    Set-based over the whole staging table. New households go in with two statements (history, then the
    households) rather than one with a common table expression, which would spill a million returned rows
    to disk.

    Returns:
        (inserted, updated).
    """
    cols = ", ".join(_DATA)
    staged = ", ".join(f"s.{c}" if c != "extra" else "coalesce(s.extra::jsonb, '{}'::jsonb)" for c in _DATA)
    current = ", ".join(f"h.{c}" for c in _DATA)
    assignments = ", ".join(
        f"{c} = s.{c}" if c != "extra" else "extra = coalesce(s.extra::jsonb, '{}'::jsonb)" for c in _DATA
    )
    new = f"""from {PADRON_STAGING} s
             where not exists (select 1 from registry.households h where h.household_id = s.household_id)"""
    updated = await conn.fetchval(
        f"""with updated as (
                update registry.households h
                   set {assignments}, version = h.version + 1, updated_at = clock_timestamp(), import_id = $1
                  from {PADRON_STAGING} s
                 where h.household_id = s.household_id and ({current}) is distinct from ({staged})
             returning h.*
            ), history as (
                insert into registry.household_history (household_id, version, {cols}, import_id)
                select household_id, version, {cols}, $1 from updated
             returning 1
            )
            select count(*) from history""",
        import_id,
    )
    await conn.execute(
        f"""insert into registry.household_history (household_id, version, {cols}, import_id)
            select s.household_id, 1, {staged}, $1 {new}""",
        import_id,
    )
    status = await conn.execute(
        f"""insert into registry.households (household_id, {cols}, version, import_id)
            select s.household_id, {staged}, 1, $1 {new}""",
        import_id,
    )
    return affected_rows(status), int(updated)


# --------------------------------------------------------------------------------------------- compliance
async def create_compliance_staging(conn: Connection) -> None:
    """A temporary table for a verification file's rows, dropped at commit."""
    await conn.execute(
        f"""create temporary table {COMPLIANCE_STAGING} (
                line integer not null,
                household_id text not null,
                compliant boolean not null,
                reason text not null
            ) on commit drop"""
    )


async def copy_compliance(conn: Connection, records: Sequence[tuple[Any, ...]]) -> None:
    """Stream verification rows into their staging table (binary COPY)."""
    await conn.copy_records_to_table(COMPLIANCE_STAGING, records=records, columns=COMPLIANCE_COLUMNS)


async def compliance_unknown_households(conn: Connection, program: str) -> list[dict[str, Any]]:
    """Staged rows naming a household that is not in the registry, or is enrolled in another program."""
    rows = await conn.fetch(
        f"""select s.line, s.household_id, h.program
              from {COMPLIANCE_STAGING} s
              left join registry.households h on h.household_id = s.household_id
             where h.household_id is null or h.program <> $1
             order by s.line""",
        program,
    )
    return [dict(r) for r in rows]


async def merge_compliance(conn: Connection, import_id: int, program: str, period: str) -> tuple[int, int]:
    """Upsert the period's compliance values that are new or changed; append each to the history.

    Returns:
        (inserted, updated).
    """
    row = await conn.fetchrow(
        f"""with changed as (
                select s.household_id, s.compliant, s.reason, c.household_id is null as is_new
                  from {COMPLIANCE_STAGING} s
                  left join registry.compliance c
                    on c.program = $2 and c.period = $3 and c.household_id = s.household_id
                 where c.household_id is null or (c.compliant, c.reason) is distinct from (s.compliant, s.reason)
            ), upserted as (
                insert into registry.compliance (program, period, household_id, compliant, reason, import_id)
                select $2, $3, household_id, compliant, reason, $1 from changed
                on conflict (program, period, household_id) do update
                   set compliant = excluded.compliant, reason = excluded.reason, import_id = excluded.import_id,
                       recorded_at = clock_timestamp()
             returning 1
            ), history as (
                insert into registry.compliance_history (program, period, household_id, compliant, reason,
                                                         import_id)
                select $2, $3, household_id, compliant, reason, $1 from changed
             returning 1
            )
            select count(*) filter (where is_new) as inserted, count(*) filter (where not is_new) as updated,
                   (select count(*) from upserted) as upserted, (select count(*) from history) as history
              from changed""",
        import_id,
        program,
        period,
    )
    assert row is not None
    return int(row["inserted"]), int(row["updated"])


# ------------------------------------------------------------------------------------------------ reading
async def get_household(conn: Connection, household_id: str) -> dict[str, Any] | None:
    """The household row, or None."""
    row = await conn.fetchrow("select * from registry.households where household_id = $1", household_id)
    return None if row is None else dict(row)


async def household_history(conn: Connection, household_id: str) -> list[dict[str, Any]]:
    """Every version of the household, oldest first."""
    rows = await conn.fetch(
        "select * from registry.household_history where household_id = $1 order by version", household_id
    )
    return [dict(r) for r in rows]


async def household_compliance(conn: Connection, household_id: str, limit: int = 24) -> list[dict[str, Any]]:
    """The household's latest compliance records, newest period first."""
    rows = await conn.fetch(
        """select program, period, compliant, reason, import_id, recorded_at from registry.compliance
            where household_id = $1 order by period desc limit $2""",
        household_id,
        limit,
    )
    return [dict(r) for r in rows]


async def list_households(
    conn: Connection,
    *,
    after: str | None,
    limit: int,
    ubigeo: str | None = None,
    status: str | None = None,
    program: str | None = None,
) -> list[dict[str, Any]]:
    """Households in id order after ``after``, filtered; fetches ``limit`` rows."""
    rows = await conn.fetch(
        """select * from registry.households
            where household_id > $1
              and ($2::text is null or ubigeo = $2)
              and ($3::text is null or status = $3)
              and ($4::text is null or program = $4)
            order by household_id limit $5""",
        after or "",
        ubigeo,
        status,
        program,
        limit,
    )
    return [dict(r) for r in rows]


async def record_reveal(conn: Connection, household_id: str, actor: str, channel: str, reason: str | None) -> int:
    """Record that ``actor`` was shown the household's DNI and CCI whole; returns the record's id."""
    rid = await conn.fetchval(
        """insert into registry.reveals (household_id, actor, channel, reason) values ($1, $2, $3, $4)
           returning id""",
        household_id,
        actor,
        channel,
        reason,
    )
    return int(rid)


async def list_reveals(
    conn: Connection, *, before: int | None, limit: int, household_id: str | None, actor: str | None
) -> list[dict[str, Any]]:
    """Reveals newest first, before the id ``before``, filtered; fetches ``limit`` rows."""
    rows = await conn.fetch(
        """select id, household_id, actor, channel, reason, revealed_at from registry.reveals
            where id < $1 and ($2::text is null or household_id = $2) and ($3::text is null or actor = $3)
            order by id desc limit $4""",
        before if before is not None else 2**63 - 1,
        household_id,
        actor,
        limit,
    )
    return [dict(r) for r in rows]
