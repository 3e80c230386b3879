"""The bank client against respx: retries, backoff, idempotency keys, error mapping, pagination, edges."""

from __future__ import annotations

import json
from datetime import date, datetime

import httpx
import pytest
import respx
from pydantic import ValidationError
from structlog.testing import capture_logs

from adapters.bank.client import BankClient
from adapters.bank.retry import RetryPolicy, parse_retry_after
from services.config import Settings
from services.ports.bank import (
    BankAmbiguousError,
    BankAuthError,
    BankBatchRefused,
    BankConflict,
    BankDuplicateBatch,
    BankIdempotencyConflict,
    BankInsufficientFunds,
    BankInvalidRequest,
    BankNotFound,
    BankPermanentError,
    BankPort,
    BankProtocolError,
    BankRateLimited,
    BankRetryableError,
    BankUnavailable,
    BatchItem,
    BatchStatus,
    CreditBatch,
    ItemResult,
    ItemStatus,
    LineType,
    OpenAccount,
    RejectReason,
    item_outcome,
    submit_or_recover,
)
from tests.adapters.bank.bank_fixtures import (
    BASE,
    Sleeps,
    account_json,
    batch_json,
    error_json,
    funding_json,
    item_json,
    line_json,
    page,
)

pytestmark = pytest.mark.respx(base_url=BASE, assert_all_called=False)

TITULAR = OpenAccount(dni="10117410-2", name="Rosa Quispe Mamani", ubigeo="080206")


def a_batch(reference: str = "2025-B1:batch:0001") -> CreditBatch:
    items = [
        BatchItem(reference=f"{reference}:{i}", dni="10117410", amount=200_00, account_number="040820000001")
        for i in range(2)
    ]
    return CreditBatch.build(reference, items)


def test_client_implements_the_port(client: BankClient) -> None:
    port: BankPort = client
    assert isinstance(port, BankPort)


# --- success paths ---------------------------------------------------------------------------------------


async def test_open_account_sends_key_auth_and_parses(respx_mock: respx.MockRouter, client: BankClient) -> None:
    route = respx_mock.post("/v1/accounts").respond(201, json=account_json())
    account = await client.open_account(TITULAR, idempotency_key="open:hh-1")
    assert account.id == "acct_bcdfghjklm"
    assert account.opened_at == datetime.fromisoformat("2025-01-06T08:00:00-05:00")
    request = route.calls.last.request
    assert request.headers["Idempotency-Key"] == "open:hh-1"
    assert request.headers["Authorization"] == "Bearer test-key"
    assert json.loads(request.content) == {
        "dni": "10117410",
        "name": "Rosa Quispe Mamani",
        "ubigeo": "080206",
    }


async def test_submit_batch_returns_the_acknowledgement(respx_mock: respx.MockRouter, client: BankClient) -> None:
    route = respx_mock.post("/v1/credit_batches").respond(201, json=batch_json())
    ack = await client.submit_batch(a_batch(), idempotency_key="run-7:batch-1")
    assert ack.status is BatchStatus.RECEIVED
    assert ack.id.startswith("bat_")
    body = json.loads(route.calls.last.request.content)
    assert body["control_count"] == 2
    assert body["control_amount"] == 400_00
    assert [i["amount"] for i in body["items"]] == [200_00, 200_00]


async def test_lookups_parse_every_object(respx_mock: respx.MockRouter, client: BankClient) -> None:
    respx_mock.get("/v1/accounts/acct_bcdfghjklm").respond(
        json=account_json(status="closed", closed_at="2025-03-01T10:00:00-05:00")
    )
    respx_mock.get("/v1/credit_batches/bat_bcdfghjklm").respond(json=batch_json(status="settled"))
    respx_mock.get("/v1/credit_items/itm_x").respond(
        json=item_json(1, status="rejected", reason="dni_mismatch", statement_line_id=None)
    )
    respx_mock.get("/v1/funding_account").respond(json=funding_json())
    assert (await client.get_account("acct_bcdfghjklm")).closed_at is not None
    assert (await client.get_batch("bat_bcdfghjklm")).status is BatchStatus.SETTLED
    item = await client.get_item("itm_x")
    assert (item.status, item.reason) == (ItemStatus.REJECTED, RejectReason.DNI_MISMATCH)
    funding = await client.get_funding_account()
    assert (funding.balance, funding.held, funding.available) == (1_000_00, 400_00, 600_00)


