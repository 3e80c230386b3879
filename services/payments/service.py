"""Creating, approving and reporting payment runs (the execution is in :mod:`services.payments.execute`).

``create`` is set-based and written in parts. A first short transaction plans the run: it records it as
``creating``, with the household codes that split the program's registry into parts of about the same size
(one per worker, at least :data:`MIN_PART_HOUSEHOLDS` households each). Each part is then written in a
transaction of its own, the parts at once on connections of their own (one core each): one query computes
each of the part's households' entitlement for the period (the programs capability's SQL) with the
household's account, one takes their accrued entitlements as they are now, one inserts the payments (one per
household with a usable account, carrying the period and exactly those accrued) and the period's
entitlements pointing at their payment, one claims those accrued for the payments, and one records the part
(``payments.run_parts``, once: its primary key). A last transaction plans the bank batches from the
payments, sums the parts and makes the run ``created``. A million households take about 17 s
(``docs/performance.md``); nothing moves in the ledger yet.

Interrupted (a crash, a lost connection), a run stays ``creating``: it cannot be approved or executed, no
other run of the program can be created, and creating it again writes the parts still missing and finishes
it. Each part reads the registry as its own transaction sees it; a household belongs to exactly one part,
and the database's keys keep it to one payment and one entitlement for the period whatever happens.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from ledger.db import Connection
from ledger.engine import Ledger
from ledger.money import format_minor
from services.db import DatabasePort
from services.payments import repository as repo
from services.payments.errors import (
    MakerChecker,
    RunExists,
    RunIncident,
    RunNotFunded,
    RunStateError,
    show_hint,
    still_creating,
)
from services.payments.programs_link import ProgramContext, program_context

log = structlog.get_logger(__name__)
DEFAULT_BATCH_SIZE = 1000
MIN_PART_HOUSEHOLDS = 50_000
"""A registry is split into parts of at least this many households (a smaller one is one part): each part
reads the whole registry to find its own households, and for a few thousand households one transaction
is over in well under a second anyway."""
DEFAULT_CREATE_WORKERS = 2


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run pays and what it leaves out."""

    run: dict[str, Any]
    exclusions: dict[str, dict[str, int]]
    warnings: tuple[str, ...] = ()


