"""Exactly once through crashes: the executing process is killed (SIGKILL) at random points and resumed.

The bank is the simulator in its own process over real HTTP (its state on disk), so it keeps whatever it
accepted when our process dies, exactly like a real bank. After every kill the ledger must still verify and
hold its invariants; after the final resume every payment is credited once or rejected, the program fund
moved by exactly the credited total, and the bank saw every payment reference once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.bank.client import BankClient
from adapters.bank.simulator import SimControl
from adapters.postgres.database import Database
from ledger import audit
from ledger.engine import Ledger
from services.payments import service
from tests.servers import child_server
from tests.services.payments.conftest import World

KILLS = int(os.environ.get("CCT_CRASH_KILLS", "12"))
HOUSEHOLDS = 600
FUND = "program:JUNTOS:fund"
TRANSIT = "program:JUNTOS:in-transit"


@pytest.fixture
def bank_process(tmp_path: Path) -> Iterator[str]:
    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "services.cli.main",
            "bank-sim",
            "--port",
            str(port),
            "--seed",
            "5",
            "--faults",
            "flaky",
            "--state-dir",
            str(tmp_path / "bank"),
            "--api-key",
            "crash-test",
        ]

    auth = {"Authorization": "Bearer crash-test"}
    with child_server(command, "/sim/clock", tmp_path / "bank-sim.log", headers=auth) as url:
        yield url


def _execute_cmd(run_id: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "services.cli.main",
        "runs",
        "execute",
        str(run_id),
        "--user",
        "operator",
        "--quiet",
        "--json",
    ]


async def _invariants(db: Database, funded: int) -> None:
    """What must hold at any instant, whatever was interrupted."""
    async with db.connection() as conn:
        led = Ledger(conn)
        report = await audit.verify(conn)
        assert report.ok, report.problems
        fund = await led.balance(FUND)
        transit = await led.balance(TRANSIT)
        households = await conn.fetchval(
            "select coalesce(sum(posted), 0)::bigint from ledger.accounts where code like 'household:%'"
        )
        # money is conserved: what left the fund sits in transit or in households
        assert fund.posted + transit.posted + households == funded
        assert fund.pending_debits == transit.pending_credits
        assert (
            await conn.fetchval(
                "select count(*) from payments.payment_states where status = 'credited' and ledger_transfer_id is null"
            )
            == 0
        )


STAGES = ("planned", "held", "submitting", "acknowledged", "closed")  # a batch's states, in order


async def _kill_point(db: Database, run_id: int, proc: subprocess.Popen[bytes], rng: random.Random) -> None:
    """Wait for a random point of the execution: during its start (before or while it holds the run), or
    once a random number of batches more (1 to 12) have reached a random state. Points chosen by the run's
    progress, not by the clock, so a faster machine or code is interrupted as often: a clean execution of this
    run takes about 2 s, and with sleeps it sometimes ended before enough kills."""
    stage = rng.choice(("start", "held", "submitting", "acknowledged", "closed", "closed"))
    if stage == "start":
        await asyncio.sleep(rng.uniform(0.05, 1.0))
        return
    total = HOUSEHOLDS // 10
    query = "select count(*) from payments.batches where run_id = $1 and status = any($2::text[])"
    async with db.connection() as conn:
        reached = list(STAGES[STAGES.index(stage) :])
        now = await conn.fetchval(query, run_id, reached)
        if now >= total - 1:  # every batch is past that state already: the point is in what is left
            reached = ["closed"]
            now = await conn.fetchval(query, run_id, reached)
        target = min(now + rng.randint(1, 12), total - 1)  # before the last batch closes: a kill, not the end
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if await conn.fetchval(query, run_id, reached) >= target:
                return
            await asyncio.sleep(0.005)


async def test_killed_at_random_points_then_resumed(db: Database, db_url: str, bank_process: str) -> None:
    http = httpx.AsyncClient(base_url=bank_process, headers={"Authorization": "Bearer crash-test"})
    control = SimControl(http)
    world = World(db, None, control)  # type: ignore[arg-type]
    from services.programs import catalog
    from services.programs import service as programs

    async with db.unit_of_work() as conn:
        await programs.load_programs(conn, catalog.read_programs_file(), actor="setup")
    await world.register(HOUSEHOLDS)
    funded = 100_000_000
    await world.fund(funded)
    run_id = int((await service.create_run(db, "JUNTOS", "2026-B5", "maker", batch_size=10)).run["id"])
    async with db.unit_of_work() as conn:
        await service.approve_run(conn, run_id, "checker")

    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "CCT_BANK_URL": bank_process,
        "CCT_BANK_API_KEY": "crash-test",
        "CCT_LOG_LEVEL": "ERROR",
        "CCT_BANK_MAX_ATTEMPTS": "3",
        "CCT_RUN_SETTLE_GROUP": "4",
    }
    rng = random.Random(20261128)
    kills = 0
    phases: list[dict[str, int]] = []
    for _ in range(KILLS):
        proc = subprocess.Popen(_execute_cmd(run_id), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await _kill_point(db, run_id, proc, rng)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        await _invariants(db, funded)
        async with db.connection() as conn:
            phases.append(
                dict(
                    await conn.fetch(
                        "select status, count(*) from payments.batches where run_id = $1 group by 1", run_id
                    )
                )
            )
            if await conn.fetchval("select status from payments.runs where id = $1", run_id) == "settled":
                break
    assert kills >= 3  # the run was really interrupted several times
    print("batch states after each kill:", phases)
    started = time.monotonic()
    final = subprocess.run(_execute_cmd(run_id), env=env, capture_output=True, text=True, timeout=300)
    print("final run seconds", time.monotonic() - started)
    assert final.returncode == 0, final.stderr[-2000:]
    await _invariants(db, funded)

    async with db.connection() as conn:
        assert await conn.fetchval("select status from payments.runs where id = $1", run_id) == "settled"
        statuses = dict(
            await conn.fetch(
                "select status, count(*) from payments.payment_states where run_id = $1 group by 1", run_id
            )
        )
        assert sum(statuses.values()) == HOUSEHOLDS
        assert set(statuses) <= {"credited", "rejected"}
        credited = await conn.fetchval(
            "select coalesce(sum(amount), 0)::bigint from payments.payment_states "
            "where run_id = $1 and status = 'credited'",
            run_id,
        )
        assert (await Ledger(conn).balance(FUND)).posted == funded - credited
        assert (await Ledger(conn).balance(TRANSIT)).posted == 0
        holds = await conn.fetchval("select count(*) from ledger.transfers where kind = 1")
        assert holds == HOUSEHOLDS // 10  # one hold per batch, never two
    # The bank saw each batch once, with our totals, and paid out exactly what the ledger credited.
    bank = BankClient(bank_process, api_key="crash-test", max_attempts=10)
    sent = 0
    for batch_no in range(HOUSEHOLDS // 10):
        found = await bank.get_batch_by_reference(f"R{run_id}-B{batch_no:05d}")
        assert found is not None
        sent += found.item_count
    assert sent == HOUSEHOLDS
    funding = await bank.get_funding_account()
    assert funding.balance == funded - credited
    await bank.aclose()
    await http.aclose()