async def test_batch_by_reference_is_none_when_never_seen(respx_mock: respx.MockRouter, client: BankClient) -> None:
    route = respx_mock.get("/v1/credit_batches").mock(
        side_effect=lambda request: httpx.Response(
            200, json=page([batch_json()] if request.url.params["reference"] == "2025-B1:batch:0001" else [])
        )
    )
    assert (await client.get_batch_by_reference("2025-B1:batch:0001")) is not None
    assert (await client.get_batch_by_reference("2025-B1:batch:0002")) is None
    assert route.call_count == 2


# --- retries, backoff, idempotency ------------------------------------------------------------------------


async def test_5xx_then_success_reuses_key_and_bytes(
    respx_mock: respx.MockRouter, client: BankClient, sleeps: Sleeps
) -> None:
    route = respx_mock.post("/v1/credit_batches").mock(
        side_effect=[httpx.Response(503), httpx.Response(500), httpx.Response(201, json=batch_json())]
    )
    ack = await client.submit_batch(a_batch(), idempotency_key="run-7:batch-1")
    assert ack.id == "bat_bcdfghjklm"
    assert route.call_count == 3
    keys = {call.request.headers["Idempotency-Key"] for call in route.calls}
    bodies = {call.request.content for call in route.calls}
    assert keys == {"run-7:batch-1"}
    assert len(bodies) == 1
    assert sleeps.delays == pytest.approx([0.5, 1.0], rel=1e-3)  # full jitter at its maximum: the caps


async def test_backoff_is_full_jitter_capped_and_attempts_bounded(respx_mock: respx.MockRouter, sleeps: Sleeps) -> None:
    draws = iter([0.0, 0.5, 0.999, 0.25, 0.75, 0.5, 0.5, 0.5])
    client = BankClient(
        BASE,
        api_key="k",
        retry=RetryPolicy(max_attempts=7, base_delay=0.5, max_delay=2.0),
        sleep=sleeps,
        random=lambda: next(draws),
    )
    route = respx_mock.get("/v1/funding_account").respond(502)
    with pytest.raises(BankUnavailable) as info:
        await client.get_funding_account()
    assert route.call_count == 7
    assert info.value.attempts == 7
    caps = [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert sleeps.delays == pytest.approx([0.0, 0.5, 1.998, 0.5, 1.5, 1.0], rel=1e-6)
    assert all(0 <= d <= cap for d, cap in zip(sleeps.delays, caps, strict=True))
    await client.aclose()


def test_retry_policy_bounds() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.25, max_delay=8)
    assert [policy.backoff_cap(n) for n in range(1, 8)] == [0.25, 0.5, 1, 2, 4, 8, 8]
    assert policy.backoff(3, 1.7) == 1.0  # a random value outside [0, 1) cannot exceed the cap
    assert policy.backoff(3, -1) == 0.0
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="start at 1"):
        policy.backoff_cap(0)


def test_retry_after_header_forms() -> None:
    now = datetime.fromisoformat("2025-01-06T13:00:00+00:00")
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Mon, 06 Jan 2025 13:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Mon, 06 Jan 2025 12:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_429_honours_retry_after(respx_mock: respx.MockRouter, client: BankClient, sleeps: Sleeps) -> None:
    route = respx_mock.get("/v1/funding_account").mock(
        side_effect=[
            httpx.Response(
                429, headers={"Retry-After": "3"}, json=error_json("rate_limited", type_="rate_limit_error")
            ),
            httpx.Response(429),
            httpx.Response(200, json=funding_json()),
        ]
    )
    await client.get_funding_account()
    assert route.call_count == 3
    assert sleeps.delays == pytest.approx([3.0, 1.0], rel=1e-3)  # Retry-After, then the backoff cap of retry 2


