"""``cct-ledger db``: migrations and the embedded PostgreSQL."""

from __future__ import annotations

import typer

from adapters.postgres import migrate
from adapters.postgres.bootstrap import embedded_server, resolve_database_url
from adapters.postgres.database import Database
from services.cli.common import JSON_OPTION, command, console, print_json, settings

app = typer.Typer(
    help="Database: apply migrations, show status, start or stop the embedded server.\n\n"
    "Example: cct-ledger db upgrade",
    no_args_is_help=True,
)


@app.command("upgrade")
@command
async def upgrade(as_json: bool = JSON_OPTION) -> None:
    """Apply every migration (idempotent).

    Example: cct-ledger db upgrade
    """
    s = settings()
    url = await resolve_database_url(s)
    await migrate.upgrade(url)
    if as_json:
        print_json({"revision": migrate.head_revision(), "migrated": True})
        return
    console.print(f"database migrated to {migrate.head_revision()}")


@app.command("status")
@command
async def status(as_json: bool = JSON_OPTION) -> None:
    """Where the database is and whether it is migrated.

    Example: cct-ledger db status --json
    """
    s = settings()
    url = await resolve_database_url(s)
    db = await Database.connect(url, min_size=1, max_size=1)
    try:
        async with db.connection() as conn:
            current = await migrate.current_revision(conn)
            version = await conn.fetchval("show server_version")
    finally:
        await db.close()
    info = {
        "database": "DATABASE_URL" if s.database_url else f"embedded ({embedded_server(s).root})",
        "server_version": version,
        "revision": current,
        "head": migrate.head_revision(),
        "migrated": current == migrate.head_revision(),
    }
    if as_json:
        print_json(info)
    else:
        for k, v in info.items():
            console.print(f"{k:>15}: {v}")


@app.command("start")
@command
async def start() -> None:
    """Start the embedded PostgreSQL (it keeps running for the server and other commands).

    Example: cct-ledger db start
    """
    s = settings()
    if s.database_url:
        console.print("DATABASE_URL is set: the embedded server is not used")
        return
    server = embedded_server(s)
    server.ensure_running()
    console.print(f"embedded PostgreSQL running in {server.root} (socket {server.socket_dir})")


@app.command("stop")
@command
async def stop() -> None:
    """Stop the embedded PostgreSQL.

    Example: cct-ledger db stop
    """
    server = embedded_server(settings())
    if not server.is_running():
        console.print("the embedded PostgreSQL is not running")
        return
    server.stop()
    console.print("embedded PostgreSQL stopped")


@app.command("url")
@command
async def url() -> None:
    """Print the database URL in use (starting the embedded server if needed), e.g. for psql.

    Example: psql "$(cct-ledger db url)"
    """
    print(await resolve_database_url(settings()))
