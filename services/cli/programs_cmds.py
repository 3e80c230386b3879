"""``cct-ledger programs``: load program definitions, fund programs, show their rules and entitlements.

Amounts typed by people are decimals in major units (``150000000.00``); JSON output carries integer minor
units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from ledger.money import Money, format_minor
from services.cli.common import (
    CURSOR_OPTION,
    JSON_OPTION,
    USER_OPTION,
    actor,
    command,
    console,
    database,
    limit_option,
    print_json,
    print_more,
    print_page,
    table,
)
from services.programs import service
from services.programs.catalog import DEFAULT_PROGRAMS_FILE, read_programs_file

app = typer.Typer(
    help="Programs: load definitions and rules, fund, list, show, preview entitlements.\n\n"
    "Example: cct-ledger programs fund JUNTOS --amount 150000000.00 --reference RM-045-2026-MIDIS",
    no_args_is_help=True,
)


@app.command("load")
@command
async def load(
    file: Path = typer.Argument(
        DEFAULT_PROGRAMS_FILE,
        help="Programs file (JSON). Default: the one shipped with cct-ledger.",
        show_default=False,
    ),
    as_json: bool = JSON_OPTION,
    user: str | None = USER_OPTION,
) -> None:
    """Create or update programs, append new rule versions, open the programs' ledger accounts.

    Re-loading the same file changes nothing. A loaded rule version never changes: to change amounts, add a
    version with a later effective_from (after today) to the file.

    Example: cct-ledger programs load services/programs/data/programs.json --user maria
    """
    definitions = read_programs_file(file)
    async with database() as db, db.unit_of_work() as conn:
        report = await service.load_programs(conn, definitions, actor=actor(user))
    if as_json:
        print_json(report.to_dict())
        return
    if not report.changed:
        console.print(f"nothing changed: {escape(file.name)} is already loaded ({len(definitions)} programs)")
        return
    for code in report.programs_created:
        console.print(f"program {escape(code)} created")
    for code in report.programs_renamed:
        console.print(f"program {escape(code)} renamed")
    for code, version in report.versions_added:
        console.print(f"{escape(code)}: rule version {version} added")
    for account in report.accounts_opened:
        console.print(f"account {escape(account)} opened")


@app.command("list")
@command
async def list_(
    limit: int = limit_option(),
    cursor: str | None = CURSOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List programs in code order, paginated.

    Example: cct-ledger programs list --json
    """
    async with database() as db, db.connection() as conn:
        programs, next_cursor = await service.page_of_programs(conn, limit=limit, cursor=cursor)
    if as_json:
        print_page([p.to_dict() for p in programs], next_cursor)
        return
    console.print(
        table(
            None,
            ["code", "name", "currency", "schedule", "fund account"],
            [(p.code, p.name, p.currency, p.schedule.value, p.fund_account) for p in programs],
        )
    )
    print_more(next_cursor)
    if not programs:
        console.print("[dim]no programs: run `cct-ledger programs load`[/]")


def _rules_text(rules: dict[str, Any], currency: str) -> str:
    parts = [f"base {format_minor(rules['base'], currency)}"]
    for t in rules["top_ups"]:
        amount = format_minor(t["amount"], currency)
        if t["per"] == "household_if":
            parts.append(f"+{amount} {t['name']} if {t['field']} >= {t['min']}")
        else:
            parts.append(f"+{amount} × {t['field']} ({t['name']})")
    if rules.get("duration_periods"):
        parts.append(f"for {rules['duration_periods']} periods from the household's start")
    return "; ".join(parts)


@app.command("show")
@command
async def show(code: str = typer.Argument(..., help="Program code, e.g. JUNTOS."), as_json: bool = JSON_OPTION) -> None:
    """A program: its rule versions, the version in force now, its fund and appropriations.

    Example: cct-ledger programs show JUNTOS
    """
    async with database() as db, db.connection() as conn:
        data = await service.describe_program(conn, code)
    if as_json:
        print_json(data)
        return
    cur = data["currency"]
    fund = data["fund_balance"]
    in_transit = data["in_transit_balance"]
    console.print(
        table(
            f"{data['code']}: {data['name']}",
            ["", ""],
            [
                ("currency", cur),
                ("schedule", f"{data['schedule']} (current period {data['current_period']})"),
                ("fund", f"{data['fund_account']}: {format_minor(fund['posted'], cur) if fund else 'not opened'}"),
                (
                    "in transit",
                    f"{data['in_transit_account']}: {format_minor(in_transit['posted'], cur) if in_transit else '-'}",
                ),
                (
                    "appropriations",
                    f"{data['appropriations']['count']} totalling {format_minor(data['appropriations']['total'], cur)}",
                ),
                ("version in force", data["version_in_force"] or "none"),
            ],
        )
    )
    console.print(
        table(
            "rule versions",
            ["version", "effective from", "rules", "loaded by"],
            [
                (v["version"], v["effective_from"], _rules_text(v["rules"], cur), v["loaded_by"])
                for v in data["rule_versions"]
            ],
        )
    )


@app.command("fund")
@command
async def fund(
    code: str = typer.Argument(..., help="Program code."),
    amount: str = typer.Option(..., "--amount", help="Decimal amount in major units, e.g. 150000000.00."),
    reference: str = typer.Option(..., "--reference", help="The budget document's reference (once per program)."),
    as_json: bool = JSON_OPTION,
    user: str | None = USER_OPTION,
) -> None:
    """Record an appropriation: move money from mef:treasury to the program's fund.

    Running it again with the same reference and amount changes nothing; another amount is refused.

    Example: cct-ledger programs fund JUNTOS --amount 150000000.00 --reference RM-045-2026-MIDIS --user maria
    """
    async with database() as db:
        async with db.connection() as conn:
            program = await service.get_program(conn, code)
        minor = Money.parse(amount, program.currency).amount
        async with db.unit_of_work() as conn:
            result = await service.fund(conn, code, minor, reference, actor=actor(user))
    if as_json:
        print_json(result.to_dict())
        return
    money = format_minor(result.amount, result.currency)
    if result.replayed:
        console.print(
            f"already recorded: appropriation {reference} of {money} to {code} (transfer {result.transfer_id}); "
            "nothing changed"
        )
    else:
        console.print(f"appropriation {escape(reference)}: {money} to {escape(code)} (transfer {result.transfer_id})")
    console.print(f"fund balance: {format_minor(result.fund_balance, result.currency)}")


@app.command("entitlements")
@command
async def entitlements(
    code: str = typer.Argument(..., help="Program code."),
    period: str = typer.Argument(..., help="Period: 2026-B5 (bimonthly) or 2026-11 (monthly)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Preview a period: payable households and amount, and the excluded ones by reason.

    Example: cct-ledger programs entitlements JUNTOS 2026-B5
    """
    async with database() as db, db.connection() as conn:
        data = await service.entitlement_summary(conn, code, period)
    if as_json:
        print_json(data)
        return
    cur = data["currency"]
    console.print(
        table(
            f"{data['program']} {data['period']} ({data['starts_on']} to {data['ends_on']}), rule version "
            f"{data['rule_version']}",
            ["status", "households", "amount"],
            [(k, f"{v['households']:,}", format_minor(v["amount"], cur)) for k, v in data["groups"].items()],
            right=["households", "amount"],
        )
    )
