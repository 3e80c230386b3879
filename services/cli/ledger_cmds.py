"""``cct-ledger accounts``, ``transfer``, ``verify``, ``seal`` and ``periods``: the ledger from the shell.

Amounts typed by people are decimals in major units (``200.00``); JSON output carries integer minor units.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import orjson
import typer
from rich.markup import escape

from ledger import audit
from ledger.engine import Ledger
from ledger.errors import InvalidTransfer
from ledger.models import (
    Account,
    AccountSpec,
    Balance,
    NormalBalance,
    PostingSpec,
    StatementLine,
    Transfer,
    TransferRequest,
)
from ledger.money import Money, format_minor
from services.cli.common import (
    CURSOR_OPTION,
    JSON_OPTION,
    TRANSFER_ID,
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

accounts = typer.Typer(
    help="Accounts: create, show, list, statement, close.\n\nExample: cct-ledger accounts show program:JUNTOS:fund",
    no_args_is_help=True,
)
transfer = typer.Typer(
    help="Transfers: create, post, void, reverse, show.\n\nExample: cct-ledger transfer show 42 --json",
    no_args_is_help=True,
)
periods = typer.Typer(help="Accounting periods: close, list.\n\nExample: cct-ledger periods list", no_args_is_help=True)


def _account_rows(items: list[Account]) -> list[tuple[object, ...]]:
    return [
        (
            a.code,
            a.currency,
            a.normal_balance.value,
            format_minor(a.balance.posted, a.currency),
            format_minor(a.balance.available, a.currency),
            a.balance.version,
            ",".join(f for f, on in (("no_overdraft", a.no_overdraft), ("hot", a.hot), ("closed", a.closed)) if on),
        )
        for a in items
    ]


_ACCOUNT_COLUMNS = ["code", "cur", "normal", "posted", "available", "version", "flags"]


@accounts.command("create")
@command
async def accounts_create(
    code: str = typer.Argument(..., help="Unique code, e.g. household:HH00000123:savings"),
    currency: str = typer.Option("PEN", help="ISO 4217 currency."),
    normal: NormalBalance = typer.Option(..., "--normal", help="debit (assets) or credit (funds, savings)."),
    no_overdraft: bool = typer.Option(False, "--no-overdraft", help="Never let the balance go below zero."),
    hot: bool = typer.Option(False, "--hot", help="Touched by most transfers (a program fund)."),
    metadata: str = typer.Option("{}", help="JSON object."),
    as_json: bool = JSON_OPTION,
    user: str | None = USER_OPTION,
) -> None:
    """Open an account.

    Example: cct-ledger accounts create program:JUNTOS:fund --normal credit --no-overdraft --hot
    """
    try:
        meta = orjson.loads(metadata)
    except orjson.JSONDecodeError as e:
        raise typer.BadParameter(f"--metadata is not JSON: {e}") from e
    spec = AccountSpec(code, currency, normal, no_overdraft, hot, meta)
    async with database() as db, db.connection() as conn:
        account = await Ledger(conn, actor(user)).create_account(spec)
    if as_json:
        print_json(account.to_dict())
    else:
        console.print(table(None, _ACCOUNT_COLUMNS, _account_rows([account]), right=["posted", "available"]))


@accounts.command("show")
@command
async def accounts_show(
    code: str = typer.Argument(..., help="Account code."),
    as_of: datetime | None = typer.Option(
        None,
        "--as-of",
        help="Balance at this instant (ISO 8601, UTC if no offset; a bare date is its first instant, 00:00 UTC: "
        "for the end of 2026-11-28 in Lima write 2026-11-29T00:00:00-05:00).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """An account with its balances, now or at an instant.

    Example: cct-ledger accounts show program:JUNTOS:fund --as-of 2026-11-01T00:00:00Z
    """
    async with database() as db, db.connection() as conn:
        led = Ledger(conn)
        account = await led.get_account(code)
        bal = await led.balance(code, _aware(as_of)) if as_of else account.balance
    if as_json:
        print_json(
            {**account.to_dict(), "balance": bal.to_dict(), "as_of": _aware(as_of).isoformat() if as_of else None}
        )
        return
    rows = [
        ("posted", format_minor(bal.posted, bal.currency)),
        ("pending debits", format_minor(bal.pending_debits, bal.currency)),
        ("pending credits", format_minor(bal.pending_credits, bal.currency)),
        ("available", format_minor(bal.available, bal.currency)),
        ("version", bal.version),
    ]
    title = f"{account.code} ({account.normal_balance.value}-normal{', no overdraft' if account.no_overdraft else ''})"
    if as_of:
        title += f" as of {_aware(as_of).isoformat()}"
    console.print(table(title, ["", "balance"], rows, right=["balance"]))


@accounts.command("list")
@command
async def accounts_list(
    prefix: str = typer.Option("", help="Only codes starting with this."),
    limit: int = limit_option(),
    cursor: str | None = CURSOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List accounts, paginated.

    Example: cct-ledger accounts list --prefix program: --json
    """
    async with database() as db, db.connection() as conn:
        items, next_cursor = await Ledger(conn).list_accounts(prefix=prefix, limit=limit, cursor=cursor)
    if as_json:
        print_page([a.to_dict() for a in items], next_cursor)
        return
    console.print(table(None, _ACCOUNT_COLUMNS, _account_rows(items), right=["posted", "available"]))
    print_more(next_cursor)


