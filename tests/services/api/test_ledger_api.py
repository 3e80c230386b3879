"""The ledger over HTTP: auth and roles, problem+json, idempotency, pagination."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from adapters.postgres.database import Database
from tests.services.api.conftest import Api

PROBLEM = "application/problem+json"


async def _chart(api: Api) -> None:
    h = api.auth("operator")
    for body in (
        {"code": "mef:treasury", "currency": "PEN", "normal_balance": "debit"},
        {
            "code": "program:JUNTOS:fund",
            "currency": "PEN",
            "normal_balance": "credit",
            "no_overdraft": True,
            "hot": True,
        },
        {"code": "household:000001:savings", "currency": "PEN", "normal_balance": "credit", "no_overdraft": True},
    ):
        r = await api.client.post("/v1/accounts", json=body, headers=h)
        assert r.status_code == 201, r.text


def _pay(debit: str, credit: str, amount: Any, **extra: Any) -> dict[str, Any]:
    return {
        "postings": [{"account": debit, "debit": amount}, {"account": credit, "credit": amount}],
        "currency": "PEN",
        **extra,
    }


async def test_auth_is_required_and_roles_are_enforced(api: Api) -> None:
    r = await api.client.get("/v1/accounts")
    assert r.status_code == 401
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "urn:cct-ledger:problem:not-authenticated"
    assert r.headers["www-authenticate"] == "Bearer"
    r = await api.client.get("/v1/accounts", headers={"Authorization": "Bearer cct_not-a-token"})
    assert r.status_code == 401
    body = {"code": "x:1", "currency": "PEN", "normal_balance": "debit"}
    for role in ("auditor", "approver"):
        r = await api.client.post("/v1/accounts", json=body, headers=api.auth(role))
        assert r.status_code == 403, role
        assert r.json()["type"] == "urn:cct-ledger:problem:forbidden"
    r = await api.client.get("/v1/ledger/verify", headers=api.auth("operator"))
    assert r.status_code == 403
    for role in ("auditor", "admin"):
        r = await api.client.get("/v1/ledger/verify", headers=api.auth(role))
        assert r.status_code == 200
        assert r.json()["ok"] is True


async def test_transfer_lifecycle_records_the_acting_user(api: Api) -> None:
    await _chart(api)
    h = {**api.auth("operator"), "Idempotency-Key": "approp-1"}
    r = await api.client.post("/v1/transfers", json=_pay("mef:treasury", "program:JUNTOS:fund", 1_000_00), headers=h)
    assert r.status_code == 201
    assert r.json()["actor"] == "operator-user"
    hold = await api.client.post(
        "/v1/transfers",
        json=_pay("program:JUNTOS:fund", "household:000001:savings", 200_00, pending=True),
        headers={**api.auth("operator"), "Idempotency-Key": "hold-1"},
    )
    assert hold.json()["status"] == "pending"
    bal = (await api.client.get("/v1/accounts/program:JUNTOS:fund/balance", headers=api.auth("auditor"))).json()
    assert bal == {
        "posted": 1_000_00,
        "pending_debits": 200_00,
        "pending_credits": 0,
        "available": 800_00,
        "currency": "PEN",
        "version": 2,
    }
    tid = hold.json()["id"]
    posted = await api.client.post(
        f"/v1/transfers/{tid}/post", headers={**api.auth("operator"), "Idempotency-Key": "p"}
    )
    assert posted.status_code == 200
    assert posted.json()["status"] == "posted"
    again = await api.client.post(f"/v1/transfers/{tid}/void", headers={**api.auth("operator"), "Idempotency-Key": "v"})
    assert again.status_code == 409
    assert again.json()["type"] == "urn:cct-ledger:problem:transfer-not-pending"
    rev = await api.client.post(
        f"/v1/transfers/{tid}/reverse",
        json={"description": "error"},
        headers={**api.auth("admin"), "Idempotency-Key": "r"},
    )
    assert rev.status_code == 201
    assert rev.json()["reverses_id"] == tid
    got = (await api.client.get(f"/v1/transfers/{tid}", headers=api.auth("approver"))).json()
    assert got["reversed_by"] == rev.json()["id"]


async def test_replay_returns_the_same_body_and_reuse_is_a_conflict(api: Api) -> None:
    await _chart(api)
    h = {**api.auth("operator"), "Idempotency-Key": "same-key"}
    first = await api.client.post("/v1/transfers", json=_pay("mef:treasury", "program:JUNTOS:fund", 5_00), headers=h)
    second = await api.client.post("/v1/transfers", json=_pay("mef:treasury", "program:JUNTOS:fund", 5_00), headers=h)
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    third = await api.client.post("/v1/transfers", json=_pay("mef:treasury", "program:JUNTOS:fund", 6_00), headers=h)
    assert third.status_code == 409
    assert third.json()["type"] == "urn:cct-ledger:problem:idempotency-key-reused"


async def test_concurrent_duplicates_make_one_transfer(api: Api) -> None:
    await _chart(api)
    h = {**api.auth("operator"), "Idempotency-Key": "race"}
    body = _pay("mef:treasury", "program:JUNTOS:fund", 7_00)
    results = await asyncio.gather(*(api.client.post("/v1/transfers", json=body, headers=h) for _ in range(12)))
    assert {r.status_code for r in results} == {201}
    assert len({r.json()["id"] for r in results}) == 1
    bal = (await api.client.get("/v1/accounts/program:JUNTOS:fund", headers=api.auth("operator"))).json()
    assert bal["balance"]["posted"] == 7_00


@contextlib.asynccontextmanager
async def _inserts_held(db: Database) -> AsyncIterator[None]:
    """Hold every insert into ledger.transfers (reads go on) until the block ends: a group being written
    waits, and the requests that arrive meanwhile queue behind it."""
    async with db.connection() as conn, conn.transaction():
        await conn.execute("lock table ledger.transfers in exclusive mode")
        yield


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.005)


async def test_concurrent_transfers_are_written_together_and_answered_each(api: Api, db: Database) -> None:
    """Concurrent POSTs share groups (CCT_TRANSFER_GROUP_MAX); a refused one gets its own problem and the
    others are written, each with its caller's key and user."""
    # One worker taking up to 32 at once, whatever CCT_TRANSFER_GROUP_* say (the groups are made on first use).
    state = api.app.state
    state.settings = state.settings.model_copy(update={"transfer_group_max": 32, "transfer_group_workers": 1})
    await _chart(api)
    h = api.auth("operator")
    fund = _pay("mef:treasury", "program:JUNTOS:fund", 100_00)
    pay = _pay("program:JUNTOS:fund", "household:000001:savings", 10_00)
    bodies = [pay] * 6 + [_pay("program:JUNTOS:fund", "household:000001:savings", 500_00)] + [pay] * 3

    def post(body: dict[str, Any], key: str) -> Awaitable[httpx.Response]:
        return api.client.post("/v1/transfers", json=body, headers={**h, "Idempotency-Key": key})

    # The funding transfer is taken first and held; the ten payments queue behind it, then go as one group.
    async with _inserts_held(db):
        first = asyncio.ensure_future(post(fund, "f"))  # the first transfer: it makes the process's groups
        await _until(lambda: hasattr(api.app.state, "transfer_groups"))
        groups = api.app.state.transfer_groups
        stats = groups.stats
        await _until(lambda: stats.groups == 1)
        rest = asyncio.gather(*(post(b, f"g{n}") for n, b in enumerate(bodies)))
        await _until(lambda: groups.waiting == len(bodies))
    assert (await first).status_code == 201
    results = await rest
    assert stats.sizes == {1: 1, 10: 1}
    assert [r.status_code for r in results] == [201] * 6 + [409] + [201] * 3
    assert results[6].json()["type"] == "urn:cct-ledger:problem:insufficient-funds"
    assert len({r.json()["id"] for r in results if r.status_code == 201}) == 9
    assert {r.json()["actor"] for r in results if r.status_code == 201} == {"operator-user"}
    bal = (await api.client.get("/v1/accounts/program:JUNTOS:fund", headers=h)).json()
    assert bal["balance"]["posted"] == 10_00
    replay = await post(pay, "g3")
    assert (replay.status_code, replay.json()["id"]) == (201, results[3].json()["id"])
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (stats.fallbacks, stats.together) == (1, 0)  # the group holding the refusal: each went alone

    # Without a refusal, the requests that queue together are written together.
    small = _pay("program:JUNTOS:fund", "household:000001:savings", 1_00)
    before = stats.groups
    async with _inserts_held(db):
        first = asyncio.ensure_future(post(small, "m0"))
        await _until(lambda: stats.groups == before + 1)
        more = asyncio.gather(*(post(small, f"m{n}") for n in range(1, 6)))
        await _until(lambda: groups.waiting == 5)
    assert [r.status_code for r in [await first, *await more]] == [201] * 6
    assert (stats.together, stats.grouped, stats.fallbacks) == (1, 5, 1)
    assert stats.sizes[5] == 1
    metrics = (await api.client.get("/metrics")).text
    assert 'cct_ledger_transfer_group_size_count{together="true"}' in metrics


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_pay("mef:treasury", "program:JUNTOS:fund", 1.5), "body.postings.0.debit"),
        (_pay("mef:treasury", "program:JUNTOS:fund", "100"), "body.postings.0.debit"),
        (_pay("mef:treasury", "program:JUNTOS:fund", True), "body.postings.0.debit"),
        (_pay("mef:treasury", "program:JUNTOS:fund", -5), "body.postings.0.debit"),
        ({"postings": [{"account": "mef:treasury", "debit": 5}], "currency": "PEN"}, "body.postings"),
        ({**_pay("mef:treasury", "program:JUNTOS:fund", 5), "currency": "pen"}, "body.currency"),
        ({**_pay("mef:treasury", "program:JUNTOS:fund", 5), "surprise": 1}, "body.surprise"),
    ],
)
async def test_malformed_transfers_are_422_with_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    r = await api.client.post("/v1/transfers", json=body, headers={**api.auth("operator"), "Idempotency-Key": "m"})
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["type"] == "urn:cct-ledger:problem:validation-error"
    assert any(e["field"].startswith(field) for e in problem["errors"]), problem


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (b"{not json", "body", "Invalid JSON: key must be a string at line 1 column 2"),
        (b"", "body", "Field required"),
        (b"[]", "body", "Input should be an object"),
        (b'{"postings": [], "currency": "PEN", "pending": "yes"}', "body.postings", "at least 2 items"),
    ],
)
async def test_bodies_that_are_not_a_transfer_are_422_saying_where(
    api: Api, raw: bytes, field: str, message: str
) -> None:
    headers = {**api.auth("operator"), "Idempotency-Key": "raw", "Content-Type": "application/json"}
    r = await api.client.post("/v1/transfers", content=raw, headers=headers)
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    first = r.json()["errors"][0]
    assert first["field"] == field
    assert message in first["message"]