async def create_run(
    db: DatabasePort,
    program: str,
    period: str,
    actor: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    workers: int = DEFAULT_CREATE_WORKERS,
    parts: int | None = None,
) -> RunSummary:
    """Compute entitlements and snapshot every payment of ``program`` for ``period``. Nothing moves yet.

    The run is written in parts, each in its own transaction, ``workers`` at once (see the module's text):
    the run is ``creating`` until every part is written, then ``created``. Calling this again for a run left
    ``creating`` (a crash, a lost connection) writes the parts still missing and finishes it.

    Args:
        db: the database; the parts are written on connections of their own.
        parts: how many parts a new run is split into; by default one per ``workers``, with at least
            :data:`MIN_PART_HOUSEHOLDS` households each.

    Raises:
        RunExists: the program already has a run for the period (one being created is resumed instead).
        RunStateError: another run of the program is still being created, or a bad batch size.
        services.programs errors: unknown program, bad period, no rule version in force.
    """
    if not 1 <= batch_size <= 1000:
        raise RunStateError(f"batch size must be between 1 and 1000 (the bank's limit), got {batch_size}")
    async with db.unit_of_work() as conn:
        ctx, run, resumed = await _plan(conn, program, period, actor, batch_size, workers, parts)
    edges: list[str | None] = [None, *run["part_bounds"], None]
    count = len(edges) - 1  # the run's parts
    slots = asyncio.Semaphore(max(1, workers))

    async def write(part: int) -> None:
        async with slots, db.unit_of_work() as conn:
            await _write_part(conn, ctx, run, part, count, edges[part], edges[part + 1])

    # Every part is written or fails on its own: one failing does not stop the others, whose work a resumed
    # creation then keeps. The first failure is raised as it is (a named error stays one).
    outcomes = await asyncio.gather(*(write(part) for part in range(count)), return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise failures[0]
    async with db.unit_of_work() as conn:
        return await _finish(conn, ctx, int(run["id"]), count, actor, resumed)


def _run_exists(ctx: ProgramContext, run_id: int) -> RunExists:
    return RunExists(f"{ctx.program} already has run {run_id} for {ctx.period}; see {show_hint(run_id)}", run=run_id)


async def _plan(
    conn: Connection, program: str, period: str, actor: str, batch_size: int, workers: int, parts: int | None
) -> tuple[ProgramContext, dict[str, Any], bool]:
    """The run to write, ``creating``: a new one with its parts' bounds, or the one left ``creating``.

    Returns:
        ``(context, run, resumed)``.
    """
    ctx: ProgramContext = await program_context(conn, program, period)
    # One run of a program is planned at a time: both would otherwise claim the same accrued entitlements.
    await conn.execute("select pg_advisory_xact_lock(hashtextextended('payments.create_run:' || $1, 0))", ctx.program)
    existing = await conn.fetchrow(
        "select id, status, part_bounds from payments.runs where program = $1 and period = $2", ctx.program, ctx.period
    )
    if existing is not None and existing["status"] != "creating":
        raise _run_exists(ctx, existing["id"])
    unfinished = await conn.fetchrow(
        "select id, period from payments.runs where program = $1 and status = 'creating' and period <> $2",
        ctx.program,
        ctx.period,
    )
    if unfinished is not None:
        raise RunStateError(
            f"{ctx.program} run {unfinished['id']} for {unfinished['period']} is still being created (by another "
            f"session, or its creation was interrupted); finish it first: `cct-ledger runs create --program "
            f"{ctx.program} --period {unfinished['period']}` resumes it",
            run=unfinished["id"],
        )
    # Imports may have just rewritten the registry: plan the set-based queries on fresh statistics.
    await conn.execute("analyze registry.households, registry.compliance, payments.entitlements")
    if existing is not None:
        await repo.event(conn, existing["id"], actor, "creation_resumed", {})
        return ctx, {**(await repo.get_run(conn, existing["id"])), "part_bounds": existing["part_bounds"]}, True
    bounds = await repo.part_bounds(
        conn, ctx.program, workers if parts is None else parts, MIN_PART_HOUSEHOLDS if parts is None else 1
    )
    run_id: int = await conn.fetchval(
        """insert into payments.runs (program, period, status, currency, rule_version, batch_size, created_by,
                                      part_bounds)
           values ($1, $2, 'creating', $3, $4, $5, $6, $7) returning id""",
        ctx.program,
        ctx.period,
        ctx.currency,
        ctx.rule_version.version,
        batch_size,
        actor,
        bounds,
    )
    await repo.event(conn, run_id, actor, "creation_started", {"parts": len(bounds) + 1})
    return ctx, {**(await repo.get_run(conn, run_id)), "part_bounds": bounds}, False


async def _write_part(
    conn: Connection,
    ctx: ProgramContext,
    run: dict[str, Any],
    part: int,
    parts: int,
    lower: str | None,
    upper: str | None,
) -> None:
    """Write one part of a run (the households from ``lower`` to ``upper``) in the caller's transaction, unless
    it is written already: its payments, its period's entitlements, the accrued ones it claims, and its
    record in ``payments.run_parts``."""
    run_id = int(run["id"])
    started = time.monotonic()
    await conn.execute(
        "select pg_advisory_xact_lock(hashtextextended('payments.run_part:' || $1::bigint || ':' || $2::int, 0))",
        run_id,
        part,
    )
    if await conn.fetchval("select true from payments.run_parts where run_id = $1 and part = $2", run_id, part):
        return  # written by another creation of the same run meanwhile
    # The part's snapshot is built once and read twice (payments, entitlements): about 150 MB for half a
    # million households, held in memory instead of written to a temporary file and read back (2.6 s less
    # at a million in one part, docs/performance.md). A larger registry spills, as before.
    await conn.execute("set local work_mem = '512MB'")
    # Every household's entitlement, its account (read in the same scan of the registry) and whether it already
    # has an entitlement for the period; the payments and entitlements are then written from it in one pass.
    sql, params = ctx.entitlements_sql(param_offset=4, carry=("titular_dni", "cci", "ubigeo"))
    await conn.execute("drop table if exists run_entitlements")
    await conn.execute(
        f"""create temp table run_entitlements on commit drop as
            select r.*, e.household_id is not null as already
              from ({sql}) r
              left join payments.entitlements e on e.program = $1 and e.period = $2
                                               and e.household_id = r.household_id
             where {repo.households_in_part("r.household_id", 3, 4)}""",
        ctx.program,
        ctx.period,
        lower,
        upper,
        *params,
    )
    await conn.execute("analyze run_entitlements")
    exclusions = await repo.count_exclusions(conn)
    await repo.snapshot_accrued(conn, ctx.program, lower, upper)
    batch_size = int(run["batch_size"])
    written = await repo.insert_payments_and_entitlements(
        conn, run_id, ctx.program, ctx.period, batch_size, part, parts
    )
    # What follows reads the payments and entitlements by key only (the accrued ones in run_older).
    await repo.claim_accrued(conn, run_id, ctx.program)
    await repo.record_part(conn, run_id, part, written, batch_size, exclusions)
    log.info(
        "run.part_written",
        run=run_id,
        part=part,
        parts=parts,
        payments=written[0],
        seconds=round(time.monotonic() - started, 2),
    )


async def _finish(
    conn: Connection, ctx: ProgramContext, run_id: int, parts: int, actor: str, resumed: bool
) -> RunSummary:
    """Plan the batches of a run whose ``parts`` parts are all written, sum them, and make it ``created``."""
    run = await repo.lock_run(conn, run_id)
    if run["status"] != "creating":  # finished by another creation of the same run meanwhile
        raise _run_exists(ctx, run_id)
    written = await repo.parts_of(conn, run_id)
    if len(written) != parts:
        raise RunIncident(
            f"run {run_id}: {parts - len(written)} of its {parts} parts are not written; create it again to resume it",
            run=run_id,
        )
    totals = await repo.plan_batches(conn, run_id)
    if (totals["count"], totals["total"]) != (
        sum(p["payments_count"] for p in written),
        sum(p["payments_total"] for p in written),
    ):
        raise RunIncident(f"run {run_id}: its batches do not add up to its parts", run=run_id)
    exclusions: dict[str, dict[str, int]] = {}
    for p in written:
        for reason, n in p["exclusions"].items():
            entry = exclusions.setdefault(reason, {"count": 0, "total": 0})
            entry["count"] += n["count"]
            entry["total"] += n["total"]
    accrued = await repo.accrued_of_run(conn, run_id, ctx.program, ctx.period)
    exclusions["no_account"] = accrued
    await conn.execute(
        """update payments.runs set status = 'created', payments_count = $2, payments_total = $3, batches_count = $4,
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
        {
            "payments": totals["count"],
            "total": totals["total"],
            "compliance_records": compliance,
            "parts": len(written),
            "resumed": resumed,
        },
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
    if run["status"] == "creating":
        raise still_creating(run)
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
