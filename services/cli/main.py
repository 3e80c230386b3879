"""The ``cct-ledger`` command line: one Typer app, one module per group of commands."""

from __future__ import annotations

import typer

from services.cli import bank_sim

app = typer.Typer(
    name="cct-ledger",
    help="cct-ledger: the payment and savings ledger of a conditional cash transfer program.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("bank-sim")(bank_sim.bank_sim)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
