"""The simulated bank beyond the contract: households, determinism, persistence, faults, controls, HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
import typer
import uvicorn
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from adapters.bank import webhooks
from adapters.bank.client import BankClient
from adapters.bank.simulator import (
    HOSTILE,
    FaultProfile,
    FileStore,
    SettlementFaults,
    SimControl,
    SimStateMismatch,
    asgi_receiver,
    connect,
    create_app,
    get_simulator,
)
from adapters.bank.simulator.faults import Fault
from adapters.bank.simulator.households import FAR, SAVER, BehaviourModel
from adapters.bank.simulator.openapi import DEFAULT_PATH, openapi_document, render
from services.ports.bank import (
    BankAmbiguousError,
    BatchItem,
    BatchStatus,
    CreditBatch,
    ItemStatus,
    LineType,
    RejectReason,
)

BASE = "http://bank.sim"
SECRET = "whsec_simulator_secret"


class Sim:
    """An in-process simulated bank with a client and the control API."""

    def __init__(self, app: FastAPI, *, timeout: float = 10.0, max_attempts: int = 5) -> None:
        self.app = app
        self.sim = get_simulator(app)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
        self.bank = BankClient(
            BASE,
            api_key="k",
            webhook_secret=SECRET,
            http_client=self.http,
            timeout=timeout,
            max_attempts=max_attempts,
            sleep=_no_sleep,
        )
        self.control = SimControl(self.http)

    async def households(self, n: int, first_dni: int = 30_000_000) -> list[tuple[str, str]]:
        rows = await self.control.seed_accounts((f"{first_dni + i:08d}", f"Titular {i}", "080206") for i in range(n))
        return [(r.dni, r.account_number) for r in rows]

    async def pay(self, accounts: list[tuple[str, str]], round_ref: str, amount: int = 200_00) -> list[str]:
        acks = []
        for start in range(0, len(accounts), 1000):
            items = [
                BatchItem(reference=f"{round_ref}:{dni}", dni=dni, amount=amount, account_number=number)
                for dni, number in accounts[start : start + 1000]
            ]
            batch = CreditBatch.build(f"{round_ref}:batch:{start // 1000}", items)
            acks.append((await self.bank.submit_batch(batch, idempotency_key=batch.reference)).id)
        return acks

    async def lines(self) -> list[dict[str, Any]]:
        return [line.model_dump(mode="json") async for line in self.bank.iter_statement_lines()]

    async def close(self) -> None:
        await self.http.aclose()
        await self.sim.aclose()


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    s = Sim(create_app(seed=5, auto_advance_seconds=0))
    yield s
    await s.close()


@pytest.fixture(scope="module")
async def refusing_sim() -> AsyncIterator[Sim]:
    """One simulator for the tests whose requests are all refused (nothing changes between them)."""
    s = Sim(create_app(seed=5, auto_advance_seconds=0))
    yield s
    await s.close()


# --- households ---------------------------------------------------------------------------------------------


async def test_household_behaviour_is_calibrated_to_the_savings_pilot() -> None:
    s = Sim(create_app(seed=21, auto_advance_seconds=0))
    n = 10_000
    accounts = await s.households(n)
    await s.control.deposit_funding(n * 200_00)
    await s.pay(accounts, "2025-B1")
    await s.control.advance(hours=1)
    credited_at = s.sim.bank.now
    await s.control.advance(days=50)
    bank = s.sim.bank
    profile = bank.acc_profile
    balances = [bank.acc_balance[a] for a in range(1, n + 1)]
    savers = [b for b in balances if b > 0]
    assert 0.19 <= len(savers) / n <= 0.23  # the pilot: 21% used their savings account
    assert 5_20 <= statistics.mean(savers) <= 6_20  # 5.7% of the monthly transfer of S/ 100
    assert all(b >= 0 for b in balances)
    assert all(bank.acc_balance[a] == 0 for a in range(1, n + 1) if not profile[a] & SAVER)

    near = [a for a in range(1, n + 1) if not profile[a] & FAR]
    far = [a for a in range(1, n + 1) if profile[a] & FAR]
    assert 0.37 <= len(far) / n <= 0.43
    share = lambda group: sum(1 for a in group if bank.acc_balance[a] > 0) / len(group)  # noqa: E731
    assert share(far) < share(near)  # closer to a pay point, more savers
    kept = lambda group: statistics.mean(bank.acc_balance[a] for a in group if bank.acc_balance[a] > 0)  # noqa: E731
    assert kept(far) < kept(near)

    first_out: dict[int, int] = {}
    for seq in range(len(bank.ln_type)):
        a = bank.ln_acct[seq]
        if bank.ln_type[seq] in (2, 3, 4) and a not in first_out:
            first_out[a] = bank.ln_time[seq] - credited_at
    assert statistics.median(first_out[a] for a in far if a in first_out) > 2 * statistics.median(
        first_out[a] for a in near if a in first_out
    )
    assert statistics.median(first_out[a] for a in near if a in first_out) < 2 * 86400  # within days
    types = {LineType(x["type"]) async for x in _aiter(await s.lines())}
    assert {
        LineType.WITHDRAWAL_AGENT,
        LineType.WITHDRAWAL_ATM,
        LineType.WITHDRAWAL_BRANCH,
        LineType.DEPOSIT,
    } <= types
    await s.close()


async def _aiter(items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for x in items:
        yield x


def test_the_default_model_gives_a_fifth_of_savers() -> None:
    assert BehaviourModel().saver_share == pytest.approx(0.21)


async def test_statement_lines_chain_balances_per_account(sim: Sim) -> None:
    accounts = await sim.households(300)
    await sim.control.deposit_funding(300 * 200_00)
    await sim.pay(accounts, "R1")
    await sim.control.advance(days=40)
    lines = await sim.lines()
    balances: dict[str, int] = {}
    previous_time = ""
    for line in lines:
        balance = balances.get(line["account_id"], 0) + line["amount"]
        assert line["balance_after"] == balance
        balances[line["account_id"]] = balance
        assert line["posted_at"] >= previous_time  # one time-ordered statement
        previous_time = line["posted_at"]
        if line["type"] == "reversal":
            assert line["reverses"]
            assert line["amount"] > 0
        if line["type"].startswith("withdrawal") or line["type"] == "fee":
            assert line["amount"] < 0
    for account_id, balance in list(balances.items())[:50]:
        if account_id != (await sim.bank.get_funding_account()).id:
            assert (await sim.bank.get_account(account_id)).balance == balance


# --- determinism --------------------------------------------------------------------------------------------


async def _scenario(seed: int) -> list[dict[str, Any]]:
    s = Sim(create_app(seed=seed, auto_advance_seconds=0, faults=dataclasses.replace(HOSTILE, latency_rate=0.0)))
    accounts = await s.households(400)
    await s.control.deposit_funding(400 * 200_00)
    await s.pay(accounts, "R1")
    await s.control.advance(days=20)
    lines = await s.lines()
    await s.close()
    return lines


async def test_a_seed_reproduces_the_same_world() -> None:
    first, again, other = await _scenario(8), await _scenario(8), await _scenario(9)
    assert first == again
    assert len(first) > 400
    assert first != other


# --- persistence --------------------------------------------------------------------------------------------


async def _world(state: Path) -> tuple[Sim, list[str]]:
    s = Sim(create_app(FileStore(state), seed=3, auto_advance_seconds=0))
    accounts = await s.households(50)
    await s.control.deposit_funding(50 * 200_00)
    acks = await s.pay(accounts, "P1")
    await s.control.advance(days=3)
    return s, acks


async def _state(s: Sim, batch_id: str) -> tuple[Any, ...]:
    return (
        await s.lines(),
        [i.model_dump() async for i in s.bank.iter_batch_items(batch_id)],
        (await s.bank.get_funding_account()).model_dump(),
        (await s.control.clock()).now,
    )


async def test_state_survives_a_clean_restart(tmp_path: Path) -> None:
    s, acks = await _world(tmp_path)
    before = await _state(s, acks[0])
    await s.close()  # writes a snapshot
    assert (tmp_path / "CURRENT").exists()
    again = Sim(create_app(state_dir=tmp_path, auto_advance_seconds=0))
    assert await _state(again, acks[0]) == before
    # Idempotency survives too: the same submission is a replay, not a second batch.
    batch = CreditBatch.build(
        "P1:batch:0", [BatchItem(reference="x", dni="10117410", amount=1, account_number="040820000001")]
    )
    response = await again.http.post(
        "/v1/credit_batches",
        content=batch.model_dump_json(),
        headers={
            "Idempotency-Key": "P1:batch:0",
            "Authorization": "Bearer k",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    await again.close()


async def test_state_survives_a_crash_by_replaying_the_journal(tmp_path: Path) -> None:
    s, acks = await _world(tmp_path)
    await s.control.snapshot()  # a snapshot, then more commands only in the journal
    await s.control.advance(days=2)
    before = await _state(s, acks[0])
    store = s.sim.store
    assert isinstance(store, FileStore)
    store._journal.close()  # the process dies: no final snapshot
    with (tmp_path / f"journal-{store.generation}.jsonl").open("ab") as journal:
        journal.write(b'{"op": "advance", "to": 99')  # a write torn by the crash
    again = Sim(create_app(state_dir=tmp_path, auto_advance_seconds=0))
    assert await _state(again, acks[0]) == before
    assert (tmp_path / f"journal-{store.generation}.jsonl").read_bytes().endswith(b"\n")
    await again.close()
    await s.http.aclose()


async def test_a_restart_with_another_profile_keeps_the_accepted_batches_plans(tmp_path: Path) -> None:
    late = FaultProfile(name="late", settlement=SettlementFaults(late_batch_rate=1.0, late_delay_hours=(5, 5)))
    s = Sim(create_app(FileStore(tmp_path), seed=3, faults=late, auto_advance_seconds=0))
    accounts = await s.households(4)
    await s.control.deposit_funding(4 * 200_00)
    (late_batch,) = await s.pay(accounts[:2], "K1")
    store = s.sim.store
    assert isinstance(store, FileStore)
    store._journal.close()  # crash
    await s.http.aclose()
    again = Sim(create_app(state_dir=tmp_path, faults="none", auto_advance_seconds=0))
    (prompt_batch,) = await again.pay(accounts[2:], "K2")
    await again.control.advance(hours=1)
    assert (await again.bank.get_batch(late_batch)).status is BatchStatus.RECEIVED  # still five hours away
    assert (await again.bank.get_batch(prompt_batch)).status is BatchStatus.SETTLED
    await again.control.advance(hours=5)
    assert (await again.bank.get_batch(late_batch)).status is BatchStatus.SETTLED
    await again.close()


async def test_a_state_folder_keeps_its_seed(tmp_path: Path) -> None:
    s, _ = await _world(tmp_path)
    await s.close()
    with pytest.raises(SimStateMismatch, match="seed"):
        create_app(state_dir=tmp_path, seed=4)
    assert json.loads((tmp_path / "sim.json").read_text())["config"]["seed"] == 3


# --- settlement faults --------------------------------------------------------------------------------------


async def test_late_and_split_batches_settle_each_item_once() -> None:
    profile = FaultProfile(
        name="late",
        settlement=SettlementFaults(late_batch_rate=1.0, late_delay_hours=(3, 3), split_batch_rate=1.0),
    )
    s = Sim(create_app(seed=2, faults=profile, auto_advance_seconds=0))
    accounts = await s.households(20)
    await s.control.deposit_funding(20 * 200_00)
    (batch_id,) = await s.pay(accounts, "L1")
    await s.control.advance(hours=2)
    assert (await s.bank.get_batch(batch_id)).status is BatchStatus.RECEIVED
    await s.control.advance(hours=1, minutes=1)
    partial = await s.bank.get_batch(batch_id)
    assert partial.status is BatchStatus.PROCESSING
    assert 0 < partial.pending_count < 20
    assert (await s.bank.get_funding_account()).held == partial.pending_count * 200_00
    await s.control.advance(hours=7)
    done = await s.bank.get_batch(batch_id)
    assert done.status is BatchStatus.SETTLED
    assert done.credited_count == 20
    items = [i async for i in s.bank.iter_batch_items(batch_id)]
    assert len({i.id for i in items}) == 20
    assert all(i.status is ItemStatus.CREDITED for i in items)
    await s.close()


async def test_random_rejections_are_processing_errors() -> None:
    profile = FaultProfile(name="rejecting", settlement=SettlementFaults(reject_rate=0.5))
    s = Sim(create_app(seed=2, faults=profile, auto_advance_seconds=0))
    accounts = await s.households(200)
    await s.control.deposit_funding(200 * 200_00)
    (batch_id,) = await s.pay(accounts, "X1")
    await s.control.advance(hours=1)
    reasons = [i.reason async for i in s.bank.iter_batch_items(batch_id, status=ItemStatus.REJECTED)]
    assert 60 <= len(reasons) <= 140
    assert set(reasons) == {RejectReason.PROCESSING_ERROR}
    assert RejectReason.PROCESSING_ERROR.retryable
    assert not RejectReason.DNI_MISMATCH.retryable
    await s.close()


async def test_a_batch_lookup_moves_the_clock_to_its_settlement_and_no_further() -> None:
    s = Sim(create_app(seed=2, auto_advance_seconds=300))
    accounts = await s.households(3)
    await s.control.deposit_funding(3 * 200_00)
    (batch_id,) = await s.pay(accounts, "A1")
    bank = s.sim.bank
    due = bank.next_settlement(bank.batch_seq(batch_id))
    assert due is not None
    assert 0 < due <= 300  # the default settlement delay: 60 to 300 s
    found = await s.bank.get_batch_by_reference("A1:batch:0")  # a lookup by our reference, as by id below
    assert found is not None
    assert found.status is BatchStatus.SETTLED  # the first lookup lets exactly enough time pass
    assert (await s.control.clock()).seconds == due
    assert bank.next_settlement(bank.batch_seq(batch_id)) is None
    await s.bank.get_batch(batch_id)  # settled: nothing is due for it, and no other batch waits
    await s.bank.list_batches(status=BatchStatus.SETTLED)
    assert (await s.control.clock()).seconds == due
    # Minutes passed, not the hours after which households first act: the funding, the credits and their debit.
    types = sorted(line["type"] for line in await s.lines())
    assert types == ["deposit", "program_credit", "program_credit", "program_credit", "program_debit"]
    await s.close()


async def test_a_lookup_moves_the_clock_at_most_its_auto_advance_towards_a_later_settlement() -> None:
    late = FaultProfile(name="late", settlement=SettlementFaults(late_batch_rate=1.0, late_delay_hours=(1, 1)))
    s = Sim(create_app(seed=2, faults=late, auto_advance_seconds=300))
    accounts = await s.households(2)
    await s.control.deposit_funding(2 * 200_00)
    (batch_id,) = await s.pay(accounts, "L1")
    clocks = []
    while (await s.bank.get_batch(batch_id)).status is not BatchStatus.SETTLED:
        clocks.append((await s.control.clock()).seconds)
    assert clocks == list(range(300, 3600, 300))  # an hour away: 300 s a lookup, the twelfth settles it
    assert (await s.control.clock()).seconds == 3600
    await s.close()


async def test_polling_the_settled_listing_advances_the_clock_too() -> None:
    s = Sim(create_app(seed=2, auto_advance_seconds=300))
    accounts = await s.households(2000)
    await s.control.deposit_funding(2000 * 200_00)
    acks = await s.pay(accounts, "A2")
    bank = s.sim.bank
    last_due = max(due for seq in range(len(acks)) if (due := bank.next_settlement(seq)) is not None)
    polls = 0
    while len((await s.bank.list_batches(status=BatchStatus.SETTLED)).data) < len(acks):
        polls += 1
        assert polls < 3  # each poll: to the earliest settlement due, so the second batch at most one more
    assert (await s.control.clock()).seconds == last_due
    assert (await s.bank.list_batches()).data[0].status is BatchStatus.SETTLED
    clock = (await s.control.clock()).seconds
    await s.bank.list_batches()  # without a status or a reference, a listing leaves the clock alone
    await s.bank.list_batches(status=BatchStatus.SETTLED)  # and with one, once nothing is left to settle
    assert (await s.control.clock()).seconds == clock
    await s.close()


# --- transport faults ---------------------------------------------------------------------------------------


def test_fault_decisions_are_deterministic_and_bounded() -> None:
    draws = [HOSTILE.decide(7, "POST", f"/v1/credit_batches?k{i}", 1).fault for i in range(20_000)]
    again = [HOSTILE.decide(7, "POST", f"/v1/credit_batches?k{i}", 1).fault for i in range(20_000)]
    other = [HOSTILE.decide(8, "POST", f"/v1/credit_batches?k{i}", 1).fault for i in range(20_000)]
    assert draws == again
    assert draws != other
    share = {f: draws.count(f) / len(draws) for f in Fault}
    assert share[Fault.TIMEOUT_AFTER_APPLY] == pytest.approx(0.05, abs=0.01)
    assert share[Fault.RATE_LIMITED] == pytest.approx(0.05, abs=0.01)
    assert share[Fault.NONE] == pytest.approx(0.75, abs=0.02)
    gets = {HOSTILE.decide(7, "GET", f"/v1/x?{i}", 1).fault for i in range(5000)}
    assert Fault.TIMEOUT_AFTER_APPLY not in gets
    assert Fault.ERROR_AFTER_APPLY not in gets
    beyond = {HOSTILE.decide(7, "POST", f"k{i}", HOSTILE.max_faulted_attempts + 1).fault for i in range(2000)}
    assert beyond == {Fault.NONE}


async def test_flaky_bank_is_survived_by_retries() -> None:
    flaky = dataclasses.replace(
        HOSTILE,
        name="f",
        latency_rate=0.0,
        error_after_apply_rate=0.0,
        timeout_after_apply_rate=0.0,
        settlement=SettlementFaults(),
    )
    s = Sim(create_app(seed=4, faults=flaky, auto_advance_seconds=0))
    accounts = await s.households(30)
    await s.control.deposit_funding(30 * 200_00)
    for n in range(30):
        await s.pay(accounts[n : n + 1], f"F{n}")
    await s.control.advance(hours=1)
    stats = await s.control.stats()
    assert stats["items"]["credited"] == 30
    assert stats["idempotency_conflicts"] == 0
    assert sum(stats["faults_injected"].values()) > 0
    await s.close()


# --- webhooks -----------------------------------------------------------------------------------------------


async def test_hostile_webhooks_are_duplicated_and_out_of_order_but_all_arrive() -> None:
    received: list[str] = []
    clock = [1_736_168_400.0]

    async def receiver(headers: Mapping[str, str], body: bytes) -> int:
        event = webhooks.verify_webhook(SECRET, headers, body, now=clock[0])
        received.append(event.id)
        return 200

    profile = dataclasses.replace(
        HOSTILE,
        name="hooks",
        latency_rate=0.0,
        unavailable_rate=0.0,
        internal_error_rate=0.0,
        rate_limit_rate=0.0,
        error_after_apply_rate=0.0,
        timeout_after_apply_rate=0.0,
        webhook_duplicate_rate=0.5,
        settlement=SettlementFaults(),
    )
    app = create_app(
        seed=6,
        faults=profile,
        auto_advance_seconds=0,
        webhook_target=receiver,
        webhook_secret=SECRET,
        wall_clock=lambda: clock[0],
    )
    s = Sim(app)
    accounts = await s.households(10)
    await s.control.deposit_funding(10 * 200_00)
    for n in range(10):
        await s.pay(accounts[n : n + 1], f"W{n}")
    await s.control.advance(hours=1)
    for _ in range(3):
        await s.control.flush_webhooks()
    events = [e.id for e in (await s.bank.list_events()).data]
    assert len(events) == 20  # two per batch
    assert set(received) == set(events)
    assert len(received) > len(set(received))  # duplicates
    first_seen = list(dict.fromkeys(received))
    assert first_seen != events  # out of order
    assert (await s.control.stats())["events_undelivered"] == 0
    await s.close()


async def test_webhooks_to_a_url_are_signed_and_retried() -> None:
    with respx.mock(assert_all_called=False) as router:
        hook = router.post("https://hooks.test/bank").mock(
            side_effect=[httpx.Response(500), httpx.Response(200), httpx.Response(200), httpx.Response(200)]
        )
        s = Sim(
            create_app(
                seed=1,
                auto_advance_seconds=0,
                webhook_target="https://hooks.test/bank",
                webhook_secret=SECRET,
            )
        )
        accounts = await s.households(2)
        await s.control.deposit_funding(400_00)
        await s.pay(accounts, "U1")
        await s.control.advance(hours=1)
        assert (await s.control.stats())["events_undelivered"] == 1  # the one that got a 500
        await s.control.flush_webhooks()
        assert (await s.control.stats())["events_undelivered"] == 0
        request = hook.calls.last.request
        event = webhooks.verify_webhook(SECRET, request.headers, request.content, now=datetime.now().timestamp())
        assert request.headers["Bank-Event-Id"] == event.id
        await s.close()


async def test_webhooks_to_an_in_process_asgi_app() -> None:
    receiver = FastAPI()
    seen: list[str] = []

    @receiver.post("/webhooks/bank")
    async def hook(request: Request) -> dict[str, bool]:
        event = webhooks.verify_webhook(SECRET, request.headers, await request.body(), now=time.time())
        seen.append(event.type.value)
        return {"stored": True}

    target = asgi_receiver(receiver)
    s = Sim(create_app(seed=1, auto_advance_seconds=0, webhook_target=target, webhook_secret=SECRET))
    accounts = await s.households(2)
    await s.control.deposit_funding(400_00)
    await s.pay(accounts, "G1")
    await s.control.advance(hours=1)
    assert seen == ["credit_items.settled", "batch.settled"]
    await s.close()


async def test_connect_in_process_for_demos() -> None:
    app = create_app(seed=3)
    bank, control = connect(app, api_key="demo")
    (row,) = await control.seed_accounts([("10117410", "Rosa Quispe", "080206")])
    await control.deposit_funding(200_00)
    batch = CreditBatch.build(
        "D1", [BatchItem(reference="D1:1", dni="10117410", amount=200_00, account_number=row.account_number)]
    )
    ack = await bank.submit_batch(batch, idempotency_key="D1")
    while (await bank.get_batch(ack.id)).status is not BatchStatus.SETTLED:  # lookups advance the clock
        pass
    assert (await bank.get_account(row.account_id)).balance == 200_00
    await bank.aclose()
    await control.aclose()
    await get_simulator(app).aclose()


# --- controls and errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"hours": 1.5}, 422, "hours"),
        ({"days": -1}, 422, "days"),
        ({}, 422, None),
        ({"days": 1, "until": "2030-01-01T00:00:00-05:00"}, 422, None),
        ({"until": "2020-01-01T00:00:00-05:00"}, 409, "until"),
        ({"until": "2030-01-01T00:00:00"}, 422, "until"),
        ({"weeks": 1}, 422, "weeks"),
    ],
)
async def test_clock_control_refuses_bad_requests(
    refusing_sim: Sim, body: dict[str, Any], status: int, param: str | None
) -> None:
    response = await refusing_sim.http.post("/sim/clock/advance", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


async def test_clock_control_moves_forward(sim: Sim) -> None:
    assert (await sim.control.advance(days=1, hours=2)).seconds == 26 * 3600
    until = datetime.fromisoformat("2025-02-01T00:00:00-05:00")
    assert (await sim.control.advance(until=until)).now == until
    everything = await sim.http.get(
        "/v1/statement_lines?from_date=0001-01-01&to_date=9999-12-31", headers={"Authorization": "Bearer k"}
    )
    assert everything.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "param"),
    [
        ("GET", "/v1/nope", None, 404, "route_missing", None),
        ("DELETE", "/v1/accounts", None, 405, "method_not_allowed", None),
        ("GET", "/v1/statement_lines?cursor=garbage", None, 400, "parameter_invalid", "cursor"),
        ("GET", "/v1/statement_lines?limit=0", None, 422, "parameter_invalid", "limit"),
        ("GET", "/v1/statement_lines?from_date=yesterday", None, 422, "parameter_invalid", "from_date"),
        ("GET", "/v1/statement_lines?type=bonus", None, 422, "parameter_invalid", "type"),
        ("POST", "/v1/accounts/search", {}, 422, "parameter_invalid", None),
        ("POST", "/v1/accounts/search", {"dni": "1234"}, 422, "parameter_invalid", "dni"),
        ("GET", "/v1/accounts", None, 405, "method_not_allowed", None),
        (
            "POST",
            "/sim/accounts/bulk",
            {
                "accounts": [
                    {"dni": "10117410", "name": "A", "ubigeo": "080206"},
                    {"dni": "1011741", "name": "B", "ubigeo": "080206"},
                ]
            },
            422,
            "parameter_invalid",
            "accounts[1].dni",
        ),
        (
            "POST",
            "/sim/accounts/bulk",
            {"accounts": [{"dni": "10117410", "name": "A", "ubigeo": "089999"}]},
            422,
            "parameter_invalid",
            "accounts[0].ubigeo",
        ),
        ("POST", "/sim/funding/deposits", {"amount": 100.0}, 422, "parameter_invalid", "amount"),
        ("POST", "/sim/funding/deposits", b"[", 400, "invalid_json", None),
        ("POST", "/sim/clock/advance", {"days": 20_000}, 422, "parameter_invalid", None),
        (
            "POST",
            "/v1/accounts",
            {"dni": "10117410", "name": "A\nB", "ubigeo": "080206"},
            422,
            "parameter_invalid",
            "name",
        ),
        (
            "POST",
            "/v1/accounts",
            {"dni": "10117410", "name": "A", "ubigeo": "080206", "extra": 1},
            422,
            "parameter_invalid",
            "extra",
        ),
    ],
)
async def test_bad_input_gets_a_specific_error_never_a_500(
    refusing_sim: Sim, method: str, path: str, body: object, status: int, code: str, param: str | None
) -> None:
    headers = {"Authorization": "Bearer k", "Idempotency-Key": "e1", "Content-Type": "application/json"}
    content = body if isinstance(body, bytes) else (orjson.dumps(body) if body is not None else None)
    response = await refusing_sim.http.request(method, path, content=content, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["message"]
    assert error["request_id"] == response.headers["Request-Id"]
    assert "Traceback" not in response.text


async def test_an_unexpected_failure_is_an_envelope_too(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sim.sim.bank, "funding_json", boom)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app, raise_app_exceptions=False), base_url=BASE)
    response = await http.get("/v1/funding_account", headers={"Authorization": "Bearer k"})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "api_error"
    assert "disk" not in response.text
    await http.aclose()


async def test_the_in_process_transport_answers_like_httpx_asgi_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(seed=4, auto_advance_seconds=0)
    bank, control = connect(app, api_key="k")
    reference = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
    headers = {"Authorization": "Bearer k", "Idempotency-Key": "t1", "Content-Type": "application/json"}
    opening = b'{"dni": "10117410", "name": "Rosa", "ubigeo": "080206"}'
    assert (await reference.post("/v1/accounts", content=opening, headers=headers)).status_code == 201
    for method, path, body in (
        ("GET", "/v1/funding_account", None),
        ("GET", "/v1/credit_batches?limit=0", None),
        ("POST", "/v1/accounts", opening),  # replayed for both
        ("GET", "/sim/clock", None),
    ):
        ours = await control.http.request(method, path, content=body, headers=headers)
        theirs = await reference.request(method, path, content=body, headers=headers)
        assert (ours.status_code, ours.headers.get("content-type")) == (
            theirs.status_code,
            theirs.headers.get("content-type"),
        )
        assert ours.headers.get("Idempotent-Replayed") == theirs.headers.get("Idempotent-Replayed")
        assert ours.json().keys() == theirs.json().keys()
        assert ours.headers["Request-Id"] != theirs.headers["Request-Id"]

    def boom() -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(get_simulator(app).bank, "funding_json", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):  # application errors are raised, as before
        await bank.get_funding_account()
    await reference.aclose()
    await bank.aclose()
    await control.aclose()
    await get_simulator(app).aclose()


async def test_a_required_api_key_is_checked() -> None:
    app = create_app(api_key="s3cret-key")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        assert (await http.get("/v1/funding_account", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (
            await http.get("/v1/funding_account", headers={"Authorization": "Bearer s3cret-key"})
        ).status_code == 200
        assert (await http.get("/sim/clock")).status_code == 200  # controls are not bank routes
    await get_simulator(app).aclose()


# --- interface document, command line, real HTTP ------------------------------------------------------------


def test_committed_openapi_document_is_current() -> None:
    assert DEFAULT_PATH.read_text(encoding="utf-8") == render(openapi_document()), (
        "docs/bank-openapi.json is stale: run .venv/bin/python -m adapters.bank.simulator.openapi"
    )


async def test_the_app_serves_its_openapi_document(sim: Sim) -> None:
    document = (await sim.http.get("/openapi.json")).json()
    assert "/v1/credit_batches" in document["paths"]
    assert "/sim/clock/advance" in document["paths"]
    batch = document["components"]["schemas"]["CreditBatch"]
    assert set(batch["required"]) >= {"reference", "control_count", "control_amount", "items"}


def test_command_line_help_has_an_example() -> None:
    from services.cli import main
    from services.cli.bank_sim import bank_sim

    assert any(c.name == "bank-sim" and c.callback is bank_sim for c in main.app.registered_commands)
    group = typer.Typer()
    group.command("bank-sim")(bank_sim)
    group.callback()(lambda: None)
    result = CliRunner().invoke(group, ["bank-sim", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: cct-ledger bank-sim --port 8100" in result.output
    for option in ("--port", "--seed", "--faults", "--state-dir", "--webhook-url", "--webhook-secret"):
        assert option in result.output


async def test_over_real_http_with_an_answer_lost_after_the_bank_applied_it() -> None:
    lost = FaultProfile(name="lost", timeout_after_apply_rate=1.0, max_faulted_attempts=1, hang_seconds=0.5)
    app = create_app(seed=9, faults=lost, auto_advance_seconds=0)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            control = SimControl(http)
            (account,) = await control.seed_accounts([("10117410", "Rosa Quispe", "080206")])
            await control.deposit_funding(200_00)
            batch = CreditBatch.build(
                "H1",
                [BatchItem(reference="H1:1", dni="10117410", amount=200_00, account_number=account.account_number)],
            )
            # Only the submission is impatient: the bank holds its answer 0.5 s, longer than the client waits
            # whatever the machine's load; the other calls are not faulted and get time to spare.
            impatient = BankClient(url, api_key="k", timeout=0.2, max_attempts=1)
            with pytest.raises(BankAmbiguousError):
                await impatient.submit_batch(batch, idempotency_key="H1")
            patient = BankClient(url, api_key="k", timeout=10, max_attempts=3, sleep=_no_sleep)
            found = await patient.get_batch_by_reference("H1")  # the bank did apply it
            assert found is not None
            assert found.item_count == 1
            assert (await patient.submit_batch(batch, idempotency_key="H1")).id == found.id  # a replay
            await control.advance(hours=1)
            assert (await patient.get_batch(found.id)).credited_count == 1
            await impatient.aclose()
            await patient.aclose()
    finally:
        server.should_exit = True
        await task
        await get_simulator(app).aclose()


async def test_savings_summary_follows_the_pilot_calibration() -> None:
    """After credits and a month of behaviour, about a fifth keep a balance; far households save less."""
    from adapters.bank.simulator import connect, create_app, get_simulator
    from services.ports.bank import BatchItem, CreditBatch

    app = create_app(seed=3)
    bank, control = connect(app)
    try:
        opened = await control.seed_accounts((f"{50_000_000 + i:08d}", "María Quispe", "080206") for i in range(4_000))
        await control.deposit_funding(4_000 * 200_00)
        for b in range(4):
            items = [
                BatchItem(reference=f"S-{b}-{i}", dni=a.dni, amount=200_00, cci=a.cci)
                for i, a in enumerate(opened[b * 1000 : (b + 1) * 1000])
            ]
            ack = await bank.submit_batch(CreditBatch.build(f"SAV-{b}", items), idempotency_key=f"sav-{b}")
            while (await bank.get_batch(ack.id)).status != "settled":
                await control.advance(hours=1)
        await control.advance(days=40)
        savings = await control.savings()
    finally:
        await bank.aclose()
        await control.aclose()
        await get_simulator(app).aclose()
    assert savings["accounts"] == 4_000
    assert 0.15 < savings["saver_share"] < 0.27
    assert 0.01 < savings["average_share_of_monthly_transfer"] < 0.15
    assert savings["far"]["saver_share"] < savings["near"]["saver_share"]