async def test_429_exhausted_is_rate_limited(respx_mock: respx.MockRouter, client: BankClient) -> None:
    respx_mock.get("/v1/credit_batches/bat_x").respond(429, headers={"Retry-After": "2"})
    with pytest.raises(BankRateLimited) as info:
        await client.get_batch("bat_x")
    assert info.value.retry_after == 2.0
    assert info.value.attempts == 4
    assert isinstance(info.value, BankRetryableError)


async def test_retry_after_beyond_the_limit_stops_at_once(
    respx_mock: respx.MockRouter, client: BankClient, sleeps: Sleeps
) -> None:
    route = respx_mock.get("/v1/credit_batches/bat_x").respond(429, headers={"Retry-After": "3600"})
    with pytest.raises(BankRateLimited) as info:
        await client.get_batch("bat_x")
    assert route.call_count == 1
    assert sleeps.delays == []
    assert info.value.retry_after == 3600


async def test_connection_errors_are_retried(respx_mock: respx.MockRouter, client: BankClient) -> None:
    route = respx_mock.get("/v1/credit_batches/bat_bcdfghjklm").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.ReadError("reset"),
            httpx.Response(200, json=batch_json()),
        ]
    )
    assert (await client.get_batch("bat_bcdfghjklm")).id == "bat_bcdfghjklm"
    assert route.call_count == 3


async def test_get_that_never_answers_is_unavailable_not_ambiguous(
    respx_mock: respx.MockRouter, client: BankClient
) -> None:
    respx_mock.get("/v1/credit_batches/bat_x").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(BankUnavailable) as info:
        await client.get_batch("bat_x")
    assert not isinstance(info.value, BankAmbiguousError)


# --- ambiguity --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("no answer"),
        httpx.RemoteProtocolError("dropped"),
        httpx.WriteError("broken pipe"),
        httpx.Response(502),
        httpx.Response(500),
    ],
    ids=["read-timeout", "dropped", "write-error", "502", "500"],
)
async def test_post_that_may_have_been_applied_is_ambiguous(
    respx_mock: respx.MockRouter, client: BankClient, failure: object
) -> None:
    route = respx_mock.post("/v1/credit_batches").mock(
        side_effect=[failure, httpx.Response(503), httpx.ConnectError("x"), httpx.Response(503)]
    )
    with pytest.raises(BankAmbiguousError) as info:
        await client.submit_batch(a_batch(), idempotency_key="run-7:batch-1")
    error = info.value
    assert route.call_count == 4
    assert (error.operation, error.idempotency_key, error.reference) == (
        "submit_batch",
        "run-7:batch-1",
        "2025-B1:batch:0001",
    )
    assert "look it up" in error.detail


async def test_post_never_sent_is_retryable_not_ambiguous(respx_mock: respx.MockRouter, client: BankClient) -> None:
    respx_mock.post("/v1/credit_batches").mock(
        side_effect=[
            httpx.ConnectError("down"),
            httpx.Response(503),
            httpx.Response(429),
            httpx.ConnectTimeout("x"),
        ]
    )
    with pytest.raises(BankUnavailable) as info:
        await client.submit_batch(a_batch(), idempotency_key="k")
    assert not isinstance(info.value, BankAmbiguousError)


async def test_ambiguous_attempt_then_success_is_success(respx_mock: respx.MockRouter, client: BankClient) -> None:
    route = respx_mock.post("/v1/credit_batches").mock(
        side_effect=[
            httpx.ReadTimeout("x"),
            httpx.Response(201, json=batch_json(), headers={"Idempotent-Replayed": "true"}),
        ]
    )
    assert (await client.submit_batch(a_batch(), idempotency_key="k")).id == "bat_bcdfghjklm"
    assert route.calls[0].request.content == route.calls[1].request.content


async def test_per_attempt_deadline_covers_transports_without_timeouts(sleeps: Sleeps) -> None:
    import asyncio

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    client = BankClient(
        BASE, api_key="k", timeout=0.05, max_attempts=2, transport=httpx.MockTransport(hang), sleep=sleeps
    )
    with pytest.raises(BankAmbiguousError) as info:
        await client.submit_batch(a_batch(), idempotency_key="k")
    assert info.value.attempts == 2
    await client.aclose()


