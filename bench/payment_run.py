"""A national JUNTOS payment run end to end: create, approve, execute through the in-process simulated bank.

Setup (not timed): programs loaded, N synthetic households written to the registry with `COPY`, their
accounts opened at the simulated bank, the fund appropriated in the ledger and deposited at the bank. Then
timed: `runs create` (entitlements and snapshots), `runs approve`, and `runs execute` by phase (holds,
submission of the batches, settlement applied to the ledger) until every payment is credited or rejected and
posted. Prints each phase's seconds, the total, and this process's peak memory during the run (the bank and
its million accounts live in this process and count); setup's own peak is printed apart.

    .venv/bin/python bench/payment_run.py                      # 1,000,000 households, durable PostgreSQL
    .venv/bin/python bench/payment_run.py --households 100000 --fast
    .venv/bin/python bench/payment_run.py --next-period       # then the next bimester, timed apart
    .venv/bin/python bench/payment_run.py --loop uvloop       # the executor and the bank on uvloop's loop
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    add_loop_arg,
    add_server_args,
    bench_server,
    describe,
    print_summary,
    quiet_logs,
    run_main,
    server_cpu_seconds,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.bank.simulator import connect, create_app, get_simulator
from adapters.postgres.database import Database
from ledger import audit
from ledger.engine import Ledger
from services.payments import report, service
from services.payments.execute import ExecuteOptions, RunExecutor
from services.programs import catalog
from services.programs import service as programs
from services.registry import synthetic


class Phases:
    """Progress sink that timestamps the executor's phases."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def start(self, phase: str, total: int) -> None:
        self.started.setdefault(phase, time.perf_counter())
        self.last[phase] = time.perf_counter()

    def advance(self, phase: str, amount: int = 1) -> None:
        self.last[phase] = time.perf_counter()


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from ``/proc/self/status`` (``VmHWM``, ``VmRSS``), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_mb() -> float:
    """This process's peak resident memory since it started, or since :func:`reset_peak`."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    return _status_mb("VmRSS") or 0.0


def reset_peak() -> bool:
    """Start the peak over from the current resident memory (Linux ``clear_refs``); False where unsupported.

    What setup freed is first handed back to the system (``malloc_trim``), so it does not count as the run's.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def setup(db: Database, control: object, n: int, seed: int, *, two_periods: bool) -> int:
    async with db.unit_of_work() as conn:
        await programs.load_programs(conn, catalog.read_programs_file(), actor="bench")
    people = synthetic.generate_households(n, seed)
    opened = []
    for start in range(0, n, 50_000):
        part = people[start : start + 50_000]
        opened += await control.seed_accounts((h.titular_dni, h.titular_name, h.ubigeo) for h in part)  # type: ignore[attr-defined]
    rows = [
        (h.household_id, h.titular_dni, h.titular_name, h.ubigeo, a.cci, h.status, h.enrolled_on,
         h.children_under_4, h.upper_secondary_students, h.program)
        for h, a in zip(people, opened, strict=True)
    ]  # fmt: skip
    async with db.unit_of_work() as conn:
        await conn.copy_records_to_table(
            "households",
            schema_name="registry",
            records=rows,
            columns=["household_id", "titular_dni", "titular_name", "ubigeo", "cci", "status", "enrolled_on",
                     "children_under_4", "upper_secondary_students", "program"],
        )  # fmt: skip
        await conn.execute("analyze registry.households")
    budget = n * (1_200_00 if two_periods else 600_00)
    async with db.unit_of_work() as conn:
        await programs.fund(conn, "JUNTOS", budget, "BENCH-001", actor="bench")
    await control.deposit_funding(budget, reference="BENCH-001")  # type: ignore[attr-defined]
    return budget


