"""Benchmark: online transfers through the Python API, one transfer per database transaction.

N clients (default 8), each on its own pooled connection in autocommit mode, send two-posting transfers
between uniformly random pairs of accounts (default 10,000 accounts, all ``no_overdraft`` and funded so no
transfer is refused), each with its own idempotency key. ``--hot`` makes every transfer touch one shared
account (the program fund, ``hot=True``): half pay out of it, half pay back into it. Prints transfers/s and
the p50/p99 latency of each run, then the median run, and a one-line JSON summary last.

``--grouped`` sends the same transfers through :class:`ledger.groups.TransferGroups` (what ``POST
/v1/transfers`` uses): each client still waits for its own transfer, but the transfers of clients waiting at
the same moment are written in one statement and one commit, so it is not one transfer per transaction.

    .venv/bin/python bench/ledger_online.py                          # durable embedded server
    .venv/bin/python bench/ledger_online.py --hot --clients 16
    .venv/bin/python bench/ledger_online.py --fast --transfers 20000 --runs 1
    .venv/bin/python bench/ledger_online.py --grouped
    .venv/bin/python bench/ledger_online.py --loop uvloop            # the client on uvloop's event loop
    DATABASE_URL=postgresql://user@host/postgres .venv/bin/python bench/ledger_online.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import time
from dataclasses import dataclass

from _common import (
    Server,
    add_loop_arg,
    add_server_args,
    bench_server,
    build_bulk_ledger,
    describe,
    percentile,
    print_summary,
    quiet_logs,
    run_chunks,
    run_main,
)

from adapters.postgres.database import Database
from ledger.bulk import BulkTransfer
from ledger.engine import Ledger
from ledger.groups import TransferGroups
from ledger.models import PostingSpec, TransferRequest

START_BALANCE = 1_000_000_00  # enough that no transfer of the run is refused


@dataclass
class Run:
    seconds: float
    transfers: int
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


async def one_run(
    db: Database,
    codes: list[str],
    hot: str | None,
    per_client: list[int],
    tag: str,
    seed: int,
    groups: TransferGroups | None = None,
) -> Run:
    latencies: list[float] = []

    async def client(number: int, count: int) -> None:
        rng = random.Random(f"{seed}-{number}")
        async with contextlib.AsyncExitStack() as stack:
            if groups is None:
                conn = await stack.enter_async_context(db.connection())
                ledger = Ledger(conn, actor=f"bench-{number}")
            for i in range(count):
                if hot is None:
                    debit, credit = rng.sample(codes, 2)
                else:
                    other = rng.choice(codes)
                    debit, credit = (hot, other) if rng.random() < 0.5 else (other, hot)
                amount = rng.randint(1, 100_00)
                request = TransferRequest((PostingSpec(debit, debit=amount), PostingSpec(credit, credit=amount)), "PEN")
                started = time.perf_counter()
                if groups is None:
                    await ledger.transfer(request, f"{tag}-{number}-{i}")
                else:
                    await groups.transfer(request, f"{tag}-{number}-{i}", f"bench-{number}")
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(n, c) for n, c in enumerate(per_client)))
    return Run(time.perf_counter() - started, sum(per_client), latencies)


async def run(args: argparse.Namespace) -> None:
    quiet_logs()
    async with bench_server(args.fast) as server:
        await measure(server, args)


async def measure(server: Server, args: argparse.Namespace) -> None:
    db = await Database.connect(server.url, min_size=args.clients, max_size=args.clients + 2)
    try:
        # Setup (not measured): the accounts, funded with one set-based chunk from the program fund.
        built = await build_bulk_ledger(db, args.accounts, amount=START_BALANCE, reserve=START_BALANCE)
        rows = [BulkTransfer(h, built.fund_id, START_BALANCE) for h in built.household_ids]
        await run_chunks(db, rows, 50_000, 1, "setup")
        codes = [f"hh-{i:07d}" for i in range(args.accounts)]
        hot = "fund-0000000" if args.hot else None

        split = [
            args.transfers // args.clients + (1 if n < args.transfers % args.clients else 0)
            for n in range(args.clients)
        ]
        warmup = [max(1, args.warmup // args.clients)] * args.clients
        groups = TransferGroups(db.connection, max_items=args.group_max, workers=2) if args.grouped else None
        await one_run(db, codes, hot, warmup, "warmup", 0, groups)
        runs = []
        for r in range(args.runs):
            result = await one_run(db, codes, hot, split, f"run{r}", r + 1, groups)
            runs.append(result)
            print(
                f"  run {r + 1}: {result.transfers:,} transfers in {result.seconds:.2f} s = {result.rate:,.0f} "
                f"transfers/s, p50 {result.p(50):.2f} ms, p99 {result.p(99):.2f} ms",
                flush=True,
            )
        async with db.connection() as conn:
            report = await conn.fetchrow(
                """select count(*) filter (where actor like 'bench-%') as online,
                          (select coalesce(sum(posted * normal_balance), 0) from ledger.accounts) as net
                     from ledger.transfers"""
            )
        if groups is not None:
            st = groups.stats
            print(
                f"  groups: {st.groups:,} taken, {st.grouped:,} transfers written together "
                f"({st.grouped / max(1, st.together):.1f} a group), "
                f"{st.alone:,} alone, {st.fallbacks} groups fell back"
            )
        expected = sum(warmup) + args.runs * args.transfers
        if report["online"] != expected or report["net"] != 0:
            raise SystemExit(f"ledger check failed: {dict(report)}, expected {expected} online transfers")
    finally:
        await db.close()

    median = sorted(runs, key=lambda x: x.rate)[len(runs) // 2]
    print(describe(server))
    print(
        f"online transfers: {args.clients} clients, {args.accounts:,} accounts, "
        f"{'hot (every transfer touches one account)' if args.hot else 'uniform random pairs'}, "
        f"{'grouped (ledger.groups)' if args.grouped else 'one transfer per transaction'}, "
        f"{args.transfers:,} transfers a run, {args.runs} runs, {args.loop} event loop"
    )
    print(
        f"  median run: {median.rate:,.0f} transfers/s, p50 {median.p(50):.2f} ms, p99 {median.p(99):.2f} ms "
        f"(rates of all runs: {', '.join(f'{x.rate:,.0f}' for x in runs)})"
    )
    print_summary(
        {
            "bench": "ledger_online",
            "server": server.mode,
            "postgres": server.version,
            "clients": args.clients,
            "accounts": args.accounts,
            "hot": args.hot,
            "grouped": args.grouped,
            "loop": args.loop,
            "transfers_per_run": args.transfers,
            "runs": [round(x.rate, 1) for x in runs],
            "transfers_per_s": round(median.rate, 1),
            "median_rate_of_runs": round(statistics.median(x.rate for x in runs), 1),
            "p50_ms": round(median.p(50), 3),
            "p99_ms": round(median.p(99), 3),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transfers", type=int, default=100_000, help="transfers per run (default 100,000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, one connection each (default 8)")
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts to pick pairs from (default 10,000)")
    parser.add_argument("--hot", action="store_true", help="every transfer touches one shared (hot) account")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median run is reported (default 3)")
    parser.add_argument(
        "--grouped", action="store_true", help="write concurrent clients' transfers together (ledger.groups)"
    )
    parser.add_argument(
        "--group-max", type=int, default=4, help="with --grouped: most transfers written together (default 4)"
    )
    parser.add_argument("--warmup", type=int, default=1_000, help="transfers before the first run (default 1,000)")
    add_server_args(parser)
    add_loop_arg(parser)
    args = parser.parse_args()
    if args.accounts < 2 or args.clients < 1 or args.runs < 1 or args.transfers < args.clients:
        parser.error("need at least 2 accounts, 1 client, 1 run and a transfer per client")
    run_main(run(args), args.loop)


if __name__ == "__main__":
    main()
