"""The ``cct-ledger`` command line: one Typer app, one module per group of commands."""

from __future__ import annotations

import typer

from services.cli import bank_sim, db, demo, ledger_cmds, programs_cmds, registry_cmds, runs_cmds, serve, tokens

app = typer.Typer(
    name="cct-ledger",
    help="cct-ledger: the payment and savings ledger of a conditional cash transfer program.\n\n"
    "Settings come from the environment (see the README); with no DATABASE_URL an embedded PostgreSQL is "
    "started in CCT_DATA_DIR.\n\n"
    "Example: cct-ledger demo   (the main job end to end on a synthetic registry)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("demo")(demo.demo)
app.add_typer(db.app, name="db")
app.command("serve")(serve.serve)
app.add_typer(tokens.app, name="token")
app.add_typer(ledger_cmds.accounts, name="accounts")
app.add_typer(ledger_cmds.transfer, name="transfer")
app.command("verify")(ledger_cmds.verify)
app.command("seal")(ledger_cmds.seal)
app.add_typer(ledger_cmds.periods, name="periods")
app.add_typer(runs_cmds.app, name="runs")
app.command("bank-sim")(bank_sim.bank_sim)
app.add_typer(programs_cmds.app, name="programs")
app.add_typer(registry_cmds.households, name="households")
app.add_typer(registry_cmds.compliance, name="compliance")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