@dataclass
class Round:
    """One run's figures."""

    period: str
    timings: dict[str, float]
    total: float
    summary: dict[str, Any]
    cpu: dict[str, float]  # this process's CPU time (executor and in-process bank) in each phase
    server_cpu: dict[str, float]  # PostgreSQL's CPU time in each phase (empty if not on this machine)

    @property
    def credited(self) -> dict[str, int]:
        return dict(self.summary["payments"].get("credited", {"count": 0, "total": 0}))

    def figures(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "payments": self.summary["run"]["payments_count"],
            "credited": self.credited["count"],
            "seconds": {k: round(v, 2) for k, v in self.timings.items()},
            "total_seconds": round(self.total, 2),
            "process_cpu_seconds": {k: round(v, 2) for k, v in self.cpu.items()},
            "server_cpu_seconds": {k: round(v, 2) for k, v in self.server_cpu.items()},
        }

    def print(self) -> None:
        run = self.summary["run"]
        rejected = self.summary["payments"].get("rejected", {"count": 0, "total": 0})
        print(
            f"JUNTOS {self.period} run: {run['payments_count']:,} payments in {run['batches_count']:,} batches; "
            f"credited {self.credited['count']:,}, rejected {rejected['count']:,}"
        )
        for name, seconds in self.timings.items():
            print(f"  {name:<16} {seconds:8.2f} s")
        print("  (submit and settle overlap: each is from its start to its last batch)")
        print(f"  {'total':<16} {self.total:8.2f} s   (create + approve + execute)")
        cpu = ", ".join(f"{k} {v:.2f} s" for k, v in self.cpu.items())
        print(f"  CPU time of this process (executor and in-process bank; PostgreSQL not included): {cpu}")
        if self.server_cpu:
            server = ", ".join(f"{k} {v:.2f} s" for k, v in self.server_cpu.items())
            print(f"  CPU time of PostgreSQL (every backend and background process): {server}")


async def timed_run(db: Database, bank: Any, period: str, args: argparse.Namespace) -> Round:
    """Create, approve and execute JUNTOS ``period``, each phase timed; checks the run settled."""
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    server_cpu: dict[str, float] = {}
    async with db.connection() as conn:
        s0 = await server_cpu_seconds(conn)
    t0, c = time.perf_counter(), time.process_time()
    created = await service.create_run(db, "JUNTOS", period, "maker", workers=args.create_workers)
    timings["create"] = time.perf_counter() - t0
    cpu["create"] = time.process_time() - c
    async with db.connection() as conn:
        s1 = await server_cpu_seconds(conn)
    run_id = int(created.run["id"])
    t = time.perf_counter()
    async with db.unit_of_work() as conn:
        await service.approve_run(conn, run_id, "checker")
    timings["approve"] = time.perf_counter() - t
    phases = Phases()
    options = ExecuteOptions(
        concurrency=args.concurrency,
        settle_group=args.settle_group,
        apply_workers=args.apply_workers,
        poll_interval=0.0,
    )
    t, c = time.perf_counter(), time.process_time()
    await RunExecutor(db, bank, run_id, "maker", phases, options).execute()
    end = time.perf_counter()
    timings["execute"] = end - t
    cpu["execute"] = time.process_time() - c
    async with db.connection() as conn:
        s2 = await server_cpu_seconds(conn)
    if s0 is not None and s1 is not None and s2 is not None:
        server_cpu = {"create": s1 - s0, "execute": s2 - s1}  # approve's few milliseconds go with execute
    # Each phase from its start to its last progress; submission and settlement overlap (a batch is
    # settled while later ones are still being sent), so the phases add up to more than `execute`.
    for p in ("hold", "submit", "settle"):
        if p in phases.started:
            timings[f"execute.{p}"] = (end if p == "settle" else phases.last[p]) - phases.started[p]
    async with db.connection() as conn:
        summary = await report.summary(conn, run_id)
    if summary["run"]["status"] != "settled":
        raise SystemExit(f"run check failed: run {run_id} is {summary['run']['status']}")
    return Round(period, timings, end - t0, summary, cpu, server_cpu)


