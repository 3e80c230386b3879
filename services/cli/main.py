"""The ``cct-ledger`` command line: one Typer app, one module per group of commands."""

from __future__ import annotations

import typer

from services.cli import bank_sim, db, ledger_cmds, serve, tokens

app = typer.Typer(
    name="cct-ledger",
    help="cct-ledger: the payment and savings ledger of a conditional cash transfer program.\n\n"
    "Settings come from the environment (see the README); with no DATABASE_URL an embedded PostgreSQL is "
    "started in CCT_DATA_DIR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.command("serve")(serve.serve)
app.add_typer(tokens.app, name="token")
app.add_typer(ledger_cmds.accounts, name="accounts")
app.add_typer(ledger_cmds.transfer, name="transfer")
app.command("verify")(ledger_cmds.verify)
app.command("seal")(ledger_cmds.seal)
app.add_typer(ledger_cmds.periods, name="periods")
app.command("bank-sim")(bank_sim.bank_sim)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