async def test_the_caller_is_checked_before_the_body(api: Api) -> None:
    r = await api.client.post("/v1/transfers", content=b"{not json", headers={"Idempotency-Key": "x"})
    assert r.status_code == 401
    r = await api.client.post(
        "/v1/transfers", content=b"{not json", headers={**api.auth("auditor"), "Idempotency-Key": "x"}
    )
    assert r.status_code == 403


async def test_the_transfer_route_is_documented_with_its_body_and_headers(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    operation = doc["paths"]["/v1/transfers"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TransferCreate"
    }
    assert {(p["name"], p["in"]) for p in operation["parameters"]} == {
        ("Idempotency-Key", "header"),
        ("authorization", "header"),
    }
    schemas = doc["components"]["schemas"]
    assert set(schemas["TransferCreate"]["properties"]) >= {"postings", "currency", "pending", "metadata"}
    assert schemas["TransferCreate"]["properties"]["postings"]["items"] == {"$ref": "#/components/schemas/PostingIn"}
    assert "PostingIn" in schemas
    assert operation["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TransferOut"
    }


async def test_business_refusals(api: Api) -> None:
    await _chart(api)
    h = api.auth("operator")
    r = await api.client.post(
        "/v1/transfers",
        json=_pay("program:JUNTOS:fund", "household:000001:savings", 1_00),
        headers={**h, "Idempotency-Key": "a"},
    )
    assert r.status_code == 409
    assert r.json()["type"] == "urn:cct-ledger:problem:insufficient-funds"
    assert r.json()["account"] == "program:JUNTOS:fund"
    unbalanced = {
        "postings": [{"account": "mef:treasury", "debit": 5}, {"account": "program:JUNTOS:fund", "credit": 4}],
        "currency": "PEN",
    }
    r = await api.client.post("/v1/transfers", json=unbalanced, headers={**h, "Idempotency-Key": "b"})
    assert r.status_code == 422
    assert r.json()["type"] == "urn:cct-ledger:problem:invalid-transfer"
    r = await api.client.post("/v1/transfers", json=_pay("mef:treasury", "program:JUNTOS:fund", 5), headers=h)
    assert r.status_code == 422
    assert r.json()["type"] == "urn:cct-ledger:problem:idempotency-key-required"
    r = await api.client.post(
        "/v1/accounts", json={"code": "mef:treasury", "currency": "PEN", "normal_balance": "debit"}, headers=h
    )
    assert r.status_code == 409
    assert r.json()["type"] == "urn:cct-ledger:problem:account-exists"
    r = await api.client.get("/v1/accounts/nope", headers=h)
    assert r.status_code == 404
    assert r.json()["type"] == "urn:cct-ledger:problem:account-not-found"
    r = await api.client.get("/v1/transfers/not-a-number", headers=h)
    assert r.status_code == 422
    r = await api.client.post(
        "/v1/ledger/periods",
        json={"name": "2026-B1", "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-03-01T00:00:00Z"},
        headers=api.auth("admin"),
    )
    assert r.status_code == 201
    listed = await api.client.get("/v1/ledger/periods", headers=h)
    assert r.json() == listed.json()["data"][0]  # the period as recorded, the same as listed
    assert r.json()["starts_at"] == "2026-01-01T00:00:00+00:00"
    late = _pay("mef:treasury", "program:JUNTOS:fund", 5, effective_at="2026-02-01T00:00:00Z")
    r = await api.client.post("/v1/transfers", json=late, headers={**h, "Idempotency-Key": "late"})
    assert r.status_code == 409
    assert r.json()["type"] == "urn:cct-ledger:problem:period-closed"


async def test_lists_are_paginated(api: Api) -> None:
    await _chart(api)
    h = api.auth("operator")
    for i in range(5):
        await api.client.post(
            "/v1/transfers",
            json=_pay("mef:treasury", "program:JUNTOS:fund", 100 + i),
            headers={**h, "Idempotency-Key": f"k{i}"},
        )
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.client.get("/v1/accounts/program:JUNTOS:fund/postings", params=params, headers=h)).json()
        seen += [line["version"] for line in page["data"]]
        assert page["has_more"] == (page["next_cursor"] is not None)
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [5, 4, 3, 2, 1]
    accounts = (await api.client.get("/v1/accounts", params={"limit": 2}, headers=h)).json()
    assert len(accounts["data"]) == 2
    assert accounts["has_more"] is True
    bad = await api.client.get("/v1/accounts", params={"cursor": "garbage"}, headers=h)
    assert bad.status_code == 422


