"""Benchmark: what PostgreSQL itself does on this machine, with a client that costs next to nothing.

``pgbench`` (C, from the same PostgreSQL binaries as the embedded server) drives, 8 clients for
``--seconds`` each, on the benchmark's durable server and database:

1. ``select 1`` (the round trip and nothing else);
2. ``ledger.create_transfer``: one online transfer per transaction, with its idempotency key, between
   random pairs of 10,000 funded accounts (what ``bench/ledger_online.py`` does from Python);
3. ``ledger.create_transfers``: the same transfers eight per call (what a full group of
   ``ledger.groups`` writes);
4. pgbench's own TPC-B-like transaction (three updates, an insert and a select, scale 10), last.

Each starts after a checkpoint. It prints transactions/s and transfers/s of each, and the CPU seconds
PostgreSQL's processes used per transfer, so the Python benchmarks can be read against the database's own
ceiling. A one-line JSON summary comes last.

    .venv/bin/python bench/pg_floor.py
    .venv/bin/python bench/pg_floor.py --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
from _common import (
    Server,
    add_server_args,
    bench_server,
    build_bulk_ledger,
    describe,
    print_summary,
    quiet_logs,
    run_chunks,
)

from adapters.postgres.database import Database, asyncpg_dsn
from adapters.postgres.embedded import find_binaries
from ledger.bulk import BulkTransfer

ACCOUNTS = 10_000
START_BALANCE = 1_000_000_00

_PAIR = r"""\set a random(0, 9999)
\set b random(1, 9999)
\set amount random(1, 10000)
\set k random(1, 1000000000000)
"""
_CODES = "'hh-' || lpad((:a)::text, 7, '0'), 'hh-' || lpad((((:a)::int + (:b)::int) % 10000)::text, 7, '0')"

SINGLE = (
    _PAIR
    + f"""select ledger.create_transfer('floor-' || :client_id || '-' || :k, '\\x00'::bytea, false,
    array[{_CODES}], array[(:amount)::bigint, -(:amount)::bigint], 'PEN', null, null, '', '{{}}'::jsonb, 'floor');
"""
)

GROUP = r"""\set k random(1, 1000000000000)
with g as materialized (
    select i, (floor(random() * 10000))::int as a, (1 + floor(random() * 9999))::int as b,
           (1 + floor(random() * 10000))::bigint as amount
      from generate_series(1, 8) i
), legs as materialized (
    select g.i, l.leg, 'hh-' || lpad(case l.leg when 1 then g.a else (g.a + g.b) % 10000 end::text, 7, '0') as code,
           case l.leg when 1 then g.amount else -g.amount end as amount
      from g, (values (1::smallint), (2::smallint)) l(leg)
)
select ledger.create_transfers(
    array(select 'floor-g-' || :client_id || '-' || :k || '-' || i from g order by i),
    array(select '\x00'::bytea from g), array(select false from g), array(select 'PEN'::char(3) from g),
    array(select null::timestamptz from g), array(select null::timestamptz from g), array(select ''::text from g),
    array(select '{}'::jsonb from g), array(select 'floor'::text from g),
    array(select i::int from legs order by i, leg), array(select leg from legs order by i, leg),
    array(select code from legs order by i, leg), array(select amount from legs order by i, leg)) is not null;
"""


def _postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process of this machine, ended backends included (``/proc``: their
    time is added to the postmaster's children's when they end)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(") ")
        if name.endswith("(postgres"):
            fields = rest.split()
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _pgbench_env(url: str) -> tuple[dict[str, str], str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    env = {**os.environ, "PGHOST": query.get("host", [parts.hostname or ""])[0], "PGPORT": str(parts.port or 5432)}
    env["PGUSER"] = parts.username or query.get("user", ["postgres"])[0]
    return env, parts.path.lstrip("/")


async def _settle(url: str) -> None:
    """A checkpoint, so that no measurement pays for writing the previous one's pages.

    Neither a vacuum nor an analyse: either records the empty ``ledger.idempotency_keys`` as empty, and the
    function's generic plan, made once per session, then scans the table instead of its index until
    autovacuum analyses it again (measured: 730 transfers/s instead of 1,600)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("checkpoint")
    finally:
        await conn.close()


