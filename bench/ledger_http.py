"""Online transfers through HTTP: `POST /v1/transfers` with 16 concurrent clients, rate and latency.

The server is `cct-ledger serve` (uvicorn) in its own process(es) on the benchmark's database; the load comes
from this process (a minimal HTTP/1.1 keep-alive client on asyncio streams, one connection per client:
httpx spends more CPU per request than the server does, and on two cores that CPU is taken from the server),
so on a 2-core machine the client, the server and PostgreSQL share the two cores: the figure is a floor for
a real deployment. Every transfer is
checked afterwards (count and trial balance).

    .venv/bin/python bench/ledger_http.py                # durable embedded PostgreSQL, 16 clients, 3 runs
    .venv/bin/python bench/ledger_http.py --workers 2    # two server processes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx
import orjson
from _common import (
    add_server_args,
    bench_server,
    build_bulk_ledger,
    describe,
    percentile,
    print_summary,
    quiet_logs,
    run_chunks,
)

from adapters.postgres.database import Database
from ledger.bulk import BulkTransfer
from services.auth.service import create_token

START_BALANCE = 1_000_000_00


@dataclass
class Run:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CCT_LOG_LEVEL": "WARNING",
        "CCT_SEAL_INTERVAL_SECONDS": "0",
        "CCT_EXPIRY_SWEEP_INTERVAL_SECONDS": "0",
        "CCT_DB_POOL_SIZE": "20",
    }
    cmd = [sys.executable, "-m", "services.cli.main", "serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready")


class KeepAlive:
    """One HTTP/1.1 keep-alive connection that posts JSON and reads the status and body (Content-Length)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, key: str) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        request = f"POST {path} HTTP/1.1\r\n{self.head}Idempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(request.encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def one_run(port: int, token: str, codes: list[str], total: int, clients: int, tag: str, seed: int) -> Run:
    run = Run()
    split = [total // clients + (1 if n < total % clients else 0) for n in range(clients)]

    async def client(number: int, count: int) -> None:
        rng = random.Random(seed * 1000 + number)
        http = KeepAlive(port, token)
        try:
            for i in range(count):
                a, b = rng.sample(codes, 2)
                body = orjson.dumps(
                    {"postings": [{"account": a, "debit": 1}, {"account": b, "credit": 1}], "currency": "PEN"}
                )
                started = time.perf_counter()
                status, _ = await http.post("/v1/transfers", body, f"{tag}-{number}-{i}")
                run.latencies.append((time.perf_counter() - started) * 1000)
                if status != 201:
                    run.errors += 1
        finally:
            await http.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(n, c) for n, c in enumerate(split)))
    run.seconds = time.perf_counter() - started
    return run


async def run(args: argparse.Namespace) -> None:
    quiet_logs()
    async with bench_server(args.fast) as server:
        db = await Database.connect(server.url, max_size=4)
        try:
            built = await build_bulk_ledger(db, args.accounts, amount=START_BALANCE, reserve=START_BALANCE)
            rows = [BulkTransfer(h, built.fund_id, START_BALANCE) for h in built.household_ids]
            await run_chunks(db, rows, 50_000, 1, "setup")
            async with db.connection() as conn:
                token, _ = await create_token(conn, "bench", "operator")
        finally:
            await db.close()
        codes = [f"hh-{i:07d}" for i in range(args.accounts)]
        port = _port()
        proc = start_server(server.url, port, args.workers)
        try:
            await one_run(port, token, codes, args.warmup, args.clients, "warmup", 0)
            runs = []
            for r in range(args.runs):
                result = await one_run(port, token, codes, args.transfers, args.clients, f"run{r}", r + 1)
                runs.append(result)
                print(
                    f"  run {r + 1}: {len(result.latencies):,} transfers in {result.seconds:.2f} s = "
                    f"{result.rate:,.0f}/s, "
                    f"p50 {percentile(result.latencies, 50):.2f} ms, p99 {percentile(result.latencies, 99):.2f} ms, "
                    f"errors {result.errors}",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        db = await Database.connect(server.url, max_size=2)
        try:
            async with db.connection() as conn:
                check = await conn.fetchrow(
                    """select count(*) filter (where actor = 'bench') as online,
                              (select coalesce(sum(posted * normal_balance), 0) from ledger.accounts) as net
                         from ledger.transfers"""
                )
        finally:
            await db.close()
        expected = args.warmup + args.runs * args.transfers - sum(x.errors for x in runs)
        if check["online"] != expected or check["net"] != 0:
            raise SystemExit(f"ledger check failed: {dict(check)}, expected {expected} transfers")
        median = sorted(runs, key=lambda x: x.rate)[len(runs) // 2]
        print(describe(server))
        print(f"HTTP transfers: {args.clients} clients, {args.workers} server worker(s), {args.accounts:,} accounts")
        print(
            f"  median run: {median.rate:,.0f} transfers/s, p50 {percentile(median.latencies, 50):.2f} ms, "
            f"p99 {percentile(median.latencies, 99):.2f} ms"
        )
        print_summary(
            {
                "bench": "ledger_http",
                "server": server.mode,
                "postgres": server.version,
                "clients": args.clients,
                "workers": args.workers,
                "runs": [round(x.rate, 1) for x in runs],
                "transfers_per_s": round(median.rate, 1),
                "median_rate_of_runs": round(statistics.median(x.rate for x in runs), 1),
                "p50_ms": round(percentile(median.latencies, 50), 3),
                "p99_ms": round(percentile(median.latencies, 99), 3),
                "errors": sum(x.errors for x in runs),
            }
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transfers", type=int, default=20_000, help="transfers per run (default 20,000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (default 16)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts to pick pairs from (default 10,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median run is reported (default 3)")
    parser.add_argument("--warmup", type=int, default=2_000, help="transfers before measuring (default 2,000)")
    add_server_args(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
