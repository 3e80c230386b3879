"""Benchmark: a payment run on the set-based path, N two-posting transfers from one hot fund to N households.

Opens the treasury, the program fund (``hot=True``, ``no_overdraft``) and N household accounts (setup, set-based,
not measured), funds the fund, then pays every household S/ 200.00 with ``ledger.bulk.bulk_transfer`` in
chunks (default 50,000), ``--workers`` chunks at a time, each chunk its own transaction on its own connection.
The same rows are then streamed with a raw ``COPY`` into a plain table, in the same chunks and workers: the
floor no ledger can beat on this server. Prints seconds and rows/s for each, and a one-line JSON summary last.

    .venv/bin/python bench/ledger_bulk.py                               # 1,000,000 households, durable server
    .venv/bin/python bench/ledger_bulk.py --transfers 20000 --chunk 5000 --workers 2 --fast
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

from _common import (
    PAYMENT,
    Server,
    add_server_args,
    bench_server,
    build_bulk_ledger,
    chunks,
    describe,
    print_summary,
    quiet_logs,
    run_chunks,
)

from adapters.postgres.database import Database
from ledger.bulk import BulkTransfer


async def copy_floor(db: Database, rows: Sequence[BulkTransfer], chunk: int, workers: int) -> float:
    """COPY the same rows into a plain (logged) table, chunk by chunk, one transaction each."""
    async with db.connection() as conn:
        await conn.execute(
            "create table bench_copy_floor (ord int, debit_id bigint, credit_id bigint, amount bigint, metadata text)"
        )
    queue: asyncio.Queue[tuple[int, Sequence[BulkTransfer]]] = asyncio.Queue()
    for item in enumerate(chunks(rows, chunk)):
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            index, part = queue.get_nowait()
            records = [
                (index * chunk + i, r.debit_account_id, r.credit_account_id, r.amount, None) for i, r in enumerate(part)
            ]
            async with db.unit_of_work() as conn:
                await conn.copy_records_to_table("bench_copy_floor", records=records)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    quiet_logs()
    async with bench_server(args.fast) as server:
        await measure(server, args)


async def measure(server: Server, args: argparse.Namespace) -> None:
    n = args.transfers
    db = await Database.connect(server.url, min_size=args.workers, max_size=args.workers + 1)
    try:
        built = await build_bulk_ledger(db, n)
        rows = [BulkTransfer(h, built.fund_id, PAYMENT) for h in built.household_ids]
        ledger_seconds = await run_chunks(db, rows, args.chunk, args.workers, "payment")
        floor_seconds = await copy_floor(db, rows, args.chunk, args.workers)
        async with db.connection() as conn:
            check = await conn.fetchrow(
                """select (select posted from ledger.accounts where id = $1) as fund,
                          (select count(*) from ledger.accounts where code like 'hh-%' and posted = $2) as paid,
                          (select count(*) from ledger.transfers where description = 'payment') as transfers,
                          (select count(*) from ledger.postings) as postings""",
                built.fund_id,
                PAYMENT,
            )
        if (check["fund"], check["paid"], check["transfers"]) != (0, n, n):
            raise SystemExit(f"ledger check failed: {dict(check)}")
    finally:
        await db.close()

    print(describe(server))
    print(f"bulk payment run: {n:,} transfers, chunks of {args.chunk:,}, {args.workers} workers")
    print(f"  setup (open {n + 2:,} accounts, fund the program):  {built.setup_seconds:8.2f} s")
    print(
        f"  ledger bulk_transfer ({2 * n:,} postings):      {ledger_seconds:8.2f} s  "
        f"{n / ledger_seconds:12,.0f} transfers/s"
    )
    print(f"  raw COPY of the same rows (floor):            {floor_seconds:8.2f} s  {n / floor_seconds:12,.0f} rows/s")
    print(f"  ledger / floor: {ledger_seconds / floor_seconds:.1f}x")
    print_summary(
        {
            "bench": "ledger_bulk",
            "server": server.mode,
            "postgres": server.version,
            "transfers": n,
            "chunk": args.chunk,
            "workers": args.workers,
            "setup_s": round(built.setup_seconds, 3),
            "ledger_s": round(ledger_seconds, 3),
            "ledger_transfers_per_s": round(n / ledger_seconds, 1),
            "copy_floor_s": round(floor_seconds, 3),
            "copy_floor_rows_per_s": round(n / floor_seconds, 1),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transfers", type=int, default=1_000_000, help="households paid (default 1,000,000)")
    parser.add_argument("--chunk", type=int, default=50_000, help="transfers per chunk (default 50,000)")
    parser.add_argument("--workers", type=int, default=2, help="chunks posted at a time (default 2)")
    add_server_args(parser)
    args = parser.parse_args()
    if args.transfers < 1 or args.chunk < 1 or args.workers < 1:
        parser.error("--transfers, --chunk and --workers must be positive")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