def _pgbench_init(bindir: Path, url: str) -> None:
    env, database = _pgbench_env(url)
    out = subprocess.run(
        [str(bindir / "pgbench"), "-i", "-s", "10", "-q", database],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"pgbench -i failed: {out.stderr.strip()[-600:]}")


def _pgbench(bindir: Path, url: str, args: list[str]) -> tuple[float, int, float]:
    """Run pgbench; returns (transactions/s, transactions, PostgreSQL CPU seconds)."""
    env, database = _pgbench_env(url)
    before = _postgres_cpu()
    out = subprocess.run(
        [str(bindir / "pgbench"), *args, database], env=env, capture_output=True, text=True, check=False
    )
    cpu = _postgres_cpu() - before
    if out.returncode != 0:
        raise SystemExit(f"pgbench failed: {out.stderr.strip()[-600:]}")
    tps = re.search(r"tps = ([0-9.]+)", out.stdout)
    done = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if tps is None or done is None or (failed and int(failed.group(1))):
        raise SystemExit(f"pgbench: unexpected output:\n{out.stdout[-800:]}")
    return float(tps.group(1)), int(done.group(1)), cpu


async def run(args: argparse.Namespace) -> None:
    quiet_logs()
    async with bench_server(args.fast) as server:
        await measure(server, args)


async def measure(server: Server, args: argparse.Namespace) -> None:
    db = await Database.connect(server.url, min_size=1, max_size=4)
    try:
        built = await build_bulk_ledger(db, ACCOUNTS, amount=START_BALANCE, reserve=START_BALANCE)
        await run_chunks(
            db, [BulkTransfer(h, built.fund_id, START_BALANCE) for h in built.household_ids], 50_000, 1, "setup"
        )
    finally:
        await db.close()
    bindir = find_binaries(os.environ.get("PG_BINDIR")).bindir
    common = ["-n", "-c", str(args.clients), "-j", "2", "-T", str(args.seconds), "-M", "prepared"]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scripts = {}
        for name, text in (("select1", "select 1;\n"), ("single", SINGLE), ("group", GROUP)):
            scripts[name] = Path(tmp) / f"{name}.sql"
            scripts[name].write_text(text)
        _pgbench_init(bindir, server.url)
        runs = [
            ("select 1", ["-f", str(scripts["select1"])], 0),
            ("ledger.create_transfer, 1 a transaction", ["-f", str(scripts["single"])], 1),
            ("ledger.create_transfers, 8 a call", ["-f", str(scripts["group"])], 8),
            ("TPC-B-like (pgbench's own)", ["-b", "tpcb-like"], 0),
        ]
        print(describe(server))
        print(f"pgbench, {args.clients} clients, {args.seconds} s each, prepared statements")
        for label, extra, per in runs:
            await _settle(server.url)
            tps, done, cpu = _pgbench(bindir, server.url, common + extra)
            line = f"  {label}: {tps:,.0f} transactions/s"
            if per:
                transfers = done * per
                line += f" = {tps * per:,.0f} transfers/s, PostgreSQL CPU {cpu / transfers * 1e6:,.0f} µs a transfer"
                results[label] = {
                    "tps": round(tps, 1),
                    "transfers_per_s": round(tps * per, 1),
                    "cpu_us": round(cpu / transfers * 1e6),
                }
            else:
                line += f", PostgreSQL CPU {cpu / done * 1e6:,.0f} µs a transaction"
                results[label] = {"tps": round(tps, 1), "cpu_us": round(cpu / done * 1e6)}
            print(line, flush=True)
    print_summary(
        {"bench": "pg_floor", "server": server.mode, "postgres": server.version, "clients": args.clients, **results}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    parser.add_argument("--seconds", type=int, default=20, help="seconds of each measurement (default 20)")
    add_server_args(parser)
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
