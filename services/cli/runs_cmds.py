"""``cct-ledger runs``: create, approve, execute (or resume), cancel a refused batch, show, list, report, close
payment runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from adapters.bank.factory import bank_from_settings
from ledger.money import format_minor
from services.cli.common import (
    CURSOR_OPTION,
    JSON_OPTION,
    RUN_ID,
    command,
    console,
    database,
    err,
    limit_option,
    print_json,
    print_more,
    print_page,
    require_user,
    settings,
    table,
)
from services.cli.progress import Bars, working
from services.payments import report, repository, service
from services.payments.errors import RunNotApproved, still_creating
from services.payments.execute import ExecuteOptions, RunExecutor, cancel_refused_batch, refused_batch

app = typer.Typer(
    help="Payment runs: create → approve → execute → settled → closed.\n\n"
    "Example: cct-ledger runs create --program JUNTOS --period 2026-B5 --user maria",
    no_args_is_help=True,
)
USER = typer.Option(None, "--user", help="Who does this step (required; recorded on the run).")


def _money(v: int, currency: str = "PEN") -> str:
    return format_minor(v, currency)


def print_summary(s: dict[str, Any]) -> None:
    """The run report on screen: tables for people."""
    run = s["run"]
    cur = run["currency"]
    console.print(
        f"[bold]Run {run['id']}[/] {run['program']} {run['period']}: [bold]{run['status']}[/]"
        f"  (created by {escape(run['created_by'])}"
        + (f", approved by {escape(run['approved_by'])}" if run["approved_by"] else "")
        + (f", executed by {escape(run['executed_by'])}" if run["executed_by"] else "")
        + ")"
    )
    pays = s["payments"]
    rows = [
        ("payments planned", run["payments_count"], _money(run["payments_total"], cur)),
        ("credited", pays.get("credited", {}).get("count", 0), _money(pays.get("credited", {}).get("total", 0), cur)),
        ("rejected", pays.get("rejected", {}).get("count", 0), _money(pays.get("rejected", {}).get("total", 0), cur)),
        (
            "not settled yet",
            pays.get("snapshotted", {}).get("count", 0),
            _money(pays.get("snapshotted", {}).get("total", 0), cur),
        ),
        ("accrued (no usable account)", run["accrued_count"], _money(run["accrued_total"], cur)),
    ]
    console.print(table("Payments", ["", "households", "amount"], rows, right=["households", "amount"]))
    if s["rejected_by_reason"]:
        console.print(
            table(
                "Rejected by the bank, by reason",
                ["reason", "households", "amount"],
                [(k, v["count"], _money(v["total"], cur)) for k, v in s["rejected_by_reason"].items()],
                right=["households", "amount"],
            )
        )
    excluded = {k: v for k, v in (s["exclusions"] or {}).items() if k != "no_account"}
    if excluded:
        console.print(
            table(
                "Not paid this period, by reason",
                ["reason", "households"],
                [(k, v["count"]) for k, v in excluded.items()],
                right=["households"],
            )
        )
    if s["top_districts"]:
        by = "credited" if any(d["credited_total"] for d in s["top_districts"]) else "planned"
        console.print(
            table(
                f"Top districts by amount {by} ({s['districts']} districts in the run)",
                ["ubigeo", "district", "department", "payments", "planned", "credited", "rejected"],
                [
                    (
                        d["ubigeo"],
                        d["district"],
                        d["department"],
                        d["payments"],
                        _money(d["planned_total"], cur),
                        _money(d["credited_total"], cur),
                        d["rejected"],
                    )
                    for d in s["top_districts"]
                ],
                right=["payments", "planned", "credited", "rejected"],
            )
        )
    if s["incidents"]:
        console.print(f"[bold red]{len(s['incidents'])} incident(s)[/]: see `cct-ledger runs show {run['id']} --json`")


@app.command("create")
@command
async def create(
    program: str = typer.Option(..., "--program", help="Program code, e.g. JUNTOS."),
    period: str = typer.Option(..., "--period", help="Period code, e.g. 2026-B5 (JUNTOS) or 2026-11 (monthly)."),
    batch_size: int = typer.Option(
        service.DEFAULT_BATCH_SIZE, "--batch-size", min=1, max=1000, help="Payments per bank batch."
    ),
    user: str | None = USER,
    as_json: bool = JSON_OPTION,
) -> None:
    """Compute entitlements and snapshot every payment of a period (nothing moves yet).

    Prints counts and totals and every household left out, by reason.

    Interrupted, the run stays "creating"; run the same command again to finish it.

    Example: cct-ledger runs create --program JUNTOS --period 2026-B5 --user maria
    """
    actor = require_user(user, "runs create")
    config = settings()
    async with database(config) as db:
        with working(f"creating the {program} {period} run: entitlements and payment snapshots"):
            created = await service.create_run(
                db, program, period, actor, batch_size, workers=config.run_create_workers
            )
        async with db.connection() as conn:
            s = await report.summary(conn, created.run["id"])
    if as_json:
        print_json({**s, "warnings": list(created.warnings)})
        return
    print_summary(s)
    for warning in created.warnings:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
    console.print(f"next: another person approves it with `cct-ledger runs approve {created.run['id']} --user NAME`")


@app.command("approve")
@command
async def approve(run_id: int = RUN_ID, user: str | None = USER, as_json: bool = JSON_OPTION) -> None:
    """Approve a run (maker-checker: not by its maker); refused if the fund cannot cover it.

    Example: cct-ledger runs approve 7 --user jorge
    """
    actor = require_user(user, "runs approve")
    async with database() as db, db.unit_of_work() as conn:
        run = await service.approve_run(conn, run_id, actor)
    if as_json:
        print_json(run)
    else:
        console.print(f"run {run_id} approved by {escape(actor)}; next: `cct-ledger runs execute {run_id} --user NAME`")


async def _execute(run_id: int, actor: str, as_json: bool, quiet: bool) -> None:
    s = settings()
    async with database(s) as db:
        async with db.connection() as conn:
            run = await repository.get_run(conn, run_id)  # the run's state is the first thing to get wrong
        if run["status"] == "creating":
            raise still_creating(run)
        if run["status"] == "created":
            raise RunNotApproved(
                f"run {run_id} is not approved yet; an approver must run `cct-ledger runs approve {run_id}`",
                run=run_id,
            )
        if run["status"] in ("approved", "executing"):
            bank = bank_from_settings(s)
            try:
                with Bars(enabled=not (as_json or quiet)) as bars:
                    await RunExecutor(db, bank, run_id, actor, bars, ExecuteOptions.from_settings(s)).execute()
            finally:
                await bank.aclose()
        elif not as_json:
            console.print(f"run {run_id} is already {run['status']}: nothing to execute")
        async with db.connection() as conn:
            summary = await report.summary(conn, run_id)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)


@app.command("execute")
@command
async def execute(
    run_id: int = RUN_ID,
    user: str | None = USER,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Hold the run in the ledger, send it to the bank in batches, and apply the results.

    Safe to run again after any interruption: it continues where it stopped (same as `runs resume`).
    Needs CCT_BANK_URL.

    Example: CCT_BANK_URL=http://127.0.0.1:8100 cct-ledger runs execute 7 --user maria
    """
    await _execute(run_id, require_user(user, "runs execute"), as_json, quiet)


