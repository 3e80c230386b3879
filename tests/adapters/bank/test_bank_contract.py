"""The bank interface's contract, run against both doubles: the respx-mounted fake and the simulated bank.

Every test here runs twice. If the fake (used by fast unit tests elsewhere) and the simulator (used end to
end) ever disagree about a field, a status or a rule, one of the two runs fails.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import httpx
import pytest
import respx

from adapters.bank.client import BankClient
from adapters.bank.fake import FakeBank
from adapters.bank.simulator import SimControl, create_app, get_simulator
from services.identifiers import BN_BANK_CODE, make_cci, normalize_cci
from services.ports.bank import (
    Account,
    AccountStatus,
    BankBatchRefused,
    BankConflict,
    BankDuplicateBatch,
    BankIdempotencyConflict,
    BankInsufficientFunds,
    BankInvalidRequest,
    BankNotFound,
    BatchItem,
    BatchStatus,
    CreditBatch,
    EventType,
    ItemStatus,
    LineType,
    OpenAccount,
    RejectReason,
    WebhookEvent,
    WebhookVerificationError,
)

BASE = "https://bank.test"
SECRET = "whsec_contract_secret"
LIMIT = 1_000_00
HEADERS = {"Authorization": "Bearer contract", "Content-Type": "application/json"}


@dataclass
class Double:
    name: str
    bank: BankClient
    control: SimControl
    http: httpx.AsyncClient
    events: list[WebhookEvent] = field(default_factory=list)
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def titular(self, n: int, ubigeo: str = "080206") -> Account:
        request = OpenAccount(dni=f"{40_000_000 + n:08d}", name=f"Titular {n}", ubigeo=ubigeo)
        return await self.bank.open_account(request, idempotency_key=f"open:{n}")


@pytest.fixture(params=["fake", "simulator"])
async def double(request: pytest.FixtureRequest) -> AsyncIterator[Double]:
    holder: list[Double] = []

    async def receiver(headers: Mapping[str, str], body: bytes) -> int:
        me = holder[0]
        me.deliveries.append((dict(headers), body))
        me.events.append(me.bank.verify_webhook(headers, body))
        return 200

    if request.param == "fake":
        fake = FakeBank(item_amount_limit=LIMIT, webhook_receiver=receiver, webhook_secret=SECRET)
        with respx.mock(base_url=BASE, assert_all_called=False) as router:
            router.route().mock(side_effect=fake)
            async with httpx.AsyncClient(base_url=BASE) as http:
                bank = BankClient(BASE, api_key="contract", webhook_secret=SECRET)
                holder.append(Double("fake", bank, SimControl(http), http))
                yield holder[0]
                await bank.aclose()
    else:
        app = create_app(
            seed=11,
            item_amount_limit=LIMIT,
            auto_advance_seconds=0,
            webhook_target=receiver,
            webhook_secret=SECRET,
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            bank = BankClient(BASE, api_key="contract", webhook_secret=SECRET, http_client=http)
            holder.append(Double("simulator", bank, SimControl(http), http))
            yield holder[0]
            await get_simulator(app).aclose()


def item(
    ref: str, account: Account, amount: int = 200_00, *, dni: str | None = None, by_cci: bool = False
) -> BatchItem:
    target = {"cci": account.cci} if by_cci else {"account_number": account.account_number}
    return BatchItem(reference=ref, dni=dni or account.dni, amount=amount, **target)  # type: ignore[arg-type]


# --- accounts -----------------------------------------------------------------------------------------------


async def test_open_look_up_and_close_an_account(double: Double) -> None:
    account = await double.titular(1)
    assert account.id.startswith("acct_")
    assert account.status is AccountStatus.OPEN
    assert account.balance == 0
    assert len(account.account_number) == 12
    assert account.account_number.isdigit()
    assert normalize_cci(account.cci, bank=BN_BANK_CODE) == account.cci
    assert account.cci[6:18] == account.account_number
    assert await double.bank.get_account(account.id) == account
    assert await double.bank.find_accounts(dni=account.dni) == [account]
    assert await double.bank.find_accounts(cci=account.cci) == [account]
    assert await double.bank.find_accounts(account_number=account.account_number) == [account]
    closed = await double.bank.close_account(account.id, idempotency_key="close:1")
    assert closed.status is AccountStatus.CLOSED
    assert closed.closed_at is not None
    assert await double.bank.find_accounts(dni=account.dni) == []
    with pytest.raises(BankConflict):
        await double.bank.close_account(account.id, idempotency_key="close:1-again")


async def test_opening_is_idempotent_and_one_per_titular(double: Double) -> None:
    first = await double.titular(2)
    assert await double.titular(2) == first  # same key, same body: the first answer
    with pytest.raises(BankIdempotencyConflict):
        await double.bank.open_account(
            OpenAccount(dni=first.dni, name="Other Name", ubigeo="080206"), idempotency_key="open:2"
        )
    with pytest.raises(BankConflict) as info:
        await double.bank.open_account(
            OpenAccount(dni=first.dni, name="Titular 2", ubigeo="080206"), idempotency_key="open:2b"
        )
    assert info.value.code == "account_exists"


async def test_unknown_objects_are_not_found(double: Double) -> None:
    for call in (
        double.bank.get_account("acct_bbbbbbbbbb"),
        double.bank.get_batch("bat_bbbbbbbbbb"),
        double.bank.get_item("itm_bbbbbbbbbb"),
        double.bank.list_batch_items("bat_bbbbbbbbbb"),
        double.bank.close_account("acct_bbbbbbbbbb", idempotency_key="close:x"),
    ):
        with pytest.raises(BankNotFound):
            await call
    assert await double.bank.get_batch_by_reference("never-sent") is None


# --- batches ------------------------------------------------------------------------------------------------


async def test_a_batch_is_acknowledged_held_settled_and_paid_from_the_funding_account(double: Double) -> None:
    await double.control.deposit_funding(10_000_00, reference="treasury-1")
    accounts = [await double.titular(n) for n in range(10, 13)]
    batch = CreditBatch.build("B1:0001", [item(f"B1:{a.dni}", a) for a in accounts], description="2025-B1")
    ack = await double.bank.submit_batch(batch, idempotency_key="run-1:batch-1")
    assert ack.id.startswith("bat_")
    assert ack.status is BatchStatus.RECEIVED
    assert (ack.item_count, ack.control_amount, ack.pending_count, ack.description) == (
        3,
        600_00,
        3,
        "2025-B1",
    )
    funding = await double.bank.get_funding_account()
    assert (funding.balance, funding.held, funding.available) == (10_000_00, 600_00, 9_400_00)
    assert [(h.batch_id, h.amount) for h in funding.holds] == [(ack.id, 600_00)]
    assert [i.status for i in (await double.bank.list_batch_items(ack.id)).data] == [ItemStatus.PENDING] * 3

    await double.control.advance(hours=1)
    settled = await double.bank.get_batch(ack.id)
    assert settled.status is BatchStatus.SETTLED
    assert settled.settled_at is not None
    assert (settled.credited_count, settled.credited_amount, settled.pending_count) == (3, 600_00, 0)
    assert await double.bank.get_batch_by_reference("B1:0001") == settled
    funding = await double.bank.get_funding_account()
    assert (funding.balance, funding.held, funding.available, funding.holds) == (9_400_00, 0, 9_400_00, [])

    results = [i async for i in double.bank.iter_batch_items(ack.id)]
    assert [r.reference for r in results] == [f"B1:{a.dni}" for a in accounts]
    assert {r.status for r in results} == {ItemStatus.CREDITED}
    assert all(r.account_id == a.id and r.statement_line_id for r, a in zip(results, accounts, strict=True))
    assert await double.bank.get_item(results[0].id) == results[0]
    assert (await double.bank.get_account(accounts[0].id)).balance == 200_00


async def test_each_rejection_reason(double: Double) -> None:
    await double.control.deposit_funding(100_000_00)
    ok, closed, other, big, dup = [await double.titular(n) for n in range(20, 25)]
    await double.bank.close_account(closed.id, idempotency_key="close:21")
    first = await double.bank.submit_batch(CreditBatch.build("B2:0001", [item("B2:dup", dup)]), idempotency_key="b2-1")
    await double.control.advance(hours=1)
    assert (await double.bank.get_batch(first.id)).credited_count == 1
    missing_number = ok.account_number[:5] + "9999999"
    items = [
        item("B2:ok", ok),
        item("B2:closed", closed),
        BatchItem(reference="B2:missing", dni=ok.dni, amount=200_00, account_number=missing_number),
        item("B2:dni", other, dni="10117410"),
        item("B2:big", big, amount=LIMIT + 1),
        item("B2:dup", dup),
        item("B2:cci", big, by_cci=True),
    ]
    ack = await double.bank.submit_batch(CreditBatch.build("B2:0002", items), idempotency_key="b2-2")
    await double.control.advance(hours=1)
    results = {r.reference: r async for r in double.bank.iter_batch_items(ack.id)}
    assert {ref: (r.status, r.reason) for ref, r in results.items()} == {
        "B2:ok": (ItemStatus.CREDITED, None),
        "B2:closed": (ItemStatus.REJECTED, RejectReason.ACCOUNT_CLOSED),
        "B2:missing": (ItemStatus.REJECTED, RejectReason.ACCOUNT_NOT_FOUND),
        "B2:dni": (ItemStatus.REJECTED, RejectReason.DNI_MISMATCH),
        "B2:big": (ItemStatus.REJECTED, RejectReason.AMOUNT_LIMIT),
        "B2:dup": (ItemStatus.REJECTED, RejectReason.DUPLICATE_REFERENCE),
        "B2:cci": (ItemStatus.CREDITED, None),
    }
    batch = await double.bank.get_batch(ack.id)
    assert (batch.credited_count, batch.credited_amount) == (2, 400_00)
    assert (batch.rejected_count, batch.rejected_amount) == (5, 4 * 200_00 + LIMIT + 1)
    rejected = [r async for r in double.bank.iter_batch_items(ack.id, status=ItemStatus.REJECTED, page_size=2)]
    assert len(rejected) == 5
    funding = await double.bank.get_funding_account()
    assert funding.held == 0
    assert funding.balance == 100_000_00 - 200_00 - 400_00


async def test_mismatched_totals_refuse_the_whole_batch(double: Double) -> None:
    await double.control.deposit_funding(10_000_00)
    account = await double.titular(30)
    items = [item("B3:1", account), item("B3:2", account, 100_00)]
    for bad in (
        CreditBatch(reference="B3", control_count=2, control_amount=300_01, items=items),
        CreditBatch(reference="B3", control_count=3, control_amount=300_00, items=items),
    ):
        with pytest.raises(BankBatchRefused) as info:
            await double.bank.submit_batch(bad, idempotency_key=f"b3:{bad.control_count}:{bad.control_amount}")
        assert info.value.code == "control_totals_mismatch"
    assert await double.bank.get_batch_by_reference("B3") is None
    assert (await double.bank.get_funding_account()).held == 0
    ack = await double.bank.submit_batch(CreditBatch.build("B3", items), idempotency_key="b3:ok")
    assert ack.control_amount == 300_00


async def test_resubmission_rules(double: Double) -> None:
    await double.control.deposit_funding(10_000_00)
    account = await double.titular(40)
    batch = CreditBatch.build("B4", [item("B4:1", account)])
    ack = await double.bank.submit_batch(batch, idempotency_key="b4")
    assert await double.bank.submit_batch(batch, idempotency_key="b4") == ack  # a retry is a replay
    with pytest.raises(BankDuplicateBatch):
        await double.bank.submit_batch(batch, idempotency_key="b4-other-key")
    changed = CreditBatch.build("B4", [item("B4:1", account, 150_00)])
    with pytest.raises(BankIdempotencyConflict):
        await double.bank.submit_batch(changed, idempotency_key="b4")
    assert (await double.bank.get_funding_account()).held == 200_00  # held once


async def test_batches_are_listed_by_state(double: Double) -> None:
    await double.control.deposit_funding(10_000_00)
    accounts = [await double.titular(n) for n in range(90, 94)]
    settled = [
        await double.bank.submit_batch(CreditBatch.build(f"B9:{n}", [item(f"B9:{n}", a)]), idempotency_key=f"b9-{n}")
        for n, a in enumerate(accounts[:3])
    ]
    await double.control.advance(hours=1)
    waiting = await double.bank.submit_batch(
        CreditBatch.build("B9:3", [item("B9:3", accounts[3])]), idempotency_key="b9-3"
    )

    listed = await double.bank.list_batches(status=BatchStatus.SETTLED)
    assert [b.id for b in listed.data] == [b.id for b in settled]
    assert {b.status for b in listed.data} == {BatchStatus.SETTLED}
    assert not listed.has_more
    assert [b.id for b in (await double.bank.list_batches(status=BatchStatus.RECEIVED)).data] == [waiting.id]
    assert (await double.bank.list_batches(status=BatchStatus.PROCESSING)).data == []
    everything = [b.id async for b in double.bank.iter_batches(page_size=1)]
    assert everything == [b.id for b in [*settled, waiting]]
    one_by_one = [b.id async for b in double.bank.iter_batches(status=BatchStatus.SETTLED, page_size=2)]
    assert one_by_one == [b.id for b in settled]
    first = await double.bank.list_batches(status=BatchStatus.SETTLED, limit=1)
    assert first.has_more
    after = await double.bank.list_batches(status=BatchStatus.SETTLED, cursor=first.next_cursor, limit=2)
    assert [b.id for b in after.data] == [b.id for b in settled[1:]]
    found = await double.http.get(
        "/v1/credit_batches", params={"reference": "B9:3", "status": "settled"}, headers=HEADERS
    )
    assert found.json()["data"] == []
    bad = await double.http.get("/v1/credit_batches", params={"status": "paid"}, headers=HEADERS)
    assert (bad.status_code, bad.json()["error"]["code"], bad.json()["error"]["param"]) == (
        422,
        "parameter_invalid",
        "status",
    )


async def test_a_batch_beyond_the_funds_is_refused(double: Double) -> None:
    await double.control.deposit_funding(300_00)
    account = await double.titular(50)
    with pytest.raises(BankInsufficientFunds):
        await double.bank.submit_batch(
            CreditBatch.build("B5", [item("B5:1", account), item("B5:2", account)]), idempotency_key="b5"
        )
    assert await double.bank.get_batch_by_reference("B5") is None


# --- statements ---------------------------------------------------------------------------------------------


async def test_statements_of_households_and_of_the_program(double: Double) -> None:
    await double.control.deposit_funding(5_000_00, reference="treasury-7")
    accounts = [await double.titular(n) for n in range(60, 65)]
    ack = await double.bank.submit_batch(
        CreditBatch.build("B6", [item(f"B6:{i}", a, 100_00 * (i + 1)) for i, a in enumerate(accounts)]),
        idempotency_key="b6",
    )
    await double.control.advance(hours=1)
    lines = [x async for x in double.bank.iter_statement_lines(accounts[2].id)]
    assert [(x.type, x.amount, x.balance_after, x.reference) for x in lines] == [
        (LineType.PROGRAM_CREDIT, 300_00, 300_00, "B6:2")
    ]
    assert lines[0].id.startswith("sln_")
    item_line = (await double.bank.list_batch_items(ack.id)).data[2].statement_line_id
    assert item_line == lines[0].id

    funding = await double.bank.get_funding_account()
    program = [x async for x in double.bank.iter_statement_lines(funding.id, page_size=1)]
    assert [(x.type, x.amount, x.reference) for x in program] == [
        (LineType.DEPOSIT, 5_000_00, "treasury-7"),
        (LineType.PROGRAM_DEBIT, -1_500_00, "B6"),
    ]
    assert program[-1].balance_after == funding.balance == 3_500_00

    everything = [x async for x in double.bank.iter_statement_lines(page_size=2)]
    assert len(everything) == 7
    assert len({x.id for x in everything}) == 7
    day = everything[0].value_date
    assert [x async for x in double.bank.iter_statement_lines(from_date=day, to_date=day)] == everything
    assert [x async for x in double.bank.iter_statement_lines(after=everything[4].id)] == everything[5:]
    later = day.replace(year=day.year + 1)
    assert [x async for x in double.bank.iter_statement_lines(from_date=later)] == []


# --- webhooks -----------------------------------------------------------------------------------------------


async def test_settled_items_arrive_as_signed_webhooks(double: Double) -> None:
    await double.control.deposit_funding(5_000_00)
    accounts = [await double.titular(n) for n in range(70, 74)]
    ack = await double.bank.submit_batch(
        CreditBatch.build("B7", [item(f"B7:{i}", a) for i, a in enumerate(accounts)]), idempotency_key="b7"
    )
    await double.control.advance(hours=1)
    await double.control.flush_webhooks()
    assert double.deliveries, "no webhook was delivered"
    by_type = {e.type for e in double.events}
    assert by_type == {EventType.CREDIT_ITEMS_SETTLED, EventType.BATCH_SETTLED}
    delivered = {i.reference: i.status for e in double.events for i in e.data.items if e.data.batch.id == ack.id}
    assert delivered == {f"B7:{i}": ItemStatus.CREDITED for i in range(4)}
    listed = (await double.bank.list_events()).data
    assert {e.id for e in listed} == {e.id for e in double.events}
    headers, body = double.deliveries[0]
    with pytest.raises(WebhookVerificationError):
        double.bank.verify_webhook(headers, body.replace(b"credited", b"rejected"))


# --- wire-level errors --------------------------------------------------------------------------------------


async def test_bad_requests_get_a_specific_error(double: Double) -> None:
    account = await double.titular(80)
    good = {"reference": "a", "dni": account.dni, "amount": 100, "account_number": account.account_number}
    batch = {"reference": "B8", "control_count": 1, "control_amount": 100, "items": [good]}

    async def post(body: object, key: str | None = "k8") -> httpx.Response:
        headers = dict(HEADERS)
        if key:
            headers["Idempotency-Key"] = key
        return await double.http.post("/v1/credit_batches", content=json.dumps(body).encode(), headers=headers)

    float_amount = await post({**batch, "items": [{**good, "amount": 100.0}]})
    assert float_amount.status_code == 422
    error = float_amount.json()["error"]
    assert (error["code"], error["param"]) == ("parameter_invalid", "items[0].amount")
    assert error["request_id"]
    bool_amount = await post({**batch, "control_amount": True})
    assert (bool_amount.status_code, bool_amount.json()["error"]["param"]) == (422, "control_amount")
    bad_dni = await post({**batch, "items": [{**good, "dni": "10117410-9"}]})
    assert bad_dni.json()["error"]["param"] == "items[0].dni"
    foreign = make_cci("002", "191", "191840916000")
    other_bank = await post(
        {**batch, "items": [{**{k: v for k, v in good.items() if k != "account_number"}, "cci": foreign}]}
    )
    assert (other_bank.status_code, other_bank.json()["error"]["param"]) == (422, "items[0].cci")
    no_key = await post(batch, key=None)
    assert (no_key.status_code, no_key.json()["error"]["code"]) == (400, "idempotency_key_missing")
    unauthenticated = await double.http.get("/v1/funding_account")
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["type"] == "authentication_error"
    with pytest.raises(BankInvalidRequest):
        await double.bank.find_accounts(dni="1234")
