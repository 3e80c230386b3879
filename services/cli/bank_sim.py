"""``cct-ledger bank-sim``: run the simulated Banco de la Nación over HTTP."""

from __future__ import annotations

import typer


def bank_sim(port: int = typer.Option(8100, help="Port to listen on.")) -> None:
    """Run the simulated bank (placeholder until the simulator lands)."""
    raise typer.Exit(1)