async def run(args: argparse.Namespace) -> None:
    quiet_logs()
    async with bench_server(args.fast) as server:
        db = await Database.connect(server.url, max_size=16)
        app = create_app(seed=args.seed, faults=args.faults)
        bank, control = connect(app)
        try:
            t = time.perf_counter()
            budget = await setup(db, control, args.households, args.seed, two_periods=args.next_period)
            setup_s = time.perf_counter() - t
            setup_peak = peak_mb()
            print(
                f"setup (not timed): {args.households:,} households registered and banked in {setup_s:.1f} s, "
                f"peak memory {setup_peak:,.0f} MB",
                flush=True,
            )
            # The run's own peak: from here on (the bank's accounts stay in this process and count).
            run_peak_only = reset_peak()
            print(f"resident memory when the run starts: {rss_mb():,.0f} MB", flush=True)

            first = await timed_run(db, bank, "2026-B5", args)
            rounds = [first]
            if args.next_period:
                # The next bimester: the households' ledger accounts exist now, as in every run after a
                # program's first; the peak memory printed covers both.
                rounds.append(await timed_run(db, bank, "2026-B6", args))
            async with db.connection() as conn:
                fund = await Ledger(conn).balance("program:JUNTOS:fund")
                transit = await Ledger(conn).balance("program:JUNTOS:in-transit")
            paid = sum(r.credited["total"] for r in rounds)
            if fund.posted != budget - paid or transit.posted != 0:
                raise SystemExit(f"run check failed: fund {fund}, in-transit {transit}, credited {paid}")
            verify_s = None
            if args.verify:
                async with db.connection() as conn, db.connection() as helper:
                    t = time.perf_counter()
                    await audit.seal(conn)
                    report_ = await audit.verify(conn, helper)
                    verify_s = time.perf_counter() - t
                if not report_.ok:
                    raise SystemExit(f"verify failed: {report_.problems[:3]}")
        finally:
            await bank.aclose()
            await control.aclose()
            await get_simulator(app).aclose()
            await db.close()
        print(f"{describe(server)}, {args.loop} event loop")
        for r in rounds:
            r.print()
        if verify_s is not None:
            print(f"  seal + verify    {verify_s:8.2f} s   (not part of the run)")
        scope = "create, approve and execute" if run_peak_only else "whole process, setup included"
        print(f"  peak memory of this process ({scope}; the in-process bank included): {peak_mb():,.0f} MB")
        print_summary(
            {
                "bench": "payment_run",
                "server": server.mode,
                "loop": args.loop,
                "households": args.households,
                "payments": first.summary["run"]["payments_count"],
                "credited": first.credited["count"],
                "seconds": {k: round(v, 2) for k, v in first.timings.items()},
                "total_seconds": round(first.total, 2),
                "process_cpu_seconds": {k: round(v, 2) for k, v in first.cpu.items()},
                "server_cpu_seconds": {k: round(v, 2) for k, v in first.server_cpu.items()},
                "next_period": None if len(rounds) == 1 else rounds[1].figures(),
                "verify_seconds": round(verify_s, 2) if verify_s is not None else None,
                "peak_mb": round(peak_mb()),
                "peak_scope": "run" if run_peak_only else "process",
                "setup_peak_mb": round(setup_peak),
            }
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--households", type=int, default=1_000_000, help="registry size (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--faults", default="none", help="bank fault profile (default none)")
    defaults = ExecuteOptions()
    for flag, default, what in (
        ("--concurrency", defaults.concurrency, "bank requests in flight"),
        ("--settle-group", defaults.settle_group, "settled batches per ledger transaction"),
        ("--apply-workers", defaults.apply_workers, "ledger transactions applying settled groups at once"),
        ("--create-workers", service.DEFAULT_CREATE_WORKERS, "transactions writing the run's parts at once"),
    ):
        parser.add_argument(flag, type=int, default=default, help=f"{what} (default {default})")
    parser.add_argument("--verify", action="store_true", help="also seal and verify the ledger afterwards")
    parser.add_argument(
        "--next-period",
        action="store_true",
        help="then run 2026-B6 as well (the households' ledger accounts exist by then), timed apart",
    )
    add_server_args(parser)
    add_loop_arg(parser)
    args = parser.parse_args()
    run_main(run(args), args.loop)


if __name__ == "__main__":
    main()
