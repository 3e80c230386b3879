"""``cct-ledger demo``: the main job end to end, on the embedded PostgreSQL and an in-process simulated bank.

A synthetic registry (with the data problems real ones have) is imported, JUNTOS is funded, two bimesters
are paid end to end (compliance, create, maker-checker approval, execution with bank rejections), simulated
time passes so households withdraw and save, and the ledger is verified. Everything it writes stays in the
demo database for exploring afterwards (``CCT_DB_NAME=cct_demo cct-ledger runs list``).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapters.bank.simulator import SimControl, connect, create_app, get_simulator
from adapters.postgres import migrate
from adapters.postgres.bootstrap import embedded_server
from adapters.postgres.database import Database, asyncpg_dsn
from ledger import audit
from ledger.errors import AppError, ErrorKind
from ledger.money import format_minor
from services.cli.bank_sim import FaultsChoice
from services.cli.common import command, console, err, print_json, settings, table
from services.cli.progress import Bars
from services.cli.runs_cmds import print_summary
from services.payments import report
from services.payments import service as payments
from services.payments.execute import ExecuteOptions, RunExecutor
from services.programs import catalog
from services.programs import service as programs
from services.registry import synthetic
from services.registry.padron import CsvSource
from services.registry.service import import_compliance, import_households

PERIODS = ("2026-B4", "2026-B5")
MAKER, CHECKER, BUDGET = "maria.quispe", "jorge.huaman", "mef.budget"


@dataclass
class Step:
    name: str
    seconds: float


@dataclass
class Demo:
    households: int
    seed: int
    faults: str
    folder: Path
    steps: list[Step] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        yield
        self.steps.append(Step(name, time.perf_counter() - started))


class DemoDatabaseInUse(AppError):
    """The demo would run in a database that already holds payment runs (``DATABASE_URL``)."""

    type = "demo-database-in-use"
    title = "The demo needs an empty database"
    kind = ErrorKind.CONFLICT


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    )


async def _database(database: str) -> str:
    """A fresh demo database (dropped and created again) on the configured server."""
    s = settings()
    if s.database_url:
        url = asyncpg_dsn(s.database_url)
        conn = await asyncpg.connect(url)
        try:
            if await conn.fetchval("select to_regclass('payments.runs') is not null") and await conn.fetchval(
                "select exists (select 1 from payments.runs)"
            ):
                raise DemoDatabaseInUse(
                    "DATABASE_URL points at a database that already has payment runs; the demo needs an empty one: "
                    "point DATABASE_URL at a new database, or unset it to use the embedded server"
                )
        finally:
            await conn.close()
        return url
    server = embedded_server(s)
    maintenance = server.ensure_running()
    conn = await asyncpg.connect(maintenance)
    try:
        await conn.execute(f'drop database if exists "{database}" with (force)')
        await conn.execute(f'create database "{database}"')
    finally:
        await conn.close()
    return server.dsn(database)


@command
async def demo(
    households: int = typer.Option(
        20_000, "--households", min=10, max=5_000_000, help="Size of the synthetic registry."
    ),
    seed: int = typer.Option(7, "--seed", help="Seed of the synthetic world (registry, bank, behaviour)."),
    faults: FaultsChoice = typer.Option(
        FaultsChoice.NONE, "--faults", case_sensitive=False, help="Bank fault profile: none, flaky or hostile."
    ),
    database: str = typer.Option(
        "cct_demo",
        "--database",
        help="Database created afresh in the embedded server (with DATABASE_URL set, that database is used instead, "
        "and must hold no payment run).",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the summary as JSON on stdout for scripts; the narrative goes to stderr."
    ),
) -> None:
    """Run the main job end to end: registry import, funding, two bimonthly payment runs, savings, verify.

    Starts the embedded PostgreSQL (or uses DATABASE_URL) and an in-process simulated bank.

    Example: cct-ledger demo --households 1000000
    """
    # The console's own setting, not `console.file`: unset, it follows whatever sys.stdout is when it writes.
    configured = console._file
    if as_json:
        console.file = sys.stderr  # stdout carries the JSON summary alone
    try:
        await _demo(households, seed, faults.value, database, as_json)
    finally:
        console.file = configured  # type: ignore[assignment]


async def _demo(households: int, seed: int, faults: str, database: str, as_json: bool) -> None:
    s = settings()
    folder = s.data_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    d = Demo(households, seed, faults, folder)
    started = time.perf_counter()
    console.print(
        f"[bold]cct-ledger demo[/]: {households:,} households, seed {seed}, bank faults '{faults}', files in {folder}"
    )
    with d.step("Database"):
        url = await _database(database)
        await migrate.upgrade(url)
        where = "DATABASE_URL's database" if s.database_url else f"PostgreSQL database {database!r}"
        console.print(f"{where} ready and migrated ({migrate.head_revision()})")
    db = await Database.connect(url, max_size=12)
    app = create_app(seed=seed, faults=faults)
    bank, control = connect(app)
    try:
        await _run(d, db, bank, control)
    finally:
        await bank.aclose()
        await control.aclose()
        await get_simulator(app).aclose()
        await db.close()
    _finale(d, time.perf_counter() - started, None if s.database_url else database, as_json)


async def _run(d: Demo, db: Database, bank: Any, control: SimControl) -> None:
    rng = random.Random(d.seed)
    with d.step("Programs"):
        async with db.unit_of_work() as conn:
            loaded = await programs.load_programs(conn, catalog.read_programs_file(), actor="setup")
        console.print(
            f"programs loaded: {', '.join(loaded.programs_created) or 'already there'}; ledger accounts opened: "
            f"{', '.join(loaded.accounts_opened) or 'none'}"
        )

    with d.step("Synthetic registry and bank accounts"):
        people = synthetic.generate_households(d.households, d.seed)
        unbanked = {h.household_id for h in people if rng.random() < 0.04}
        other_dni = {h.household_id for h in people if h.household_id not in unbanked and rng.random() < 0.002}
        to_open = [h for h in people if h.household_id not in unbanked]
        with _bar() as bar:
            task = bar.add_task("opening accounts at the bank", total=len(to_open))
            opened = []
            for start in range(0, len(to_open), 50_000):
                part = to_open[start : start + 50_000]
                rows = [
                    (
                        _other_dni(h.titular_dni) if h.household_id in other_dni else h.titular_dni,
                        h.titular_name,
                        h.ubigeo,
                    )
                    for h in part
                ]
                opened += await control.seed_accounts(rows)
                bar.advance(task, len(part))
        ccis: dict[str, str | None] = {h.household_id: a.cci for h, a in zip(to_open, opened, strict=True)}
        closing = [a for h, a in zip(to_open, opened, strict=True) if rng.random() < 0.003]
        for account in closing:
            await bank.close_account(account.account_id, idempotency_key=f"demo-close-{account.account_id}")
        padron = d.folder / "padron.csv"
        planted = synthetic.write_padron_csv(padron, people, ccis, invalid_fraction=0.003, seed=d.seed)
        console.print(
            f"{len(people):,} households; {len(opened):,} bank accounts opened, {len(unbanked):,} not yet "
            f"bankarised, {len(closing)} accounts closed at the bank since, {len(other_dni)} registered at the bank "
            f"under another DNI; {len(planted)} invalid rows planted in {padron.name}"
        )

    with d.step("Household registry import"):
        report_ = await _import_padron(db, padron)
        console.print(
            f"imported {report_.inserted:,} households, rejected {report_.rejected} rows "
            f"(all-or-nothing unless --skip-invalid; the demo skips them)"
        )
        errors = report_.errors
        if errors:
            console.print(
                table(
                    "Rows rejected by the import (line, column, reason)",
                    ["line", "column", "reason"],
                    [(e.line, e.column, e.reason) for e in errors[:8]],
                )
            )
            if len(errors) > 8:
                console.print(f"... and {len(errors) - 8} more")

    with d.step("Appropriation"):
        budget = d.households * 600_00
        async with db.unit_of_work() as conn:
            await programs.fund(conn, "JUNTOS", budget, "MEF-2026-JUNTOS-001", actor=BUDGET)
        await control.deposit_funding(budget, reference="MEF-2026-JUNTOS-001")
        console.print(f"JUNTOS funded with {format_minor(budget)} (ledger and bank)")

    for number, period in enumerate(PERIODS, start=1):
        if number == 2:
            with d.step("Households regularise"):
                newly = [h for h in people if h.household_id in unbanked and rng.random() < 0.6]
                opened_now = await control.seed_accounts((h.titular_dni, h.titular_name, h.ubigeo) for h in newly)
                for h, a in zip(newly, opened_now, strict=True):
                    ccis[h.household_id] = a.cci
                synthetic.write_padron_csv(padron, people, ccis, invalid_fraction=0.003, seed=d.seed)
                updated = await _import_padron(db, padron)
                console.print(
                    f"{len(newly):,} households opened their accounts; registry re-imported: {updated.updated:,} "
                    f"updated, {updated.unchanged:,} unchanged (history kept)"
                )
        with d.step(f"Bimester {period}"):
            await _bimester(d, db, bank, people, period)
        with d.step("Households withdraw and save"):
            await control.advance(days=30 if number == 1 else 60)
            console.print("simulated time advanced: households withdrew at agents and ATMs; some kept savings")

    with d.step("Verify the ledger"):
        async with db.connection() as conn, db.connection() as helper:
            sealed = await audit.seal(conn)
            verified = await audit.verify(conn, helper)
        state = "[bold green]ok[/]" if verified.ok else f"[bold red]{len(verified.problems)} problems[/]"
        console.print(
            f"verify: {state}: {verified.transfers:,} transfers, {verified.blocks} sealed blocks, head {verified.head}"
        )
        d.runs.append({"verify": verified.to_dict(), "sealed": sealed.transfers})
    await _savings(control)


def _other_dni(dni: str) -> str:
    digits = dni[:8]
    return f"{(int(digits) + 1) % 100_000_000:08d}"


async def _import_padron(db: Database, padron: Path) -> Any:
    with _bar() as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"import: {phase}", total=total)
            bar.update(tasks[phase], completed=done, total=total)

        async with db.unit_of_work() as conn:
            return await import_households(
                conn, CsvSource.from_path(padron), actor=MAKER, skip_invalid=True, progress=progress
            )


async def _bimester(d: Demo, db: Database, bank: Any, people: list[Any], period: str) -> None:
    compliance = d.folder / f"compliance-{period}.csv"
    async with db.connection() as conn:  # local staff verify the households the registry holds
        registered = {r["household_id"] for r in await conn.fetch("select household_id from registry.households")}
    verified = [h for h in people if h.household_id in registered]
    synthetic.generate_compliance(verified, "JUNTOS", period, noncompliant_fraction=0.03, seed=d.seed, path=compliance)
    async with db.unit_of_work() as conn:
        imported = await import_compliance(
            conn, CsvSource.from_path(compliance), program="JUNTOS", period=period, actor=MAKER
        )
    console.print(f"compliance {period}: {imported.rows:,} verifications recorded")
    created = await payments.create_run(db, "JUNTOS", period, MAKER)
    run_id = int(created.run["id"])
    console.print(f"run {run_id} created by {MAKER}: {created.run['payments_count']:,} payments planned")
    async with db.unit_of_work() as conn:
        await payments.approve_run(conn, run_id, CHECKER)
    console.print(f"run {run_id} approved by {CHECKER} (maker-checker)")
    with Bars() as bars:
        await RunExecutor(db, bank, run_id, MAKER, bars, ExecuteOptions(poll_interval=0.0)).execute()
    async with db.connection() as conn:
        summary = await report.summary(conn, run_id)
        csv_path = d.folder / f"run-{run_id}-{period}.csv"
        await report.write_csv(conn, run_id, csv_path)
    print_summary(summary)
    console.print(f"run report written to {escape(str(csv_path))}")
    d.runs.append(summary)


async def _savings(control: SimControl) -> None:
    """The households' savings as the bank reports them (reconciliation brings them into the ledger)."""
    s = await control.savings(monthly_transfer=100_00)  # Juntos: S/ 200 a bimester

    def row(label: str, g: dict[str, Any]) -> tuple[str, str, str, str]:
        per_household = g["average_saver_balance"] * g["savers"] / g["accounts"] if g["accounts"] else 0
        return (
            label,
            f"{g['savers']:,} of {g['accounts']:,} ({g['saver_share']:.1%})",
            f"{format_minor(g['average_saver_balance'])} ({g['average_share_of_monthly_transfer']:.1%})",
            f"{format_minor(int(per_household))} ({per_household / s['monthly_transfer']:.1%})",
        )

    console.print(
        table(
            "Savings at the bank, as shares of the monthly transfer (pilot: 21% saved; balances 5.7% of it)",
            ["households", "keeping a balance", "average balance of savers", "average over all"],
            [row("all", s), row("near a pay point", s["near"]), row("far from a pay point", s["far"])],
            right=["average balance of savers", "average over all"],
        )
    )


