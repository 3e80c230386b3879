"""``cct-ledger bank-sim``: run the simulated Banco de la Nación over HTTP."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import read_settings


class FaultsChoice(enum.StrEnum):
    NONE = "none"
    FLAKY = "flaky"
    HOSTILE = "hostile"


def bank_sim(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8100,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the simulated world (behaviour, faults). Default: the state folder's, else 0."),
    ] = None,
    faults: Annotated[
        FaultsChoice,
        typer.Option(case_sensitive=False, help="Fault profile: none, flaky (5xx, 429, latency) or hostile."),
    ] = FaultsChoice.NONE,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of the bank's state (journal and snapshots). Default: <CCT_DATA_DIR>/bank-sim."),
    ] = None,
    in_memory: Annotated[bool, typer.Option("--in-memory", help="Keep no state on disk.")] = False,
    webhook_url: Annotated[
        str | None, typer.Option(help="POST signed events (settled items, batches) to this URL.")
    ] = None,
    webhook_secret: Annotated[
        str | None, typer.Option(help="HMAC secret for webhook signatures. Default: CCT_BANK_WEBHOOK_SECRET.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="Bearer token the bank requires. Default: CCT_BANK_API_KEY; empty accepts any token."),
    ] = None,
    item_limit: Annotated[
        int | None,
        typer.Option(min=1, help="Per-item amount limit in céntimos for a new world (default 500000, S/ 5,000)."),
    ] = None,
    auto_advance: Annotated[
        int,
        typer.Option(
            min=0,
            help="The most simulated seconds a batch lookup moves the clock, towards the next settlement due "
            "(0: only /sim/clock/advance).",
        ),
    ] = 300,
) -> None:
    """Run the simulated Banco de la Nación (the bank interface of docs/bank-api.md) over HTTP.

    State survives a restart: a journal plus snapshots in the state folder.

    Simulator-only controls live under /sim: advance the clock, open accounts in bulk, fund the program.

    Example: cct-ledger bank-sim --port 8100 --seed 7 --faults flaky
    """
    import uvicorn

    from adapters.bank.simulator import FileStore, MemoryStore, SimStateMismatch, create_app
    from services.logs import configure_logging

    settings = read_settings()
    configure_logging(settings.log_level, settings.log_format)
    folder = state_dir or settings.data_dir / "bank-sim"
    secret = webhook_secret if webhook_secret is not None else settings.bank_webhook_secret
    if webhook_url and not secret:
        raise typer.BadParameter("a webhook URL needs a secret (--webhook-secret or CCT_BANK_WEBHOOK_SECRET)")
    store = MemoryStore() if in_memory else FileStore(folder)
    try:
        app = create_app(
            store,
            seed=seed,
            faults=faults.value,
            api_key=api_key if api_key is not None else settings.bank_api_key,
            webhook_target=webhook_url,
            webhook_secret=secret,
            item_amount_limit=item_limit,
            auto_advance_seconds=auto_advance,
        )
    except SimStateMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None  # a refusal (the folder holds another world), not a usage error
    where = "memory" if in_memory else str(folder)
    typer.echo(f"simulated bank on http://{host}:{port} (faults {faults.value}, state {where}); Ctrl-C to stop")
    # log_config=None: uvicorn's records go to the root handler, which masks personal data (services.logs)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning", log_config=None)
