"""Creating, approving and reporting payment runs (the execution is in :mod:`services.payments.execute`).

``create`` is set-based: one query computes every household's entitlement for the period (the programs
capability's SQL) with the household's account, one takes the accrued entitlements as they are now, one
inserts the payments (one per household with a usable account, carrying the period and exactly those
accrued) and the period's entitlements pointing at their payment, one claims those accrued for the
payments, and one plans the bank batches. A million households take under half a minute
(``docs/performance.md``); nothing moves in the ledger yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from ledger.db import Connection
from ledger.engine import Ledger
from ledger.money import format_minor
from services.payments import repository as repo
from services.payments.errors import MakerChecker, RunExists, RunNotFunded, RunStateError, show_hint
from services.payments.programs_link import ProgramContext, program_context

log = structlog.get_logger(__name__)
DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run pays and what it leaves out."""

    run: dict[str, Any]
    exclusions: dict[str, dict[str, int]]
    warnings: tuple[str, ...] = ()


async def create_run(
    conn: Connection, program: str, period: str, actor: str, batch_size: int = DEFAULT_BATCH_SIZE
) -> RunSummary:
    """Compute entitlements and snapshot every payment of ``program`` for ``period``. Nothing moves yet.

    Runs in the caller's transaction (all or nothing).

    Raises:
        RunExists: the program already has a run for the period.
        services.programs errors: unknown program, bad period, no rule version in force.
    """
    if not 1 <= batch_size <= 1000:
        raise RunStateError(f"batch size must be between 1 and 1000 (the bank's limit), got {batch_size}")
    ctx: ProgramContext = await program_context(conn, program, period)
    # One run of a program is created at a time: both would otherwise claim the same accrued entitlements.
    await conn.execute("select pg_advisory_xact_lock(hashtextextended('payments.create_run:' || $1, 0))", ctx.program)
    existing = await conn.fetchval(
        "select id from payments.runs where program = $1 and period = $2", ctx.program, ctx.period
    )
    if existing is not None:
        raise RunExists(
            f"{ctx.program} already has run {existing} for {ctx.period}; see {show_hint(existing)}",
            run=existing,
        )
    run_id: int = await conn.fetchval(
        """insert into payments.runs (program, period, currency, rule_version, batch_size, created_by)
           values ($1, $2, $3, $4, $5, $6) returning id""",
        ctx.program,
        ctx.period,
        ctx.currency,
        ctx.rule_version.version,
        batch_size,
        actor,
    )
    # The payments' snapshot is built once and read twice (payments, entitlements): about 300 MB for a million
    # households, held in memory instead of written to a temporary file and read back (2.6 s less at a
    # million, docs/performance.md). A larger registry spills, as before.
    await conn.execute("set local work_mem = '512MB'")
    # Imports may have just rewritten the registry: plan the set-based queries on fresh statistics.
    await conn.execute("analyze registry.households, registry.compliance, payments.entitlements")
    # Every household's entitlement, its account (read in the same scan of the registry) and whether it already
    # has an entitlement for the period; the payments and entitlements are then written from it in one pass.
    sql, params = ctx.entitlements_sql(param_offset=2, carry=("titular_dni", "cci", "ubigeo"))
    await conn.execute("drop table if exists run_entitlements")
    await conn.execute(
        f"""create temp table run_entitlements on commit drop as
            select r.*, e.household_id is not null as already
              from ({sql}) r
              left join payments.entitlements e on e.program = $1 and e.period = $2
                                               and e.household_id = r.household_id""",
        ctx.program,
        ctx.period,
        *params,
    )
    await conn.execute("analyze run_entitlements")
    exclusions = await repo.count_exclusions(conn)
    await repo.snapshot_accrued(conn, ctx.program)
    await repo.insert_payments_and_entitlements(conn, run_id, ctx.program, ctx.period, batch_size)
    # What follows reads the payments and entitlements by key only (the accrued ones in run_older).
    await repo.claim_accrued(conn, run_id, ctx.program)
    totals = await repo.plan_batches(conn, run_id)
    accrued = await repo.accrued_of_run(conn, run_id, ctx.program, ctx.period)
    exclusions["no_account"] = accrued
    await conn.execute(
        """update payments.runs set payments_count = $2, payments_total = $3, batches_count = $4,
                  accrued_count = $5, accrued_total = $6, exclusions = $7
            where id = $1""",
        run_id,
        totals["count"],
        totals["total"],
        totals["batches"],
        accrued["count"],
        accrued["total"],
        exclusions,
    )
    compliance = await repo.compliance_records(conn, ctx.program, ctx.period)
    warnings: tuple[str, ...] = ()
    if compliance == 0:
        # Not an error (a program may have no conditions to verify, and no record means compliant), but a
        # conditional transfer paid before its verification arrived is a mistake worth saying out loud.
        warnings = (
            f"no compliance verification has been imported for {ctx.program} {ctx.period}: every household counts "
            f"as compliant; if the program's conditions apply, import the verification first (`cct-ledger "
            f"compliance import --program {ctx.program} --period {ctx.period} FILE`, or POST "
            f"/v1/programs/{ctx.program}/periods/{ctx.period}/compliance) and create the run after it",
        )
        log.warning("run.created_without_compliance", run=run_id, program=ctx.program, period=ctx.period)
    await repo.event(
        conn,
        run_id,
        actor,
        "created",
        {"payments": totals["count"], "total": totals["total"], "compliance_records": compliance},
    )
    log.info("run.created", run=run_id, program=ctx.program, period=ctx.period, payments=totals["count"])
    return RunSummary(await repo.get_run(conn, run_id), exclusions, warnings)


