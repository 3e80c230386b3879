"""``cct-ledger token``: API tokens."""

from __future__ import annotations

import typer

from services.auth import service
from services.auth.service import Role
from services.cli.common import (
    JSON_OPTION,
    USER_OPTION,
    actor,
    command,
    console,
    database,
    err,
    print_json,
    print_page,
    table,
)

app = typer.Typer(
    help="API tokens: create, list, revoke.\n\nExample: TOKEN=$(cct-ledger token create --name maria --role operator)",
    no_args_is_help=True,
)


@app.command("create")
@command
async def create(
    name: str = typer.Option(..., "--name", help="The acting user recorded on every write made with the token."),
    role: Role = typer.Option(..., "--role", case_sensitive=False, help="admin, operator, approver or auditor."),
    user: str | None = USER_OPTION,
) -> None:
    """Create a token and print only the token, so `TOKEN=$(cct-ledger token create ...)` works.

    Example: TOKEN=$(cct-ledger token create --name maria --role operator)
    """
    async with database() as db, db.connection() as conn:
        others = await service.live_tokens_named(conn, name)
        secret, _ = await service.create_token(conn, name, role.value, created_by=actor(user))
    if others:  # allowed (a second device, a rotation), but `token revoke NAME` revokes them all
        listed = ", ".join(f"#{t['id']} ({t['role']})" for t in others)
        err.print(
            f"[yellow]note:[/] {name} already has live token(s) {listed}; `cct-ledger token revoke {name}` revokes "
            "every one of them, `cct-ledger token revoke ID` one",
            highlight=False,
        )
    print(secret)


@app.command("list")
@command
async def list_(as_json: bool = JSON_OPTION) -> None:
    """List tokens (never their secrets).

    Example: cct-ledger token list
    """
    async with database() as db, db.connection() as conn:
        rows = [service.describe(r) for r in await service.list_tokens(conn)]
    if as_json:
        print_page(rows, None)  # every token at once: a handful, created by hand
        return
    console.print(
        table(
            "API tokens",
            ["id", "name", "role", "prefix", "created", "by", "revoked", "by"],
            [
                (
                    r["id"],
                    r["name"],
                    r["role"],
                    r["prefix"] + "…",
                    r["created_at"][:19],
                    r["created_by"],
                    (r["revoked_at"] or "")[:19],
                    r["revoked_by"] or "",
                )
                for r in rows
            ],
        )
    )


@app.command("revoke")
@command
async def revoke(
    name_or_id: str = typer.Argument(..., help="Token name (revokes all its live tokens) or id."),
    as_json: bool = JSON_OPTION,
    user: str | None = USER_OPTION,
) -> None:
    """Revoke tokens: requests with them get 401 from then on (within the server's token cache time).

    Example: cct-ledger token revoke maria
    """
    async with database() as db, db.connection() as conn:
        n = await service.revoke_token(conn, name_or_id, revoked_by=actor(user))
    if as_json:
        print_json({"revoked": n})
        return
    console.print(f"revoked {n} token(s)")