@app.command("resume")
@command
async def resume(
    run_id: int = RUN_ID,
    user: str | None = USER,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Continue an interrupted execution from the states recorded in the database.

    Example: cct-ledger runs resume 7 --user maria
    """
    await _execute(run_id, require_user(user, "runs resume"), as_json, quiet)


@app.command("show")
@command
async def show(run_id: int = RUN_ID, as_json: bool = JSON_OPTION) -> None:
    """A run's status, counts, rejections, districts, events and incidents.

    Example: cct-ledger runs show 7
    """
    async with database() as db, db.connection() as conn:
        s = await report.summary(conn, run_id)
        s["events"] = await repository.events(conn, run_id)
    if as_json:
        print_json(s)
        return
    print_summary(s)
    console.print(
        table(
            "Events",
            ["at", "who", "event"],
            [(e["at"].isoformat(timespec="seconds"), e["actor"], e["event"]) for e in s["events"]],
        )
    )


@app.command("list")
@command
async def list_runs(
    program: str | None = typer.Option(None, "--program", help="Only this program's runs, e.g. JUNTOS."),
    limit: int = limit_option(20),
    cursor: str | None = CURSOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Payment runs, newest first, paginated.

    Example: cct-ledger runs list --program JUNTOS
    """
    async with database() as db, db.connection() as conn:
        runs, next_cursor = await repository.page_of_runs(conn, program=program, limit=limit, cursor=cursor)
    if as_json:
        print_page(runs, next_cursor)
        return
    console.print(
        table(
            None,
            ["id", "program", "period", "status", "payments", "total", "created by", "approved by"],
            [
                (
                    r["id"],
                    r["program"],
                    r["period"],
                    r["status"],
                    r["payments_count"],
                    _money(r["payments_total"], r["currency"]),
                    r["created_by"],
                    r["approved_by"] or "",
                )
                for r in runs
            ],
            right=["payments", "total"],
        )
    )
    print_more(next_cursor)


@app.command("report")
@command
async def report_cmd(
    run_id: int = RUN_ID,
    csv_path: Path | None = typer.Option(
        None,
        "--csv",
        help="Also write one line per payment to this CSV file (DNI and CCI masked; amount in minor units and, as "
        "amount_decimal, in major units: 200.00).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """The run report: paid, rejected by reason, accrued, totals, by district (and a CSV per payment).

    Example: cct-ledger runs report 7 --csv run-7.csv
    """
    async with database() as db, db.connection() as conn:
        s = await report.summary(conn, run_id)
        lines = await report.write_csv(conn, run_id, csv_path) if csv_path else 0
    if as_json:
        print_json({**s, "csv": str(csv_path) if csv_path else None, "csv_lines": lines})
        return
    print_summary(s)
    if csv_path:
        console.print(f"wrote {lines:,} payments to {escape(str(csv_path))}")


@app.command("cancel-batch")
@command
async def cancel_batch(
    run_id: int = RUN_ID,
    batch_no: int = typer.Argument(..., min=0, max=2**31 - 1, help="The batch number (`runs show` lists incidents)."),
    reason: str = typer.Option(..., "--reason", help="Why it is cancelled (recorded in the run's events)."),
    user: str | None = USER,
    as_json: bool = JSON_OPTION,
) -> None:
    """Cancel a batch the bank refused: its hold returns to the fund, its payments are rejected as
    `cancelled` and their entitlements accrue to the next run. Only once the bank confirms it has no such
    batch; needs CCT_BANK_URL. Fix the cause and `runs resume` instead when the bank would accept it now.

    Example: cct-ledger runs cancel-batch 7 12 --reason "refused: reference taken" --user maria
    """
    actor = require_user(user, "runs cancel-batch")
    s = settings()
    async with database(s) as db:
        async with db.connection() as conn:
            await refused_batch(conn, run_id, batch_no)  # the run and the batch first, then the bank
        bank = bank_from_settings(s)
        try:
            await cancel_refused_batch(db, bank, run_id, batch_no, actor, reason)
        finally:
            await bank.aclose()
        async with db.connection() as conn:
            summary = await report.summary(conn, run_id)
    if as_json:
        print_json(summary)
        return
    console.print(f"run {run_id} batch {batch_no} cancelled; the run is {summary['run']['status']}")


@app.command("close")
@command
async def close(run_id: int = RUN_ID, user: str | None = USER, as_json: bool = JSON_OPTION) -> None:
    """Close a settled run.

    Example: cct-ledger runs close 7 --user maria
    """
    actor = require_user(user, "runs close")
    async with database() as db, db.unit_of_work() as conn:
        run = await service.close_run(conn, run_id, actor)
    if as_json:
        print_json(run)
        return
    console.print(f"run {run_id} closed")
