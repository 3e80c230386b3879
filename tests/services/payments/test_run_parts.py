"""A run is created in parts, each in its own transaction, and an interrupted creation is resumed."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from ledger.engine import Ledger
from services.payments import repository as repo
from services.payments import service
from services.payments.errors import RunExists, RunNotApproved, RunStateError
from services.payments.execute import ExecuteOptions, RunExecutor
from tests.services.payments.conftest import World, interrupted_creation

FAST = ExecuteOptions(poll_interval=0.0, settle_timeout=120, submit_rounds=12)


async def _registry(world: World) -> dict[str, int]:
    """Fourteen households, and what each is owed for 2026-B5 (0: left out)."""
    paid = await world.register(10, start=1, children=(0, 1))  # S/ 200.00 and S/ 300.00 in turn
    unbanked = await world.register(2, start=11, bank=False)  # accrue
    inactive = await world.register(1, start=13, status="inactive")
    suspended = await world.register(1, start=14)
    await world.suspend(suspended[0]["household_id"], "2026-B5")
    owed = {h["household_id"]: 200_00 + 100_00 * h["children_under_4"] for h in paid}
    owed.update({h["household_id"]: 0 for h in unbanked + inactive + suspended})
    return owed


async def _payments(world: World, run_id: int) -> list[dict[str, Any]]:
    async with world.db.connection() as conn:
        rows = await conn.fetch(
            "select household_id, amount, batch_no from payments.payments where run_id = $1 order by household_id",
            run_id,
        )
    return [dict(r) for r in rows]


async def test_a_run_written_in_three_parts_pays_each_household_once_in_full_batches(world: World) -> None:
    owed = await _registry(world)
    await world.fund(10_000_00)
    created = await service.create_run(world.db, "JUNTOS", "2026-B5", "maria", 2, parts=3)
    run = created.run
    run_id = int(run["id"])
    payments = await _payments(world, run_id)
    assert {p["household_id"]: p["amount"] for p in payments} == {h: a for h, a in owed.items() if a}
    assert (run["status"], run["payments_count"], run["payments_total"]) == ("created", 10, 2_500_00)
    assert (run["accrued_count"], run["accrued_total"]) == (2, 2 * 200_00)
    assert {k: v["count"] for k, v in created.exclusions.items()} == {"inactive": 1, "suspended": 1, "no_account": 2}
    async with world.db.connection() as conn:
        bounds = await conn.fetchval("select part_bounds from payments.runs where id = $1", run_id)
        parts = await repo.parts_of(conn, run_id)
        batches = await conn.fetch(
            "select batch_no, item_count, total from payments.batches where run_id = $1 order by batch_no", run_id
        )
        events = [
            r["event"] for r in await conn.fetch("select event from payments.run_events where run_id = $1", run_id)
        ]
    assert len(bounds) == 2
    assert bounds == sorted(bounds)
    assert [p["part"] for p in parts] == [0, 1, 2]
    assert sum(p["payments_count"] for p in parts) == 10
    assert sum(p["payments_total"] for p in parts) == run["payments_total"]

    def part_of(household: str) -> int:
        return sum(household >= b for b in bounds)

    # Part k numbers its batches k, k + 3, k + 6...: each batch holds one part's households, at most two.
    for p in payments:
        assert p["batch_no"] % 3 == part_of(p["household_id"])
    assert all(b["item_count"] <= 2 for b in batches)
    assert [b["batch_no"] for b in batches] == sorted({p["batch_no"] for p in payments})
    assert sum(b["item_count"] for b in batches) == 10
    assert run["batches_count"] == len(batches)
    assert events == ["creation_started", "created"]
    # And it executes as any run: every household credited once, the fund down by exactly that.
    async with world.db.unit_of_work() as conn:
        await service.approve_run(conn, run_id, "jorge")
    await RunExecutor(world.db, world.bank, run_id, "maria", options=FAST).execute()
    assert await world.balance("program:JUNTOS:fund") == 10_000_00 - 2_500_00
    async with world.db.connection() as conn:
        for household, amount in owed.items():
            if amount:
                balance = await Ledger(conn).balance(f"household:{household}:savings")
                assert balance.posted == amount


async def test_an_interrupted_creation_blocks_the_run_and_is_resumed_by_creating_it_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    owed = await _registry(world)
    await world.fund(10_000_00)
    await interrupted_creation(world.db, monkeypatch, parts=3)
    async with world.db.connection() as conn:
        run = await conn.fetchrow("select id, status, payments_count from payments.runs where period = '2026-B5'")
        written = [p["part"] for p in await repo.parts_of(conn, run["id"])]
        entitled = await conn.fetchval("select count(*) from payments.entitlements where period = '2026-B5'")
    run_id = int(run["id"])
    assert (run["status"], run["payments_count"]) == ("creating", 0)
    assert written == [0, 2]  # the other parts' transactions committed; part 1's rolled back whole
    assert 0 < len(await _payments(world, run_id)) < 10
    assert 0 < entitled < 14
    # Nothing can use it until it is finished, and the errors say how to finish it.
    hint = "cct-ledger runs create --program JUNTOS --period 2026-B5"
    async with world.db.unit_of_work() as conn:
        with pytest.raises(RunStateError, match=f"still being created .*{hint}"):
            await service.approve_run(conn, run_id, "jorge")
    with pytest.raises(RunStateError, match="still being created"):
        await RunExecutor(world.db, world.bank, run_id, "maria", options=FAST).execute()
    with pytest.raises(RunStateError, match=f"run {run_id} for 2026-B5 is still being created .*{hint}"):
        await service.create_run(world.db, "JUNTOS", "2026-B6", "maria", 2)
    # Creating it again writes the missing part only, and finishes it.
    resumed = await service.create_run(world.db, "JUNTOS", "2026-B5", "ana", 2, parts=1)
    assert (int(resumed.run["id"]), resumed.run["status"]) == (run_id, "created")
    payments = await _payments(world, run_id)
    assert {p["household_id"]: p["amount"] for p in payments} == {h: a for h, a in owed.items() if a}
    assert (resumed.run["payments_total"], resumed.run["accrued_count"]) == (2_500_00, 2)
    async with world.db.connection() as conn:
        events = [
            r["event"] for r in await conn.fetch("select event from payments.run_events where run_id = $1", run_id)
        ]
        assert await conn.fetchval("select count(*) from payments.entitlements where period = '2026-B5'") == 12
    assert events == ["creation_started", "creation_resumed", "created"]
    async with world.db.unit_of_work() as conn:
        with pytest.raises(RunExists):
            await service.create_run(world.db, "JUNTOS", "2026-B5", "maria", 2)
        with pytest.raises(RunNotApproved):
            await RunExecutor(world.db, world.bank, run_id, "maria", options=FAST).execute()


async def test_two_creations_of_one_run_at_once_write_it_once(world: World) -> None:
    owed = await _registry(world)

    async def create() -> Any:
        try:
            return await service.create_run(world.db, "JUNTOS", "2026-B5", "maria", 2, parts=3)
        except RunExists as e:
            return e

    outcomes = await asyncio.gather(create(), create(), create())
    created = [o for o in outcomes if not isinstance(o, RunExists)]
    assert len(created) == 1
    assert len([o for o in outcomes if isinstance(o, RunExists)]) == 2
    payments = await _payments(world, int(created[0].run["id"]))
    assert sorted(p["household_id"] for p in payments) == sorted(h for h, a in owed.items() if a)
    async with world.db.connection() as conn:
        assert await conn.fetchval("select count(*) from payments.run_parts") == 3


async def test_a_creation_cut_off_at_random_points_is_finished_by_creating_again(world: World) -> None:
    """Each try is cancelled after a random delay (its connections dropped mid-statement); whatever it left,
    each part is written whole or not at all, and the next try finishes the run exactly. A try cut while its
    finish commits may have finished the run: only its answer is lost, and creating it again says so."""
    await world.register(150, children=(0, 1, 0), bank=True)
    await world.register(30, start=151, bank=False)
    rng = random.Random(20261129)
    cut = 0
    answer_lost = False
    seen: list[list[int]] = []  # the parts written after each cut
    for _ in range(200):
        try:
            await asyncio.wait_for(
                service.create_run(world.db, "JUNTOS", "2026-B5", "maria", 10, parts=3), rng.uniform(0.002, 0.04)
            )
            break
        except TimeoutError:
            cut += 1
        async with world.db.connection() as conn:
            run = await conn.fetchrow("select id, status, part_bounds from payments.runs where period = '2026-B5'")
            if run is None:
                continue
            if run["status"] == "created":  # cut while its finish was committing: only the answer was lost
                answer_lost = True
                break
            assert run["status"] == "creating"
            edges = [None, *run["part_bounds"], None]
            written = {p["part"]: p for p in await repo.parts_of(conn, run["id"])}
            seen.append(sorted(written))
            for part in range(3):
                lo, hi = edges[part], edges[part + 1]
                n = await conn.fetchval(
                    f"select count(*) from payments.payments where run_id = $1 and "
                    f"{repo.households_in_part('household_id', 2, 3)}",
                    run["id"],
                    lo,
                    hi,
                )
                assert n == (written[part]["payments_count"] if part in written else 0)
    else:
        pytest.fail("never finished")
    assert cut >= 3 or answer_lost
    print("parts written after each cut:", seen, "answer lost:", answer_lost)
    with pytest.raises(RunExists):
        await service.create_run(world.db, "JUNTOS", "2026-B5", "maria", 10, parts=3)
    async with world.db.connection() as conn:
        created = await conn.fetchrow("select * from payments.runs where period = '2026-B5'")
        assert (created["status"], created["payments_count"], created["accrued_count"]) == ("created", 150, 30)
        assert created["payments_total"] == 100 * 200_00 + 50 * 300_00
        assert await conn.fetchval("select count(*) from payments.entitlements where period = '2026-B5'") == 180
        assert await conn.fetchval("select count(*) from payments.run_parts") == 3
        assert await conn.fetchval("select sum(item_count) from payments.batches") == 150
