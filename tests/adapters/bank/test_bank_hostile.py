"""Surviving the hostile bank: answers lost after the bank applied them, 5xx, 429, late and split settlement,
random rejections, duplicated and reordered webhooks. A small payment runner built on the port must end with
every item in exactly one final state, nothing sent twice with different content, and bounded loops."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping

import httpx
import pytest

from adapters.bank.client import BankClient
from adapters.bank.simulator import HOSTILE, SettlementFaults, SimControl, create_app, get_simulator
from services.ports.bank import (
    BankAmbiguousError,
    BankError,
    BankRetryableError,
    Batch,
    BatchItem,
    BatchStatus,
    CreditBatch,
    ItemResult,
    ItemStatus,
    WebhookEvent,
    submit_or_recover,
)

SECRET = "whsec_hostile_secret"
BASE = "http://bank.sim"
PROFILE = dataclasses.replace(
    HOSTILE,
    name="hostile-test",
    latency_rate=0.0,
    unavailable_rate=0.08,
    internal_error_rate=0.05,
    rate_limit_rate=0.05,
    error_after_apply_rate=0.1,
    timeout_after_apply_rate=0.2,
    hang_seconds=1.5,  # well past the client's 0.5 s: a planned timeout is one whatever the machine's load
    webhook_duplicate_rate=0.3,
    settlement=SettlementFaults(
        settle_delay_seconds=(60, 900),
        late_batch_rate=0.3,
        late_delay_hours=(2, 12),
        split_batch_rate=0.3,
        reject_rate=0.02,
    ),
)


class CountingClient(BankClient):
    """The real client, counting how submissions ended."""

    outcomes: Counter[str]

    async def submit_batch(self, batch: CreditBatch, *, idempotency_key: str) -> Batch:
        try:
            ack = await super().submit_batch(batch, idempotency_key=idempotency_key)
        except BankError as exc:
            self.outcomes[type(exc).__name__] += 1
            raise
        self.outcomes["ok"] += 1
        return ack


async def _no_sleep(_: float) -> None:
    return None


async def test_every_item_ends_in_exactly_one_final_state_under_the_hostile_profile() -> None:
    hooks: dict[str, WebhookEvent] = {}
    deliveries: list[str] = []
    holder: list[BankClient] = []

    async def receiver(headers: Mapping[str, str], body: bytes) -> int:
        event = holder[0].verify_webhook(headers, body)
        deliveries.append(event.id)
        hooks.setdefault(event.id, event)
        return 200

    app = create_app(seed=13, faults=PROFILE, auto_advance_seconds=0, webhook_target=receiver, webhook_secret=SECRET)
    sim = get_simulator(app)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
    bank = CountingClient(
        BASE,
        api_key="k",
        webhook_secret=SECRET,
        http_client=http,
        timeout=0.5,  # an unplanned timeout would change the faults the seed plays (they count the sightings)
        max_attempts=2,
        sleep=_no_sleep,
    )
    bank.outcomes = Counter()
    holder.append(bank)
    control = SimControl(http)

    rows = await control.seed_accounts((f"{50_000_000 + i:08d}", f"Titular {i}", "080206") for i in range(400))
    await control.deposit_funding(400 * 200_00)
    closed = rows[7]
    await bank.close_account(closed.account_id, idempotency_key="close:7")  # its item must be rejected
    batches = [
        CreditBatch.build(
            f"run-1:batch:{b:02d}",
            [
                BatchItem(reference=f"run-1:{r.dni}", dni=r.dni, amount=200_00, account_number=r.account_number)
                for r in rows[b * 20 : (b + 1) * 20]
            ],
        )
        for b in range(20)
    ]

    # 1. Submit each batch exactly once, resolving unknown outcomes by reference; resume a bounded number
    #    of times.
    acks: dict[str, Batch] = {}
    for batch in batches:
        for _ in range(8):
            try:
                acks[batch.reference] = await submit_or_recover(bank, batch, idempotency_key=batch.reference)
                break
            except (BankAmbiguousError, BankRetryableError):
                continue
        else:
            pytest.fail(f"{batch.reference} could not be submitted in 8 resumptions")

    # 2. Poll until every batch settled, advancing the simulated clock; read each settled batch's items once.
    results: dict[str, list[ItemResult]] = {}
    for _ in range(48):
        for reference, ack in acks.items():
            if reference in results:
                continue
            try:
                if (await bank.get_batch(ack.id)).status is not BatchStatus.SETTLED:
                    continue
                results[reference] = [item async for item in bank.iter_batch_items(ack.id, page_size=7)]
            except BankRetryableError:
                continue  # next round
        if len(results) == len(acks):
            break
        await control.advance(hours=1)
    else:
        pytest.fail(f"batches still unsettled after 48 simulated hours: {set(acks) - set(results)}")
    for _ in range(3):
        await control.flush_webhooks()

    # Every item: exactly once, final, and what the webhooks said.
    for batch in batches:
        got = results[batch.reference]
        assert [i.reference for i in got] == [i.reference for i in batch.items]
        assert all(i.status.is_final for i in got)
    final = {i.id: i for items in results.values() for i in items}
    assert len(final) == 400
    closed_result = next(i for i in final.values() if i.reference == f"run-1:{closed.dni}")
    assert (closed_result.status, closed_result.reason) == (ItemStatus.REJECTED, "account_closed")
    from_hooks: dict[str, ItemStatus] = {}
    for event in hooks.values():
        for item in event.data.items:
            assert from_hooks.setdefault(item.id, item.status) == item.status  # never contradicts itself
    assert from_hooks == {item_id: item.status for item_id, item in final.items()}

    # Nothing was sent twice with different content, nothing created twice.
    stats = await control.stats()
    assert stats["idempotency_conflicts"] == 0
    assert stats["batch_reference_conflicts"] == 0
    assert stats["batches"] == 20
    assert stats["items"]["total"] == 400
    assert stats["items"]["pending"] == 0
    funding = await bank.get_funding_account()
    credited = sum(i.amount for i in final.values() if i.status is ItemStatus.CREDITED)
    assert (funding.held, funding.balance) == (0, 400 * 200_00 - credited)

    # The profile really was hostile, and the runner's loops stayed bounded.
    faults = stats["faults_injected"]
    assert faults.get("timeout_after_apply", 0) > 0
    assert faults.get("error_after_apply", 0) > 0
    assert bank.outcomes["BankAmbiguousError"] > 0
    assert stats["replays"] > 0
    assert any(i.reason == "processing_error" for i in final.values())
    assert len(deliveries) > len(hooks)  # duplicated webhooks were absorbed
    assert sim._requests < 1500
    await http.aclose()
    await bank.aclose()
    await sim.aclose()