async def approve_run(conn: Connection, run_id: int, actor: str) -> dict[str, Any]:
    """Maker-checker approval: someone other than the maker, and only if the fund covers the run.

    Raises:
        MakerChecker: ``actor`` created the run.
        RunNotFunded: the fund's available balance is below the run's total.
        RunStateError: the run is not waiting for approval.
    """
    run = await repo.lock_run(conn, run_id)
    if run["status"] != "created":
        raise RunStateError(f"run {run_id} is {run['status']}; only a created run can be approved", run=run_id)
    if same_person(run["created_by"], actor):
        raise MakerChecker(
            f"run {run_id} was created by {actor}; another person must approve it (maker-checker)", run=run_id
        )
    ctx = await program_context(conn, run["program"], run["period"])
    fund = await Ledger(conn).balance(ctx.fund_account)
    if fund.available < run["payments_total"]:
        raise RunNotFunded(
            f"run {run_id} pays {format_minor(run['payments_total'], run['currency'])} but {ctx.fund_account} has "
            f"{format_minor(fund.available, run['currency'])} available; record an appropriation first "
            f"(`cct-ledger programs fund {run['program']} --amount ... --reference ...`, or POST "
            f"/v1/programs/{run['program']}/appropriations)",
            run=run_id,
            needed=run["payments_total"],
            available=fund.available,
        )
    try:
        await conn.execute(
            "update payments.runs set status = 'approved', approved_by = $2, approved_at = clock_timestamp() "
            "where id = $1",
            run_id,
            actor,
        )
    except asyncpg.CheckViolationError as e:  # the database's rule (its case folding may differ from Python's)
        if "runs_maker_checker" not in str(e) and getattr(e, "constraint_name", None) != "runs_maker_checker":
            raise
        raise MakerChecker(
            f"run {run_id} was created by {run['created_by']}; another person must approve it (maker-checker)",
            run=run_id,
        ) from e
    await repo.event(conn, run_id, actor, "approved", {"fund_available": fund.available})
    return await repo.get_run(conn, run_id)


def same_person(a: str, b: str) -> bool:
    """Whether two recorded names are one person for maker-checker: ``Maria`` and `` maria`` are (the
    database's trigger on approvals, migration 0009, compares them the same way)."""
    return a.strip(" ").lower() == b.strip(" ").lower()


async def close_run(conn: Connection, run_id: int, actor: str) -> dict[str, Any]:
    """Close a settled run (nothing left to do at the bank)."""
    run = await repo.lock_run(conn, run_id)
    if run["status"] != "settled":
        raise RunStateError(f"run {run_id} is {run['status']}; only a settled run can be closed", run=run_id)
    await conn.execute(
        "update payments.runs set status = 'closed', closed_by = $2, closed_at = clock_timestamp() where id = $1",
        run_id,
        actor,
    )
    await repo.event(conn, run_id, actor, "closed", {})
    return await repo.get_run(conn, run_id)
