"""Benchmark: settle a payment round of N households through the simulated bank, in-process.

Opens N accounts in bulk, funds the program account, submits N/1000 credit batches of 1,000 items through
``BankClient`` in-process (``connect``: the ASGI app without a socket), advances the simulated clock until
every batch settled, reads every item's result back (cursor pagination), then lets the households act for
some simulated days, and (with ``--state-dir``) closes and reopens the file-backed state. Prints each
phase's wall-clock and CPU time, items per second, the peak RSS, the machine's load average and how long a
fixed Python loop took before and after (the machine may be shared: its speed is part of the result).

    .venv/bin/python bench/bank_sim_settle.py                                    # 1,000,000 households
    .venv/bin/python bench/bank_sim_settle.py --households 100000 --state-dir /tmp/bank-sim-bench
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import os
import platform
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.bank.simulator import FileStore, MemoryStore, connect, create_app, get_simulator
from services.ports.bank import BatchItem, CreditBatch, ItemStatus

AMOUNT = 200_00
SEED_CHUNK = 50_000


class Phases:
    """Wall-clock and CPU seconds per named phase (a phase may be entered several times)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def calibration_seconds() -> float:
    """Seconds for a fixed pure-Python loop (10,000,000 iterations): how fast the machine runs Python now."""
    start = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i & 7
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    load_before = os.getloadavg()
    calibration_before = calibration_seconds()
    if args.state_dir:
        shutil.rmtree(args.state_dir, ignore_errors=True)
        store: FileStore | MemoryStore = FileStore(Path(args.state_dir))
    else:
        store = MemoryStore()
    app = create_app(store, seed=args.seed, faults=args.faults, auto_advance_seconds=0)
    sim = get_simulator(app)
    bank, control = connect(app, api_key="bench", timeout=120)
    n = args.households
    phase = Phases()

    # The (DNI, account number) pairs are kept as tuples: a list of a million would be walked by every full
    # collection of the garbage collector, which would then measure this script's bookkeeping.
    opened: list[tuple[tuple[str, str], ...]] = []
    with phase("open accounts (bulk, 50,000 a request)"):
        for start in range(0, n, SEED_CHUNK):
            rows = (
                (f"{10_000_000 + i:08d}", f"Titular {i}", "080206") for i in range(start, min(n, start + SEED_CHUNK))
            )
            opened.append(tuple((a.dni, a.account_number) for a in await control.seed_accounts(rows)))
    accounts = tuple(itertools.chain.from_iterable(opened))
    del opened
    await control.deposit_funding(n * AMOUNT, reference="treasury-round-1")

    acks = []
    for b in range(0, n, args.batch_size):
        with phase("build batches (client-side models)"):
            items = [
                BatchItem(reference=f"2025-B1:{i:07d}", dni=dni, amount=AMOUNT, account_number=number)
                for i, (dni, number) in enumerate(accounts[b : b + args.batch_size], start=b)
            ]
            batch = CreditBatch.build(f"2025-B1:batch:{b // args.batch_size:04d}", items)
        with phase("submit"):
            acks.append(await bank.submit_batch(batch, idempotency_key=batch.reference))
    del accounts

    with phase("settle (clock advance)"):
        while (await control.advance(hours=1)).pending_settlements:
            pass

    counts: Counter[ItemStatus] = Counter()
    with phase("read results (paginated)"):
        for ack in acks:
            async for item in bank.iter_batch_items(ack.id):
                counts[item.status] += 1
    statuses = {status.value: count for status, count in counts.items()}
    if sum(statuses.values()) != n or statuses.get("pending"):
        raise SystemExit(f"unexpected results: {statuses}")

    with phase(f"households act, {args.household_days} simulated days"):
        if args.household_days:
            await control.advance(days=args.household_days)
    lines = len(sim.bank.ln_type)

    await bank.aclose()
    await control.aclose()
    with phase("close (final snapshot)" if args.state_dir else "close"):
        await sim.aclose()
    state = ""
    if args.state_dir:
        del app, sim
        gc.collect()
        with phase("reopen (load snapshot)"):
            reopened = get_simulator(create_app(FileStore(Path(args.state_dir)), auto_advance_seconds=0))
        if len(reopened.bank.item_ref) != n:
            raise SystemExit("the reopened state lost items")
        state = f", state folder {folder_mb(Path(args.state_dir)):,.0f} MB"

    load_after = os.getloadavg()
    calibration_after = calibration_seconds()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(
        f"a fixed loop of 10,000,000 Python iterations, before/after: "
        f"{calibration_before:.2f} / {calibration_after:.2f} s"
    )
    print(
        f"households: {n:,}  batches: {len(acks):,} x {args.batch_size:,}  faults: {args.faults}  "
        f"store: {'file ' + args.state_dir if args.state_dir else 'memory'}"
    )
    print(f"  {'phase':<44} {'wall s':>8} {'cpu s':>8}")
    for name in phase.wall:
        print(f"  {name:<44} {phase.wall[name]:8.2f} {phase.cpu[name]:8.2f}")
    for label, names in (
        ("submit + settle", ("submit", "settle (clock advance)")),
        ("submit + settle + read back", ("submit", "settle (clock advance)", "read results (paginated)")),
    ):
        wall = sum(phase.wall[x] for x in names)
        cpu = sum(phase.cpu[x] for x in names)
        print(f"  {label:<44} {wall:8.2f} {cpu:8.2f}   {n / wall:,.0f} items/s (wall)")
    print(f"  settle alone: {n / phase.wall['settle (clock advance)']:,.0f} items/s")
    print(f"  results: {statuses}, statement lines: {lines:,}")
    print(f"  peak RSS: {peak_rss_mb():,.0f} MB{state}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--households", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default="none", choices=["none", "flaky", "hostile"])
    parser.add_argument("--state-dir", default="", help="file-backed state in this folder (wiped first)")
    parser.add_argument("--household-days", type=int, default=30)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
