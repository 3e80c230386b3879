"""Benchmark: import a padron of N households (default 1,000,000), then import the same file again.

Generates N synthetic households (``services.registry.synthetic``) with Banco de la Nación CCIs (5% without
an account), writes the padron CSV, loads the shipped programs into a fresh database, and runs the same code
path as ``cct-ledger households import`` (validate, COPY into staging, set-based merge) twice: the first
import inserts every household, the second finds nothing changed; then it computes a period's entitlements
over the whole registry. Prints wall-clock and CPU seconds and rows per second of each import, the machine
and its load average (the machine may be shared).

    .venv/bin/python bench/registry_import.py                      # 1,000,000 households
    .venv/bin/python bench/registry_import.py --households 100000

Uses ``DATABASE_URL`` when set (a new database is created next to it), else a throwaway embedded PostgreSQL
(durable settings: fsync on).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.postgres import migrate
from adapters.postgres.database import Database, asyncpg_dsn
from adapters.postgres.embedded import EmbeddedPostgres
from services.programs.catalog import read_programs_file
from services.programs.service import entitlement_summary, load_programs
from services.registry.padron import CsvSource
from services.registry.service import import_households
from services.registry.synthetic import generate_households, synthetic_ccis, write_padron_csv


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(asyncpg_dsn(url))
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def run(households: int, seed: int, folder: Path, server_url: str) -> None:
    """Generate, write and import the padron twice on a new database; print the figures."""
    name = f"bench_registry_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'create database "{name}"')
    await admin.close()
    url = _with_database(server_url, name)
    try:
        await migrate.upgrade(url)
        started = time.perf_counter()
        generated = generate_households(households, seed)
        ccis = synthetic_ccis(generated, seed)
        padron = folder / "padron.csv"
        write_padron_csv(padron, generated, ccis)
        del generated, ccis
        print(
            f"generated and wrote {households:,} households in {time.perf_counter() - started:.1f} s "
            f"({padron.stat().st_size / 2**20:.0f} MB)"
        )
        db = await Database.connect(url, max_size=2)
        async with db.unit_of_work() as conn:
            await load_programs(conn, read_programs_file(), actor="bench")
        for attempt in ("first import", "same file again"):
            wall, cpu = time.perf_counter(), time.process_time()
            async with db.unit_of_work() as conn:
                report = await import_households(conn, CsvSource.from_path(padron), actor="bench")
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"{attempt}: {wall:.1f} s wall, {cpu:.1f} s CPU (client), {report.rows / wall:,.0f} rows/s - "
                f"inserted {report.inserted:,}, updated {report.updated:,}, unchanged {report.unchanged:,}, "
                f"rejected {report.rejected:,}"
            )
        wall = time.perf_counter()
        async with db.connection() as conn:
            summary = await entitlement_summary(conn, "JUNTOS", "2026-B5")
        wall = time.perf_counter() - wall
        print(
            f"entitlements of JUNTOS 2026-B5 over the registry (set-based SELECT, grouped): {wall:.1f} s - "
            f"{summary['payable_households']:,} payable, S/ {summary['payable_amount'] / 100:,.2f}"
        )
        await db.close()
    finally:
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


def main() -> None:
    """Parse the arguments, find or start a server, run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--households", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"load average before {os.getloadavg()[0]:.2f}"
    )
    server: EmbeddedPostgres | None = None
    external = os.environ.get("DATABASE_URL")
    if external:
        server_url = _with_database(external, "postgres")
    else:
        # A durable cluster (fsync on), like production; removed afterwards.
        server = EmbeddedPostgres(root=Path(tempfile.mkdtemp(prefix="cct-pg-bench-")))
        server.ensure_running()
        server_url = server.dsn()
    try:
        with tempfile.TemporaryDirectory(prefix="registry-bench-") as folder:
            asyncio.run(run(args.households, args.seed, Path(folder), server_url))
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.0f} MB; load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
