"""``cct-ledger serve``: the HTTP API."""

from __future__ import annotations

import typer
import uvicorn

from services.cli.common import settings


def serve(
    host: str = typer.Option(None, "--host", help="Interface to bind (default: CCT_HOST or 127.0.0.1)."),
    port: int = typer.Option(
        None, "--port", min=0, max=65535, help="Port (default: CCT_PORT or 8000; 0 picks a free one)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (metrics are per process)."),
) -> None:
    """Run the HTTP API (OpenAPI at /docs, health at /healthz and /readyz, metrics at /metrics).

    Example: cct-ledger serve --host 0.0.0.0 --port 8000
    """
    s = settings()
    uvicorn.run(
        "services.api.app:serve_app",
        factory=True,
        host=host or s.host,
        port=s.port if port is None else port,
        workers=workers,
        log_level=s.log_level.lower(),
        log_config=None,  # uvicorn's records go to the root handler, which masks personal data (services.logs)
        access_log=False,
        proxy_headers=True,
    )
