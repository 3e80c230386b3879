"""Benchmark: seal the audit chain and verify the whole ledger, over the ledger the bulk benchmark builds.

Builds the payment run of ``bench/ledger_bulk.py`` (N households paid from one hot fund, set-based chunks),
then times ``ledger.audit.seal`` (hash every transfer into blocks) and ``ledger.audit.verify`` (recompute the
chain, every balance, every running balance and the trial balance). ``--existing`` skips the build and runs
on the database ``DATABASE_URL`` names, as it is (sealing writes its blocks there). Prints seal and verify
seconds, and a one-line JSON summary last.

    .venv/bin/python bench/ledger_verify.py                             # 1,000,000 transfers, durable server
    .venv/bin/python bench/ledger_verify.py --transfers 20000 --fast
    DATABASE_URL=postgresql://user@host/ledger .venv/bin/python bench/ledger_verify.py --existing
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from _common import (
    PAYMENT,
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
from ledger import audit
from ledger.bulk import BulkTransfer


async def run(args: argparse.Namespace) -> None:
    quiet_logs()
    if args.existing:
        url = os.environ.get("DATABASE_URL")
        if not url:
            raise SystemExit("--existing needs DATABASE_URL naming the ledger database")
        db = await Database.connect(url, max_size=2)
        try:
            version = await db.pool.fetchval("show server_version")
        finally:
            await db.close()
        await measure(Server(asyncpg_dsn(url), "DATABASE_URL, existing ledger", version), args, build=False)
        return
    async with bench_server(args.fast) as server:
        await measure(server, args, build=True)


async def measure(server: Server, args: argparse.Namespace, build: bool) -> None:
    db = await Database.connect(server.url, min_size=1, max_size=max(2, args.workers + 1))
    try:
        build_seconds = 0.0
        if build:
            started = time.perf_counter()
            built = await build_bulk_ledger(db, args.transfers)
            rows = [BulkTransfer(h, built.fund_id, PAYMENT) for h in built.household_ids]
            await run_chunks(db, rows, args.chunk, args.workers, "payment")
            build_seconds = time.perf_counter() - started
        async with db.connection() as conn, db.connection() as helper:
            await conn.execute("analyze")
            started = time.perf_counter()
            sealed = await audit.seal(conn, block_size=args.block_size)
            seal_seconds = time.perf_counter() - started
            started = time.perf_counter()
            report = await audit.verify(conn, helper)
            verify_seconds = time.perf_counter() - started
            postings = await conn.fetchval("select count(*) from ledger.postings")
    finally:
        await db.close()
    if not report.ok:
        raise SystemExit(f"verify found problems: {report.problems[:5]}")

    print(describe(server))
    print(f"ledger: {report.transfers:,} transfers, {postings:,} postings (built in {build_seconds:.2f} s)")
    print(
        f"  seal:   {seal_seconds:8.2f} s  {sealed.transfers:,} transfers in {sealed.blocks} blocks of "
        f"{args.block_size:,}  ({sealed.transfers / seal_seconds if seal_seconds else 0:,.0f} transfers/s)"
    )
    print(
        f"  verify: {verify_seconds:8.2f} s  ok={report.ok}, {report.sealed:,} sealed, {report.blocks} blocks "
        f"({report.transfers / verify_seconds:,.0f} transfers/s)"
    )
    print_summary(
        {
            "bench": "ledger_verify",
            "server": server.mode,
            "postgres": server.version,
            "transfers": report.transfers,
            "postings": postings,
            "build_s": round(build_seconds, 3),
            "seal_s": round(seal_seconds, 3),
            "sealed": sealed.transfers,
            "blocks": report.blocks,
            "verify_s": round(verify_seconds, 3),
            "ok": report.ok,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transfers", type=int, default=1_000_000, help="transfers to build (default 1,000,000)")
    parser.add_argument("--chunk", type=int, default=50_000, help="bulk chunk size for the build (default 50,000)")
    parser.add_argument("--workers", type=int, default=2, help="bulk chunks at a time for the build (default 2)")
    parser.add_argument(
        "--block-size", type=int, default=audit.DEFAULT_BLOCK_SIZE, help="transfers per sealed block (default 10,000)"
    )
    parser.add_argument("--existing", action="store_true", help="seal and verify DATABASE_URL's ledger as it is")
    add_server_args(parser)
    args = parser.parse_args()
    if args.transfers < 1 or args.chunk < 1 or args.workers < 1 or args.block_size < 1:
        parser.error("sizes must be positive")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
