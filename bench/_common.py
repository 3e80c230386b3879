"""Shared helpers for the ledger benchmarks: the PostgreSQL to run on, setup, timing and output.

Each benchmark starts its own server unless ``DATABASE_URL`` is set:

* default: an embedded cluster with the *persistent* settings (``fsync`` on, ``synchronous_commit`` on:
  every commit reaches the disk), in a temporary folder that is removed at the end;
* ``--fast``: the ephemeral test settings (``fsync``, ``synchronous_commit`` and ``full_page_writes`` off);
* ``DATABASE_URL``: that server; a scratch database is created on it (the role needs CREATEDB), migrated,
  and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.postgres import migrate
from adapters.postgres.database import Database, asyncpg_dsn
from adapters.postgres.embedded import EmbeddedPostgres
from ledger.bulk import BulkTransfer, bulk_transfer

PAYMENT = 200_00  # Juntos pays S/ 200.00 per household per bimester


def quiet_logs() -> None:
    """Only warnings from the launcher and the ledger: the figures are the output."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def add_loop_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the client's event loop: the standard library's (default) or uvloop's (installed with uvicorn's "
        "standard extras, which `serve` runs on)",
    )


def run_main(main: Coroutine[Any, Any, None], loop: str = "asyncio") -> None:
    """Run the benchmark's coroutine on the chosen event loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fast",
        action="store_true",
        help="embedded server with the ephemeral test settings (fsync, synchronous_commit and full_page_writes "
        "off) instead of the durable ones; ignored when DATABASE_URL is set",
    )


@dataclass(frozen=True)
class Server:
    """Where a benchmark runs: the database URL and a description for the report."""

    url: str
    mode: str
    version: str


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(asyncpg_dsn(url))
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@contextlib.asynccontextmanager
async def bench_server(fast: bool) -> AsyncIterator[Server]:
    """A freshly migrated database on the chosen server; everything the benchmark made is removed after."""
    external = os.environ.get("DATABASE_URL")
    root: Path | None = None
    server: EmbeddedPostgres | None = None
    if external:
        maintenance, mode = _with_database(external, "postgres"), "DATABASE_URL"
    else:
        root = Path(tempfile.mkdtemp(prefix="cct-bench-"))
        server = EmbeddedPostgres(root=root, ephemeral=fast)
        maintenance = server.ensure_running()
        mode = "embedded, fast (fsync off)" if fast else "embedded, durable (fsync on)"
    name = f"cct_bench_{os.getpid()}"
    try:
        conn = await asyncpg.connect(maintenance)
        try:
            await conn.execute(f'drop database if exists "{name}"')
            await conn.execute(f'create database "{name}"')
            version = await conn.fetchval("show server_version")
        finally:
            await conn.close()
        url = _with_database(maintenance, name)
        await migrate.upgrade(url)
        try:
            yield Server(url, mode, version)
        finally:
            conn = await asyncpg.connect(maintenance)
            try:
                await conn.execute(f'drop database if exists "{name}" with (force)')
            finally:
                await conn.close()
    finally:
        if server is not None and root is not None:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
            if server.socket_dir.parent != root:
                shutil.rmtree(server.socket_dir, ignore_errors=True)


async def open_accounts(
    conn: Any, prefix: str, count: int, *, normal: int = 1, no_overdraft: bool = False, hot: bool = False
) -> list[int]:
    """Open ``count`` accounts ``<prefix>-000000``... in one statement; returns their ids in code order.

    Setup only (not measured): a set-based insert, as a migration of a registry would do it.
    """
    rows = await conn.fetch(
        """insert into ledger.accounts (code, currency, normal_balance, no_overdraft, hot)
           select $1 || '-' || lpad(i::text, 7, '0'), 'PEN', $3, $4, $5 from generate_series(0, $2 - 1) i
           order by 1
           returning id""",
        prefix,
        count,
        normal,
        no_overdraft,
        hot,
    )
    return sorted(r["id"] for r in rows)


def chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


async def run_chunks(db: Database, rows: Sequence[BulkTransfer], chunk: int, workers: int, key: str) -> float:
    """Post ``rows`` with the set-based path: chunks of ``chunk``, ``workers`` at a time, each chunk its own
    transaction on its own connection. Returns the wall seconds."""
    queue: asyncio.Queue[tuple[int, Sequence[BulkTransfer]]] = asyncio.Queue()
    for item in enumerate(chunks(rows, chunk)):
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            index, part = queue.get_nowait()
            async with db.unit_of_work() as conn:
                await bulk_transfer(conn, list(part), key=f"{key}-{index}", currency="PEN", description=key)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started


@dataclass
class BulkLedger:
    """A ledger built by :func:`build_bulk_ledger`: one hot fund paying ``households`` households."""

    fund_id: int
    household_ids: list[int]
    setup_seconds: float


async def build_bulk_ledger(db: Database, households: int, amount: int = PAYMENT, reserve: int = 0) -> BulkLedger:
    """Open the treasury, the hot program fund and ``households`` household accounts; fund the fund with
    ``households * amount + reserve``.

    Returns what the payment run needs; the payment run itself is :func:`run_chunks`.
    """
    started = time.perf_counter()
    async with db.unit_of_work() as conn:
        (treasury,) = await open_accounts(conn, "treasury", 1, normal=-1)
        (fund,) = await open_accounts(conn, "fund", 1, normal=1, no_overdraft=True, hot=True)
        household_ids = await open_accounts(conn, "hh", households, normal=1, no_overdraft=True)
        await bulk_transfer(
            conn, [BulkTransfer(fund, treasury, households * amount + reserve)], key="funding", currency="PEN"
        )
        await conn.execute("analyze ledger.accounts")
    return BulkLedger(fund, household_ids, time.perf_counter() - started)


def _proc_cpu(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its children it has waited for), from ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return int(fields[1]), ticks / os.sysconf("SC_CLK_TCK")


async def server_cpu_seconds(conn: Any) -> float | None:
    """CPU time used so far by the PostgreSQL server ``conn`` is on: its postmaster, every live child (backends,
    writers) and the children that have exited (counted in the postmaster's). None if it is not on this
    machine or ``/proc`` cannot tell."""
    return _server_cpu(await conn.fetchval("select pg_backend_pid()"))


def _server_cpu(backend: int) -> float | None:
    mine = _proc_cpu(backend)
    if mine is None:
        return None
    postmaster = mine[0]
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _proc_cpu(int(entry.name))
            if found is not None and (found[0] == postmaster or int(entry.name) == postmaster):
                total += found[1]
    return total


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def describe(server: Server) -> str:
    load = os.getloadavg()[0]
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL {server.version} ({server.mode}), load average {load:.2f}"
    )


def print_summary(summary: dict[str, Any]) -> None:
    """The last line of every benchmark: its figures as one JSON object, for scripts."""
    summary["load_average"] = round(os.getloadavg()[0], 2)
    print(orjson.dumps(summary).decode())