def _program() -> str:
    """How this command was typed (``.venv/bin/cct-ledger`` under ``make demo``), for a line to copy."""
    typed = sys.argv[0] if sys.argv else ""
    return typed if Path(typed).name == "cct-ledger" else "cct-ledger"


def _finale(d: Demo, seconds: float, database: str | None, as_json: bool) -> None:
    """The summary; ``database`` is the embedded server's demo database, None for DATABASE_URL's."""
    runs = [r for r in d.runs if "run" in r]
    verify = next((r["verify"] for r in d.runs if "verify" in r), None)
    rows = []
    for r in runs:
        run = r["run"]
        cred = r["payments"].get("credited", {"count": 0, "total": 0})
        rej = r["payments"].get("rejected", {"count": 0, "total": 0})
        reasons = ", ".join(f"{k} {v['count']}" for k, v in r["rejected_by_reason"].items()) or "-"
        excluded = (
            ", ".join(f"{k} {v['count']}" for k, v in (run["exclusions"] or {}).items() if k != "no_account") or "-"
        )
        rows.append(
            (
                f"{run['id']} {run['period']}",
                f"{cred['count']:,}",
                format_minor(cred["total"]),
                f"{rej['count']:,} ({reasons})",
                f"{run['accrued_count']:,} ({format_minor(run['accrued_total'])})",
                excluded,
            )
        )
    console.rule("[bold]Summary")
    console.print(
        table(
            "Payment runs",
            ["run", "households paid", "amount", "rejected by the bank", "accrued (no account)", "not paid (reason)"],
            rows,
            right=["households paid", "amount"],
        )
    )
    console.print(
        table("Time", ["step", "seconds"], [(x.name, f"{x.seconds:,.1f}") for x in d.steps], right=["seconds"])
    )
    ok = verify is not None and verify["ok"]
    if as_json:
        print_json(
            {
                "households": d.households,
                "seed": d.seed,
                "faults": d.faults,
                "database": database or "DATABASE_URL",
                "runs": [
                    {
                        "run": r["run"]["id"],
                        "period": r["run"]["period"],
                        "status": r["run"]["status"],
                        "credited": r["payments"].get("credited", {"count": 0, "total": 0}),
                        "rejected": r["payments"].get("rejected", {"count": 0, "total": 0}),
                        "rejected_by_reason": r["rejected_by_reason"],
                        "accrued": {"count": r["run"]["accrued_count"], "total": r["run"]["accrued_total"]},
                        "exclusions": r["run"]["exclusions"] or {},
                    }
                    for r in runs
                ],
                "steps": [{"name": x.name, "seconds": round(x.seconds, 3)} for x in d.steps],
                "verify": verify,
                "seconds": round(seconds, 3),
            }
        )
    console.print(
        f"ledger verify: {'[bold green]ok[/]' if ok else '[bold red]FAILED[/]'}; total {seconds:,.1f} s. "
        f"Explore: {f'CCT_DB_NAME={database} ' if database else ''}{_program()} runs list"
    )
    if not ok:
        raise typer.Exit(1)