# --- error mapping ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "idempotency_key_missing", BankInvalidRequest),
        (401, "api_key_invalid", BankAuthError),
        (403, "forbidden", BankAuthError),
        (404, "resource_missing", BankNotFound),
        (409, "idempotency_key_reused", BankIdempotencyConflict),
        (409, "batch_reference_exists", BankDuplicateBatch),
        (409, "insufficient_funds", BankInsufficientFunds),
        (409, "account_exists", BankConflict),
        (422, "control_totals_mismatch", BankBatchRefused),
        (422, "parameter_invalid", BankInvalidRequest),
        (418, "teapot", BankPermanentError),
    ],
)
async def test_4xx_maps_to_a_named_permanent_error_without_retry(
    respx_mock: respx.MockRouter, client: BankClient, status: int, code: str, error: type[Exception]
) -> None:
    route = respx_mock.post("/v1/credit_batches").respond(
        status, json=error_json(code, "because", param="items[0].amount")
    )
    with pytest.raises(error) as info:
        await client.submit_batch(a_batch(), idempotency_key="k")
    assert type(info.value) is error
    assert isinstance(info.value, BankPermanentError)
    assert route.call_count == 1
    assert (info.value.status, info.value.code, info.value.request_id) == (status, code, "req_bcdfghjklm")
    assert info.value.extra["param"] == "items[0].amount"
    assert "because" in info.value.detail


async def test_error_without_envelope_still_maps(respx_mock: respx.MockRouter, client: BankClient) -> None:
    respx_mock.get("/v1/accounts/acct_x").respond(404, text="<html>not found</html>")
    with pytest.raises(BankNotFound) as info:
        await client.get_account("acct_x")
    assert info.value.code is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps(account_json(balance=12.5)).encode(),
        json.dumps(account_json(balance=True)).encode(),
        b"{}",
    ],
    ids=["garbage", "float-amount", "bool-amount", "missing-fields"],
)
async def test_malformed_answer_is_a_protocol_error(
    respx_mock: respx.MockRouter, client: BankClient, body: bytes
) -> None:
    respx_mock.get("/v1/accounts/acct_x").respond(200, content=body)
    with pytest.raises(BankProtocolError):
        await client.get_account("acct_x")


async def test_bad_url_is_permanent(client: BankClient) -> None:
    bad = BankClient("ftp://bank.test", api_key="k")
    with pytest.raises(BankPermanentError, match="bad bank URL"):
        await bad.get_funding_account()
    await bad.aclose()


# --- edges: no floats, no bools, stable keys --------------------------------------------------------------


@pytest.mark.parametrize("amount", [200.0, 200.5, True, "20000", -1, 0])
def test_batch_item_refuses_non_integer_or_non_positive_amounts(amount: object) -> None:
    with pytest.raises(ValidationError):
        BatchItem(reference="r", dni="10117410", amount=amount, account_number="040820000001")  # type: ignore[arg-type]


def test_batch_item_needs_exactly_one_target_and_valid_identifiers() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        BatchItem(reference="r", dni="10117410", amount=1)
    with pytest.raises(ValidationError, match="check digit 2"):
        BatchItem(reference="r", dni="10117410", amount=1, cci="00219119184091600052")
    with pytest.raises(ValidationError, match="check character"):
        BatchItem(reference="r", dni="10117410-9", amount=1, account_number="040820000001")
    with pytest.raises(ValidationError, match="at most 1000"):
        CreditBatch(
            reference="b",
            control_count=1,
            control_amount=1,
            items=[BatchItem(reference="r", dni="10117410", amount=1, account_number="040820000001")] * 1001,
        )