@accounts.command("statement")
@command
async def accounts_statement(
    code: str = typer.Argument(..., help="Account code."),
    limit: int = limit_option(20),
    cursor: str | None = CURSOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The account's postings, newest first, with the balance after each.

    Example: cct-ledger accounts statement household:HH00000123:savings --limit 10
    """
    async with database() as db, db.connection() as conn:
        led = Ledger(conn)
        account = await led.get_account(code)
        lines, next_cursor = await led.statement(code, limit=limit, cursor=cursor)
    if as_json:
        print_page([x.to_dict() for x in lines], next_cursor)
        return
    cur = account.currency
    console.print(
        table(
            f"{code}: statement",
            [
                "version",
                "recorded",
                "transfer",
                "phase",
                "debit",
                "credit",
                "posted after",
                "available after",
                "description",
            ],
            [
                (
                    x.version,
                    x.recorded_at.isoformat(timespec="seconds"),
                    x.transfer_id,
                    x.phase.name.lower(),
                    format_minor(x.debit, cur) if x.debit else "",
                    format_minor(x.credit, cur) if x.credit else "",
                    format_minor(x.posted_after, cur),
                    format_minor(_available_after(account.normal_balance, x), cur),
                    x.description[:40],
                )
                for x in lines
            ],
            right=["debit", "credit", "posted after", "available after"],
        )
    )
    console.print(
        "[dim]hold: money set aside (available falls, posted does not); commit: a held amount posted; "
        "release: a hold given back (available rises)[/]"
    )
    print_more(next_cursor)


def _available_after(normal: NormalBalance, line: StatementLine) -> int:
    """The account's available balance after a posting: posted minus its pending outflows (``Balance.of``)."""
    return Balance.of(
        normal, "", line.posted_after, line.pending_debits_after, line.pending_credits_after, line.version
    ).available


@accounts.command("close")
@command
async def accounts_close(
    code: str = typer.Argument(..., help="Account code, e.g. household:HH00000123:savings"),
    user: str | None = USER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Close an account (its balance must be zero with nothing pending).

    Example: cct-ledger accounts close household:HH00000123:savings
    """
    async with database() as db, db.connection() as conn:
        account = await Ledger(conn, actor(user)).close_account(code)
    if as_json:
        print_json(account.to_dict())
        return
    console.print(f"account {escape(code)} closed")


_LEG = re.compile(r"^(?P<account>[^=]+)=(?P<amount>.+)$")


def _legs(values: list[str], side: str, currency: str) -> list[PostingSpec]:
    out = []
    for v in values:
        m = _LEG.match(v)
        if not m:
            raise typer.BadParameter(f"--{side} {v!r}: write ACCOUNT=AMOUNT, e.g. program:JUNTOS:fund=200.00")
        amount = Money.parse(m.group("amount"), currency).amount
        out.append(PostingSpec(m.group("account"), **{side: amount}))
    return out


def _print_transfer(t: Transfer, as_json: bool) -> None:
    if as_json:
        print_json({**t.to_dict(), "replayed": t.replayed})
        return
    status = t.status + (" (replayed: this key was used before)" if t.replayed else "")
    console.print(f"transfer {t.id}: {status}")
    console.print(
        table(
            None,
            ["account", "debit", "credit"],
            [
                (
                    p["account"],
                    format_minor(p["debit"], t.currency) if "debit" in p else "",
                    format_minor(p["credit"], t.currency) if "credit" in p else "",
                )
                for p in t.postings
            ],
            right=["debit", "credit"],
        )
    )


def _aware(value: datetime | None) -> datetime:
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@transfer.command("create")
@command
async def transfer_create(
    debit: list[str] = typer.Option(..., "--debit", help="ACCOUNT=AMOUNT (repeatable)."),
    credit: list[str] = typer.Option(..., "--credit", help="ACCOUNT=AMOUNT (repeatable)."),
    key: str = typer.Option(..., "--key", help="Idempotency key: rerunning with the same key does nothing twice."),
    currency: str = typer.Option("PEN", "--currency", help="ISO 4217 code of every posting's account."),
    pending: bool = typer.Option(False, "--pending", help="Create a hold to post or void later."),
    expires_in: int | None = typer.Option(None, "--expires-in", help="Seconds until a pending hold expires."),
    description: str = typer.Option("", "--description", help="Stored on the transfer."),
    as_json: bool = JSON_OPTION,
    user: str | None = USER_OPTION,
) -> None:
    """Create a transfer: debits and credits must balance.

    Example: cct-ledger transfer create --debit program:JUNTOS:fund=200.00
    --credit household:HH00000123:savings=200.00 --key pay-HH00000123-2026-B5
    """
    postings = tuple(_legs(debit, "debit", currency) + _legs(credit, "credit", currency))
    if expires_in is not None and not pending:
        raise InvalidTransfer("--expires-in applies only with --pending")
    expires = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None
    request = TransferRequest(postings, currency, pending, expires, None, description)
    async with database() as db, db.connection() as conn:
        t = await Ledger(conn, actor(user)).transfer(request, key)
    _print_transfer(t, as_json)


@transfer.command("post")
@command
async def transfer_post(
    transfer_id: int = TRANSFER_ID,
    key: str = typer.Option(..., "--key", help="Idempotency key."),
    amount: str | None = typer.Option(None, "--amount", help="Post only this much (two-posting holds)."),
    as_json: bool = JSON_OPTION,
    user: str | None = USER_OPTION,
) -> None:
    """Post a pending transfer.

    Example: cct-ledger transfer post 42 --key post-42
    """
    async with database() as db, db.connection() as conn:
        led = Ledger(conn, actor(user))
        minor = None
        if amount is not None:
            minor = Money.parse(amount, (await led.get_transfer(transfer_id)).currency).amount
        t = await led.post(transfer_id, key, amount=minor)
    _print_transfer(t, as_json)


@transfer.command("void")
@command
async def transfer_void(
    transfer_id: int = TRANSFER_ID,
    key: str = typer.Option(..., "--key", help="Idempotency key."),
    reason: str | None = typer.Option(None, "--reason", help="Why it is voided; stored with the void."),
    as_json: bool = JSON_OPTION,
    user: str | None = USER_OPTION,
) -> None:
    """Void a pending transfer (release its hold).

    Example: cct-ledger transfer void 42 --key void-42 --reason "account closed"
    """
    async with database() as db, db.connection() as conn:
        t = await Ledger(conn, actor(user)).void(transfer_id, key, reason)
    _print_transfer(t, as_json)


@transfer.command("reverse")
@command
async def transfer_reverse(
    transfer_id: int = TRANSFER_ID,
    key: str = typer.Option(..., "--key", help="Idempotency key."),
    description: str = typer.Option("", "--description", help="Stored on the reversing transfer."),
    as_json: bool = JSON_OPTION,
    user: str | None = USER_OPTION,
) -> None:
    """Reverse a posted transfer (at most once).

    Example: cct-ledger transfer reverse 42 --key rev-42 --description "paid twice"
    """
    async with database() as db, db.connection() as conn:
        t = await Ledger(conn, actor(user)).reverse(transfer_id, key, description)
    _print_transfer(t, as_json)


@transfer.command("show")
@command
async def transfer_show(transfer_id: int = TRANSFER_ID, as_json: bool = JSON_OPTION) -> None:
    """A transfer and its status.

    Example: cct-ledger transfer show 42 --json
    """
    async with database() as db, db.connection() as conn:
        t = await Ledger(conn).get_transfer(transfer_id)
    _print_transfer(t, as_json)


@command
async def verify(
    seal_first: bool = typer.Option(True, "--seal/--no-seal", help="Seal committed transfers before verifying."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Verify the audit chain, every balance against its postings, and the trial balance.

    Exits 1 and prints each problem when the ledger does not verify.

    Example: cct-ledger verify --json
    """
    async with database() as db, db.connection() as conn, db.connection() as helper:
        if seal_first:
            await audit.seal(conn)
        report = await audit.verify(conn, helper)
    if as_json:
        print_json(report.to_dict())
    else:
        state = "[bold green]ok[/]" if report.ok else f"[bold red]{len(report.problems)} problem(s)[/]"
        console.print(
            f"ledger verify: {state} - {report.transfers:,} transfers, {report.sealed:,} sealed in "
            f"{report.blocks:,} blocks, head {report.head or '-'}"
        )
        for p in report.problems:
            err.print(f"  [red]{p['check']}[/]: {escape(str(p['message']))}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@command
async def seal(as_json: bool = JSON_OPTION) -> None:
    """Seal committed transfers into the audit chain now (the server also does it in the background).

    Example: cct-ledger seal
    """
    async with database() as db, db.connection() as conn:
        result = await audit.seal(conn)
    if as_json:
        print_json({"blocks": result.blocks, "transfers": result.transfers, "head": result.head})
    else:
        console.print(f"sealed {result.transfers:,} transfers in {result.blocks} blocks; head {result.head or '-'}")


@periods.command("close")
@command
async def periods_close(
    name: str = typer.Argument(..., help="Period name, e.g. 2026-B5"),
    start: datetime = typer.Option(..., "--from", help="Start (inclusive), ISO 8601; UTC if no offset."),
    end: datetime = typer.Option(..., "--to", help="End (exclusive), ISO 8601; UTC if no offset."),
    user: str | None = USER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Close an accounting period: postings with an effective time inside it are refused.

    Example: cct-ledger periods close 2026-B4 --from 2026-07-01 --to 2026-09-01
    """
    async with database() as db, db.connection() as conn:
        period = await Ledger(conn, actor(user)).close_period(name, _aware(start), _aware(end))
    if as_json:  # as `periods list` shows it
        print_json(period)
        return
    console.print(f"period {escape(name)} closed")


@periods.command("list")
@command
async def periods_list(
    limit: int = limit_option(),
    cursor: str | None = CURSOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Closed accounting periods, in the order of their start.

    Example: cct-ledger periods list --json
    """
    async with database() as db, db.connection() as conn:
        rows, next_cursor = await Ledger(conn).closed_periods(limit=limit, cursor=cursor)
    if as_json:
        print_page(rows, next_cursor)
        return
    console.print(
        table(
            None,
            ["name", "from", "to", "closed by"],
            [(r["name"], r["starts_at"], r["ends_at"], r["closed_by"]) for r in rows],
        )
    )
    print_more(next_cursor)
