"""What every command shares: the database, the acting user, output as tables or JSON, friendly errors."""

from __future__ import annotations

import asyncio
import functools
import getpass
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import orjson
import typer
from pydantic import AliasChoices, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from adapters.postgres import migrate
from adapters.postgres.bootstrap import resolve_database_url
from adapters.postgres.database import Database
from adapters.postgres.embedded import EmbeddedPostgresError
from ledger.errors import AppError
from services.config import Settings, get_settings
from services.logs import configure_logging

# Piped output is not wrapped at 80 columns: account codes and amounts stay whole.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
P = ParamSpec("P")
T = TypeVar("T")

JSON_OPTION = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")
MAX_ID = 2**63 - 1  # ids are bigints: a larger number is refused by the parser, not by the database
TRANSFER_ID = typer.Argument(..., min=1, max=MAX_ID, metavar="TRANSFER_ID", help="The transfer's id.")
RUN_ID = typer.Argument(..., min=1, max=MAX_ID, metavar="RUN_ID", help="The payment run's id.")
CURSOR_OPTION = typer.Option(None, "--cursor", help="next_cursor of the previous page.")


def limit_option(default: int = 50) -> Any:
    """``--limit`` of a list command: items per page, 1 to 1,000 (the API's bounds)."""
    return typer.Option(default, "--limit", min=1, max=1000, help="Items per page (1 to 1,000).")


USER_OPTION = typer.Option(
    None, "--user", help="Who is acting (recorded on every write). Default: $CCT_USER or the login name."
)


def read_settings() -> Settings:
    """The settings from the environment; a bad value stops the command with the variable named and why."""
    try:
        return get_settings()
    except ValidationError as e:
        for error in e.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            field = Settings.model_fields.get(name)
            alias = field.validation_alias if field is not None else None
            variable = alias.choices[0] if isinstance(alias, AliasChoices) else f"CCT_{name.upper()}"
            err.print(
                f"[bold red]error:[/] {escape(str(variable))}={escape(repr(error.get('input')))}: "
                f"{escape(error['msg'])}",
                highlight=False,
            )
        err.print("[dim]hint:[/] fix or unset it; the README's Configuration table lists every setting")
        raise typer.Exit(2) from None


def settings() -> Settings:
    """The settings, with logging configured for a command line: events go to stderr; unless CCT_LOG_LEVEL is
    set, only warnings and errors, so the output people read is not drowned by the events."""
    s = read_settings()
    level = s.log_level if "CCT_LOG_LEVEL" in os.environ else "WARNING"
    configure_logging(level, "console" if s.log_format == "auto" else s.log_format)
    return s


def actor(user: str | None) -> str:
    """The acting user: ``--user``, else ``$CCT_USER``, else the login name (surrounding spaces dropped)."""
    if user is not None:
        if not user.strip():
            raise typer.BadParameter("--user is blank: give the name of who is acting (it is recorded)")
        return user.strip()
    env = os.environ.get("CCT_USER", "").strip()
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): still record something true
        return f"uid:{os.getuid()}"


def require_user(user: str | None, command: str) -> str:
    """``--user`` is required for maker-checker steps; say so clearly when it is missing."""
    if not user or not user.strip():
        raise typer.BadParameter(f"--user NAME is required for `{command}` (it is recorded as who did it)")
    return user.strip()


@asynccontextmanager
async def database(s: Settings | None = None, *, check_migrated: bool = True) -> AsyncIterator[Database]:
    """Open the configured database (starting the embedded server when needed)."""
    s = s or settings()
    url = await resolve_database_url(s)
    if check_migrated:
        await migrate.assert_migrated(url)
    db = await Database.connect(url, max_size=s.db_pool_size)
    try:
        yield db
    finally:
        await db.close()


def command(fn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """Run an async command; turn known failures into a clear message and a non-zero exit status."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]
        except AppError as e:
            hint = _hint(e)
            if kwargs.get("as_json"):  # a script asked for JSON: the error is JSON too (and the exit status 1)
                print_json({**e.extra, "error": e.type, "title": e.title, "detail": e.detail, "hint": hint or None})
            err.print(f"[bold red]error:[/] {escape(e.detail)}", highlight=False)
            if hint:
                err.print(f"[dim]hint:[/] {escape(hint)}", highlight=False)
            raise typer.Exit(1) from None
        except EmbeddedPostgresError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(1) from None
        except OSError as e:
            if e.filename is not None and not isinstance(e, ConnectionError):  # a file of the command's, not the server
                detail = f"cannot use {e.filename}: {e.strerror or e}"
                hint = "check that the path exists and that you may read or write it"
                if kwargs.get("as_json"):  # a refusal like the others, not a usage or connection error
                    print_json(
                        {"error": "file-unusable", "title": "File cannot be used", "detail": detail, "hint": hint}
                    )
                err.print(f"[bold red]error:[/] {escape(detail)}", highlight=False)
                err.print(f"[dim]hint:[/] {hint}")
                raise typer.Exit(1) from None
            err.print(f"[bold red]error:[/] cannot reach the database: {escape(str(e))}", highlight=False)
            err.print("[dim]hint:[/] check DATABASE_URL, or unset it to use the embedded PostgreSQL")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _hint(e: AppError) -> str:
    return {
        "insufficient-funds": "fund the account first, or lower the amount",
        "idempotency-key-reused": "use a new --key for a different operation",
        "account-not-found": "list accounts with `cct-ledger accounts list`",
        "token-not-found": "list tokens, their names and ids, with `cct-ledger token list`",
        "transfer-not-found": "an account's statement lists its transfers' ids: `cct-ledger accounts statement CODE`",
    }.get(e.type, "")


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode())
    sys.stdout.write("\n")


def print_page(data: list[Any], next_cursor: str | None) -> None:
    """A list for scripts: the API's envelope, ``data``, ``next_cursor`` and ``has_more``."""
    print_json({"data": data, "next_cursor": next_cursor, "has_more": next_cursor is not None})


def print_more(next_cursor: str | None) -> None:
    """Under a table: how to get the next page, if there is one."""
    if next_cursor:
        console.print(f"[dim]more: --cursor {next_cursor}[/]")


def table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Iterable[str] = ()
) -> Table:
    """A rich table; ``right`` names the columns to right-align (amounts). The title and cells are plain text:
    data (a reason, a name, a file's value) with brackets in it is shown as it is, never read as markup."""
    right_set = set(right)
    t = Table(title=None if title is None else Text(title), title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, justify="right" if c in right_set else "left")
    for r in rows:
        t.add_row(*[Text("" if v is None else str(v)) for v in r])
    return t
