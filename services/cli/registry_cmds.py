"""``cct-ledger households`` and ``compliance``: import the padron and verification files, look households up.

An import is all-or-nothing unless ``--skip-invalid``: bad rows are listed with their line, column and
reason (a table, or JSON with ``--json``) and nothing is written. DNIs and CCIs are shown masked unless
``--reveal``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ledger.money import format_minor
from services.cli.common import (
    CURSOR_OPTION,
    JSON_OPTION,
    USER_OPTION,
    actor,
    command,
    console,
    database,
    err,
    limit_option,
    print_json,
    print_more,
    print_page,
    table,
)
from services.registry import service
from services.registry.errors import ImportRejected
from services.registry.padron import CsvSource, write_rejects

households = typer.Typer(
    help="Households: import the padron, show, list, and the record of personal data revealed.\n\n"
    "Example: cct-ledger households import padron.csv --user maria",
    no_args_is_help=True,
)
compliance = typer.Typer(
    help="Compliance: import a period's verification results.\n\n"
    "Example: cct-ledger compliance import --program JUNTOS --period 2026-B5 verification.csv --user maria",
    no_args_is_help=True,
)
SHOWN_ERRORS = 50


@contextmanager
def _progress(enabled: bool) -> Iterator[service.Progress | None]:
    """A rich progress bar on stderr, fed by the import's progress callback."""
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int | None) -> None:
        """Show a phase of the import on the bar."""
        if phase not in tasks:
            label = {"validate": "validating and loading", "merge": "merging into the registry"}.get(phase, phase)
            tasks[phase] = bar.add_task(label, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    with bar:
        yield update


def _print_errors(errors: list[dict[str, Any]], total: int, title: str) -> None:
    err.print(
        table(
            title,
            ["line", "column", "household", "reason"],
            [(e["line"], e["column"], e["household_id"] or "", e["reason"]) for e in errors[:SHOWN_ERRORS]],
            right=["line"],
        )
    )
    if total > SHOWN_ERRORS:
        err.print(f"... and {total - SHOWN_ERRORS:,} more (use --json for all of them)")


def _require_writable(path: Path) -> None:
    """Refuse, before anything is imported, a rejects file that could not be written afterwards."""
    if path.exists():
        writable = path.is_file() and os.access(path, os.W_OK)
    else:
        writable = path.parent.is_dir() and os.access(path.parent, os.W_OK)
    if not writable:
        raise typer.BadParameter(
            f"cannot write the rejects file {path}: give --rejects a path in an existing, writable folder",
            param_hint="--rejects",
        )


def _refused(e: ImportRejected, as_json: bool) -> NoReturn:
    if as_json:
        hint = (
            "fix the rows listed, or import the valid ones with --skip-invalid --rejects FILE"
            if e.extra.get("kind") == "households"
            else "fix the rows listed and import the whole file again"
        )
        print_json(
            {
                **e.extra,
                "error": e.type,
                "title": e.title,
                "detail": e.detail,
                "hint": hint,
                "errors": e.errors,
                "errors_total": len(e.errors),
            }
        )
    else:
        _print_errors(e.errors, len(e.errors), "invalid rows")
        err.print(f"[bold red]error:[/] {escape(e.detail)}", highlight=False)
    raise typer.Exit(1)


def _print_report(report: service.ImportReport, noun: str) -> None:
    if not report.changed:
        again = f" (the same file was imported as import #{report.previous_import})" if report.previous_import else ""
        console.print(f"nothing changed: all {report.unchanged:,} {noun} are already up to date{again}")
    else:
        console.print(
            table(
                f"import #{report.import_id}: {report.file_name}",
                ["rows", "inserted", "updated", "unchanged", "rejected"],
                [
                    (
                        f"{report.rows:,}",
                        f"{report.inserted:,}",
                        f"{report.updated:,}",
                        f"{report.unchanged:,}",
                        f"{report.rejected:,}",
                    )
                ],
                right=["rows", "inserted", "updated", "unchanged", "rejected"],
            )
        )
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


@households.command("import")
@command
async def households_import(
    file: Path = typer.Argument(..., help="The padron CSV (UTF-8, header line first)."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Import the valid rows and write the invalid ones to the rejects file."
    ),
    rejects: Path | None = typer.Option(
        None, "--rejects", help="Where --skip-invalid writes rejected rows. Default: <file>.rejects.csv"
    ),
    as_json: bool = JSON_OPTION,
    user: str | None = USER_OPTION,
) -> None:
    """Import the household registry (padron): add new households, update changed ones (with history).

    Columns: household_id, titular_dni, titular_name, ubigeo, cci (empty: no account yet), status
    (active/inactive/exited), enrolled_on (YYYY-MM-DD), children_under_4, upper_secondary_students; optional
    program (default JUNTOS); any other column is kept as extra data. Importing the same file twice changes
    nothing the second time.

    Example: cct-ledger households import padron.csv --skip-invalid --rejects rejects.csv --user maria
    """
    source = CsvSource.from_path(file)
    rejects_path = rejects or file.with_name(file.name + ".rejects.csv")
    if skip_invalid:
        _require_writable(rejects_path)  # before the import commits, not after
    async with database() as db:
        try:
            with _progress(not as_json) as progress:
                async with db.unit_of_work() as conn:
                    report = await service.import_households(
                        conn, source, actor=actor(user), skip_invalid=skip_invalid, progress=progress
                    )
        except ImportRejected as e:
            _refused(e, as_json)
    written = None
    if report.rejected_rows:
        written = rejects_path
        write_rejects(written, report.header, report.rejected_rows)
    if as_json:
        print_json({**report.to_dict(), "rejects_file": str(written) if written else None})
        return
    _print_report(report, "households")
    if written is not None:
        _print_errors([e.to_dict() for e in report.errors], len(report.errors), "rejected rows (not imported)")
        err.print(f"{report.rejected:,} rejected rows written to {escape(str(written))}")


@compliance.command("import")
@command
async def compliance_import(
    file: Path = typer.Argument(..., help="Verification CSV: household_id, compliant, reason."),
    program: str = typer.Option(..., "--program", help="Program code, e.g. JUNTOS."),
    period: str = typer.Option(..., "--period", help="Period verified, e.g. 2026-B5."),
    as_json: bool = JSON_OPTION,
    user: str | None = USER_OPTION,
) -> None:
    """Import a period's verification results: non-compliant households are suspended for that period only.

    compliant accepts true/false, 1/0, si/sí/no, yes (any case). All-or-nothing: a bad value, an unknown
    household or a household listed twice refuses the file. Re-importing updates changed values and keeps the
    earlier ones in the history.

    Example: cct-ledger compliance import --program JUNTOS --period 2026-B5 verification.csv --user maria
    """
    source = CsvSource.from_path(file)
    async with database() as db:
        try:
            with _progress(not as_json) as progress:
                async with db.unit_of_work() as conn:
                    report = await service.import_compliance(
                        conn, source, program=program, period=period, actor=actor(user), progress=progress
                    )
        except ImportRejected as e:
            _refused(e, as_json)
    if as_json:
        print_json(report.to_dict())
        return
    _print_report(report, "verification results")


@households.command("show")
@command
async def households_show(
    household_id: str = typer.Argument(..., help="Household id."),
    reveal: bool = typer.Option(
        False, "--reveal", help="Show the DNI and CCI unmasked (recorded: see `households reveals`)."
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why they are needed; recorded with the reveal."),
    user: str | None = USER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """A household with every version of it, its recent compliance records and its payments (DNI and CCI
    masked; --reveal shows them and records who, when and why).

    Example: cct-ledger households show HH00000001 --reveal --reason "claim 2026-114" --user maria
    """
    async with database() as db, db.connection() as conn:
        data = await service.get_household(
            conn, household_id, reveal=reveal, actor=actor(user), channel="cli", reason=reason
        )
    if as_json:
        print_json(data)
        return
    fields = [k for k in data if k not in ("history", "compliance", "payments", "accrued")]
    console.print(table(f"household {household_id}", ["", ""], [(k, data[k]) for k in fields]))
    console.print(
        table(
            "history",
            ["version", "changed at", "import", "status", "ubigeo", "cci", "children <4", "upper sec."],
            [
                (
                    h["version"],
                    h["changed_at"][:19],
                    h["import_id"],
                    h["data"]["status"],
                    h["data"]["ubigeo"],
                    h["data"]["cci"] or "",
                    h["data"]["children_under_4"],
                    h["data"]["upper_secondary_students"],
                )
                for h in data["history"]
            ],
        )
    )
    if data["compliance"]:
        console.print(
            table(
                "compliance",
                ["program", "period", "compliant", "reason"],
                [
                    (c["program"], c["period"], "yes" if c["compliant"] else "no", c["reason"])
                    for c in data["compliance"]
                ],
            )
        )
    console.print(
        table(
            "payments (newest run first)",
            ["run", "program", "periods", "amount", "status", "reason", "ledger transfer", "settled at"],
            [
                (
                    p["run"],
                    p["program"],
                    ", ".join(p["periods"]),
                    format_minor(p["amount"], p["currency"]),
                    p["status"],
                    p["reason"] or "",
                    p["ledger_transfer_id"] or "",
                    (p["settled_at"] or "")[:19],
                )
                for p in data["payments"]
            ],
            right=["amount"],
        )
        if data["payments"]
        else "[dim]no payments yet[/]"
    )
    if data["accrued"]:
        console.print(
            table(
                "owed (accruing until it can be paid)",
                ["program", "period", "amount"],
                [(a["program"], a["period"], format_minor(a["amount"], a["currency"])) for a in data["accrued"]],
                right=["amount"],
            )
        )


@households.command("list")
@command
async def households_list(
    ubigeo: str | None = typer.Option(None, "--ubigeo", help="Only this district (6 digits)."),
    status: str | None = typer.Option(None, "--status", help="active, inactive or exited."),
    program: str | None = typer.Option(None, "--program", help="Only this program."),
    limit: int = limit_option(),
    cursor: str | None = CURSOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List households in id order (DNI and CCI masked), paginated.

    Example: cct-ledger households list --ubigeo 080206 --status active --limit 20
    """
    async with database() as db, db.connection() as conn:
        items, next_cursor = await service.list_households(
            conn, limit=limit, cursor=cursor, ubigeo=ubigeo, status=status, program=program
        )
    if as_json:
        print_page(items, next_cursor)
        return
    console.print(
        table(
            None,
            ["household", "titular", "dni", "ubigeo", "cci", "status", "enrolled", "<4", "sec.", "program", "v"],
            [
                (
                    h["household_id"],
                    h["titular_name"],
                    h["titular_dni"],
                    h["ubigeo"],
                    h["cci"] or "-",
                    h["status"],
                    h["enrolled_on"],
                    h["children_under_4"],
                    h["upper_secondary_students"],
                    h["program"],
                    h["version"],
                )
                for h in items
            ],
        )
    )
    print_more(next_cursor)


@households.command("reveals")
@command
async def households_reveals(
    household_id: str | None = typer.Option(None, "--household", help="Only this household."),
    who: str | None = typer.Option(None, "--actor", help="Only this user."),
    limit: int = limit_option(),
    cursor: str | None = CURSOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Who was shown a household's DNI and CCI unmasked (`show --reveal`, the API's reveal=true): when,
    through what and why, newest first, paginated.

    Example: cct-ledger households reveals --household HH00000001
    """
    async with database() as db, db.connection() as conn:
        items, next_cursor = await service.list_reveals(
            conn, limit=limit, cursor=cursor, household_id=household_id, actor=who
        )
    if as_json:
        print_page(items, next_cursor)
        return
    console.print(
        table(
            None,
            ["#", "at", "household", "who", "via", "reason"],
            [
                (r["id"], r["revealed_at"][:19], r["household_id"], r["actor"], r["channel"], r["reason"] or "")
                for r in items
            ],
        )
        if items
        else "[dim]no reveals[/]"
    )
    print_more(next_cursor)