async def test_batch_all_or_nothing(api: Api) -> None:
    await _chart(api)
    h = api.auth("operator")
    await api.client.post(
        "/v1/transfers",
        json=_pay("mef:treasury", "program:JUNTOS:fund", 100_00),
        headers={**h, "Idempotency-Key": "fund"},
    )
    items = [
        {**_pay("program:JUNTOS:fund", "household:000001:savings", 60_00), "idempotency_key": "b1"},
        {**_pay("program:JUNTOS:fund", "household:000001:savings", 60_00), "idempotency_key": "b2"},
    ]
    r = await api.client.post("/v1/transfers/batch", json={"transfers": items}, headers=h)
    assert r.status_code == 409
    bal = (await api.client.get("/v1/accounts/program:JUNTOS:fund/balance", headers=h)).json()
    assert bal["posted"] == 100_00
    r = await api.client.post("/v1/transfers/batch", json={"transfers": items[:1]}, headers=h)
    assert r.status_code == 201
    assert len(r.json()["data"]) == 1


async def test_ops_endpoints(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).json() == {"status": "ready"}
    metrics = await api.client.get("/metrics")
    assert "cct_http_requests_total" in metrics.text
    assert (await api.client.get("/openapi.json")).json()["info"]["title"] == "cct-ledger"
    # The documentation pages load nothing from elsewhere: a network without a CDN still shows them.
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = (await api.client.get(page)).text
        assert f"/docs-assets/{asset}" in html, page
        assert "cdn." not in html, page
        assert "https://" not in html.replace("https://fastapi.tiangolo.com", ""), page
        served = await api.client.get(f"/docs-assets/{asset}")
        assert served.status_code == 200
        assert len(served.content) > 100_000