@pytest.mark.parametrize("limit", [0, 1001, True, 10.0])
async def test_page_limits_are_checked_before_sending(client: BankClient, limit: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        await client.list_batch_items("bat_x", limit=limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["", None, "x" * 256, 7])
async def test_idempotency_key_is_required(client: BankClient, key: object) -> None:
    with pytest.raises(ValueError, match="idempotency_key"):
        await client.submit_batch(a_batch(), idempotency_key=key)  # type: ignore[arg-type]


async def test_only_models_are_sent(client: BankClient) -> None:
    with pytest.raises(TypeError):
        await client.submit_batch(a_batch().model_dump(), idempotency_key="k")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await client.list_statement_lines(from_date=datetime(2025, 1, 1))  # type: ignore[arg-type]


async def test_ids_are_escaped_in_paths(respx_mock: respx.MockRouter, client: BankClient) -> None:
    route = respx_mock.get(url__regex=r".*/v1/accounts/\.\.%2Fx$").respond(404)
    with pytest.raises(BankNotFound):
        await client.get_account("../x")
    assert route.called


# --- pagination ---------------------------------------------------------------------------------------------


async def test_batch_items_iteration_follows_cursors(respx_mock: respx.MockRouter, client: BankClient) -> None:
    items = [item_json(n) for n in range(7)]

    def serve(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        limit = int(request.url.params["limit"])
        start = 0 if cursor is None else [i["id"] for i in items].index(cursor) + 1
        chunk = items[start : start + limit]
        return httpx.Response(200, json=page(chunk, has_more=start + limit < len(items)))

    route = respx_mock.get("/v1/credit_batches/bat_bcdfghjklm/items").mock(side_effect=serve)
    got = [item async for item in client.iter_batch_items("bat_bcdfghjklm", status=ItemStatus.CREDITED, page_size=3)]
    assert [i.reference for i in got] == [i["reference"] for i in items]
    assert route.call_count == 3
    assert [c.request.url.params.get("cursor") for c in route.calls] == [None, items[2]["id"], items[5]["id"]]
    assert all(c.request.url.params["status"] == "credited" for c in route.calls)


async def test_batch_outcomes_are_the_items_following_cursors_by_either_parse(
    respx_mock: respx.MockRouter, client: BankClient
) -> None:
    """Pages in the bank's plain form are read without models; one that is not (here an item's time with a
    space, which the model accepts) goes through the model; both give the items' outcomes, in order; an item
    the model refuses is the bank's protocol error."""
    items = [item_json(n, id=f"itm_{n:08d}") for n in range(2500)]
    items[4].update(status="rejected", reason="dni_mismatch")
    items[1500]["settled_at"] = "2025-01-06 08:05:00-05:00"  # the second page leaves the fast path

    def serve(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        start = 0 if cursor is None else [i["id"] for i in items].index(cursor) + 1
        chunk = items[start : start + int(request.url.params["limit"])]
        return httpx.Response(200, json=page(chunk, has_more=start + len(chunk) < len(items)))

    route = respx_mock.get("/v1/credit_batches/bat_bcdfghjklm/items").mock(side_effect=serve)
    got = [o async for o in client.iter_batch_outcomes("bat_bcdfghjklm")]
    expected = [item_outcome(ItemResult.model_validate(i)) for i in items]
    assert got == expected
    assert got[4] == (items[4]["reference"], items[4]["id"], 200_00, "rejected", "dni_mismatch")
    assert route.call_count == 3
    items[2100]["amount"] = 1.5  # refused by the model too
    with pytest.raises(BankProtocolError, match="list_batch_items: unexpected answer from the bank"):
        _ = [o async for o in client.iter_batch_outcomes("bat_bcdfghjklm")]


async def test_settled_batches_are_listed_in_one_call(respx_mock: respx.MockRouter, client: BankClient) -> None:
    batches = [batch_json(id=f"bat_bcdfghjkl{'bcdfg'[n]}", status="settled", pending_count=0) for n in range(5)]

    def serve(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        limit = int(request.url.params["limit"])
        start = 0 if cursor is None else [b["id"] for b in batches].index(cursor) + 1
        return httpx.Response(200, json=page(batches[start : start + limit], has_more=start + limit < len(batches)))

    route = respx_mock.get("/v1/credit_batches").mock(side_effect=serve)
    first = await client.list_batches(status=BatchStatus.SETTLED, limit=2)
    assert [b.id for b in first.data] == [b["id"] for b in batches[:2]]
    assert first.has_more
    assert route.calls.last.request.url.params["status"] == "settled"
    got = [b async for b in client.iter_batches(status=BatchStatus.SETTLED, page_size=2)]
    assert [b.status for b in got] == [BatchStatus.SETTLED] * 5
    assert [c.request.url.params.get("cursor") for c in route.calls[1:]] == [None, batches[1]["id"], batches[3]["id"]]
    assert len((await client.list_batches()).data) == 5  # every batch
    assert "status" not in route.calls.last.request.url.params


async def test_a_batch_listing_refuses_a_bad_status_or_limit_before_sending(
    respx_mock: respx.MockRouter, client: BankClient
) -> None:
    route = respx_mock.get("/v1/credit_batches").respond(json=page([]))
    with pytest.raises(ValueError, match="paid"):
        await client.list_batches(status="paid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        await client.list_batches(limit=0)
    with pytest.raises(ValueError, match="limit"):
        await client.list_batches(limit=True)
    assert route.call_count == 0


async def test_statement_iteration_passes_dates_and_resumes_after_a_line(
    respx_mock: respx.MockRouter, client: BankClient
) -> None:
    lines = [line_json(n) for n in range(5)]
    route = respx_mock.get("/v1/accounts/acct_bcdfghjklm/statement_lines").mock(
        side_effect=[
            httpx.Response(200, json=page(lines[1:3], True)),
            httpx.Response(200, json=page(lines[3:])),
        ]
    )
    got = [
        line
        async for line in client.iter_statement_lines(
            "acct_bcdfghjklm",
            from_date=date(2025, 1, 1),
            to_date=date(2025, 1, 31),
            after=lines[0]["id"],
            page_size=2,
        )
    ]
    assert [line.id for line in got] == [x["id"] for x in lines[1:]]
    assert got[0].type is LineType.PROGRAM_CREDIT
    assert got[-1].balance_after == 5 * 200_00
    first = route.calls[0].request.url.params
    assert (first["from_date"], first["to_date"], first["cursor"], first["limit"]) == (
        "2025-01-01",
        "2025-01-31",
        lines[0]["id"],
        "2",
    )


async def test_all_accounts_statement_uses_the_global_route(respx_mock: respx.MockRouter, client: BankClient) -> None:
    route = respx_mock.get("/v1/statement_lines").respond(json=page([line_json(0)]))
    assert len([x async for x in client.iter_statement_lines()]) == 1
    assert route.called


@pytest.mark.parametrize("next_cursor", [None, "sln_same"], ids=["missing", "repeated"])
async def test_a_cursor_that_does_not_advance_ends_the_loop(
    respx_mock: respx.MockRouter, client: BankClient, next_cursor: str | None
) -> None:
    body = {"object": "list", "data": [line_json(0)], "has_more": True, "next_cursor": next_cursor}
    route = respx_mock.get("/v1/statement_lines").respond(json=body)
    with pytest.raises(BankProtocolError, match="did not advance"):
        _ = [x async for x in client.iter_statement_lines()]
    assert route.call_count <= 2


async def test_find_accounts_is_a_read_that_keeps_the_dni_out_of_the_url(
    respx_mock: respx.MockRouter, client: BankClient
) -> None:
    route = respx_mock.post("/v1/accounts/search").respond(json=page([account_json()]))
    assert len(await client.find_accounts(dni="10117410")) == 1
    request = route.calls.last.request
    assert json.loads(request.content) == {"dni": "10117410"}
    assert "10117410" not in str(request.url)
    assert "Idempotency-Key" not in request.headers
    with pytest.raises(ValueError, match="exactly one"):
        await client.find_accounts(dni="10117410", cci="00219119184091600051")
    with pytest.raises(ValueError, match="exactly one"):
        await client.find_accounts()


async def test_a_search_that_times_out_is_not_ambiguous(respx_mock: respx.MockRouter, client: BankClient) -> None:
    respx_mock.post("/v1/accounts/search").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(BankUnavailable) as info:
        await client.find_accounts(cci="00219119184091600051")
    assert not isinstance(info.value, BankAmbiguousError)


# --- resolving an unknown outcome ---------------------------------------------------------------------------


async def test_recover_finds_the_batch_instead_of_resending(respx_mock: respx.MockRouter, client: BankClient) -> None:
    post = respx_mock.post("/v1/credit_batches").mock(side_effect=httpx.ReadTimeout("x"))
    respx_mock.get("/v1/credit_batches").respond(json=page([batch_json()]))
    found = await submit_or_recover(client, a_batch(), idempotency_key="run-7:batch-1")
    assert found.id == "bat_bcdfghjklm"
    assert post.call_count == 4  # one call's attempts, no second round


async def test_recover_resends_the_same_content_when_never_seen(
    respx_mock: respx.MockRouter, client: BankClient
) -> None:
    post = respx_mock.post("/v1/credit_batches").mock(
        side_effect=[
            httpx.ConnectError("x"),
            httpx.ReadTimeout("x"),
            httpx.Response(503),
            httpx.Response(503),
            httpx.Response(201, json=batch_json()),
        ]
    )
    lookup = respx_mock.get("/v1/credit_batches").respond(json=page([]))
    ack = await submit_or_recover(client, a_batch(), idempotency_key="run-7:batch-1")
    assert ack.id == "bat_bcdfghjklm"
    assert lookup.call_count == 1
    assert {c.request.headers["Idempotency-Key"] for c in post.calls} == {"run-7:batch-1"}
    assert len({c.request.content for c in post.calls}) == 1


async def test_recover_flags_a_reference_with_other_totals(respx_mock: respx.MockRouter, client: BankClient) -> None:
    respx_mock.post("/v1/credit_batches").mock(side_effect=httpx.ReadTimeout("x"))
    respx_mock.get("/v1/credit_batches").respond(json=page([batch_json(control_amount=999_00)]))
    with pytest.raises(BankConflict, match="other totals"):
        await submit_or_recover(client, a_batch(), idempotency_key="k")


async def test_recover_is_bounded_and_stays_ambiguous(respx_mock: respx.MockRouter, client: BankClient) -> None:
    post = respx_mock.post("/v1/credit_batches").mock(side_effect=httpx.ReadTimeout("x"))
    respx_mock.get("/v1/credit_batches").respond(json=page([]))
    with pytest.raises(BankAmbiguousError):
        await submit_or_recover(client, a_batch(), idempotency_key="k", max_rounds=2)
    assert post.call_count == 2 * 4


async def test_recover_does_not_resend_when_the_lookup_fails(respx_mock: respx.MockRouter, client: BankClient) -> None:
    post = respx_mock.post("/v1/credit_batches").mock(side_effect=httpx.ReadTimeout("x"))
    respx_mock.get("/v1/credit_batches").respond(503)
    with pytest.raises(BankAmbiguousError, match="lookup failed"):
        await submit_or_recover(client, a_batch(), idempotency_key="k")
    assert post.call_count == 4


# --- logs and settings --------------------------------------------------------------------------------------


async def test_logs_carry_no_personal_data(respx_mock: respx.MockRouter, client: BankClient) -> None:
    respx_mock.post("/v1/accounts").mock(side_effect=[httpx.Response(503), httpx.Response(201, json=account_json())])
    respx_mock.post("/v1/credit_batches").mock(side_effect=[httpx.ReadTimeout("x")] * 4)
    with capture_logs() as logs:
        await client.open_account(TITULAR, idempotency_key="open:hh-1")
        with pytest.raises(BankAmbiguousError):
            await client.submit_batch(a_batch(), idempotency_key="k")
    assert any(e["event"] == "bank.retry" for e in logs)
    text = repr(logs)
    for personal in ("10117410", "Rosa", "Quispe", "040820000001", "01808204082000000181"):
        assert personal not in text


async def test_client_from_settings() -> None:
    settings = Settings(
        bank_url="http://127.0.0.1:8100", bank_api_key="s3cret", bank_timeout_seconds=3, bank_max_attempts=2
    )
    client = BankClient.from_settings(settings)
    assert (client.base_url, client.timeout, client.retry.max_attempts) == ("http://127.0.0.1:8100", 3.0, 2)
    await client.aclose()
    with pytest.raises(ValueError, match="CCT_BANK_URL"):
        BankClient.from_settings(Settings(bank_url=None))
