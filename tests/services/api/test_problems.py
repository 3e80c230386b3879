"""Errors every route shares: one problem type per condition, whichever list or body it comes from."""

from __future__ import annotations

import base64
import json

import asyncpg
import pytest

from tests.services.api.conftest import Api

pytestmark = pytest.mark.asyncio(loop_scope="session")

_LISTS = ("/v1/accounts", "/v1/programs", "/v1/households", "/v1/payment-runs", "/v1/ledger/periods")


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", _LISTS)
async def test_a_cursor_that_is_not_the_lists_own_is_one_problem_everywhere(api: Api, path: str) -> None:
    for cursor in ("garbage", "²", "٣", "9" * 20, _cursor("x1:5"), _cursor("v1:"), _cursor("r1:" + "9" * 30)):
        r = await api.client.get(path, params={"cursor": cursor}, headers=api.auth("auditor"))
        assert r.status_code == 422, (cursor, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:cct-ledger:problem:invalid-cursor"
        assert "next_cursor of a previous page" in r.json()["detail"]


async def test_a_cursor_of_one_list_is_refused_by_another(api: Api) -> None:
    h = api.auth("admin")
    for code in ("a:1", "a:2"):
        body = {"code": code, "currency": "PEN", "normal_balance": "debit"}
        assert (await api.client.post("/v1/accounts", json=body, headers=h)).status_code == 201
    accounts = (await api.client.get("/v1/accounts", params={"limit": 1}, headers=h)).json()
    assert accounts["next_cursor"]
    r = await api.client.get("/v1/payment-runs", params={"cursor": accounts["next_cursor"]}, headers=h)
    assert r.json()["type"] == "urn:cct-ledger:problem:invalid-cursor"


async def test_closed_periods_are_paginated(api: Api) -> None:
    h = api.auth("admin")
    for name, start, end in (
        ("2024", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
        ("2024|q1", "2024-01-01T00:00:00Z", "2024-04-01T00:00:00Z"),  # the same start: ordered by name
        ("2023-b", "2023-07-01T00:00:00.000001-05:00", "2024-01-01T00:00:00Z"),
        ("2023-a", "2023-01-01T09:00:00+09:00", "2023-07-01T00:00:00Z"),
    ):
        body = {"name": name, "starts_at": start, "ends_at": end}
        assert (await api.client.post("/v1/ledger/periods", json=body, headers=h)).status_code == 201, name
    for limit in (1, 2, 3):
        seen, cursor = [], None
        while True:
            params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
            page = (await api.client.get("/v1/ledger/periods", params=params, headers=h)).json()
            assert len(page["data"]) <= limit
            seen += [p["name"] for p in page["data"]]
            cursor = page["next_cursor"]
            assert page["has_more"] is (cursor is not None)
            if cursor is None:
                break
        assert seen == ["2023-a", "2023-b", "2024", "2024|q1"], limit  # by start, then name; each once


async def test_a_body_that_cannot_be_read_is_a_validation_problem(api: Api) -> None:
    h = {**api.auth("admin"), "Content-Type": "application/json"}
    for raw in (b"\xff\xfe{", b'{"code": "a:1", "currency": "PEN", "normal_balance": "debit"'):
        r = await api.client.post("/v1/accounts", content=raw, headers=h)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:cct-ledger:problem:validation-error"
        assert r.json()["detail"].startswith("body")


async def test_a_value_the_database_cannot_hold_says_why(api: Api) -> None:
    h = api.auth("admin")
    body = {"code": "a:1", "currency": "PEN", "normal_balance": "debit", "metadata": {"note": "nul \u0000 inside"}}
    r = await api.client.post("/v1/accounts", json=body, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "urn:cct-ledger:problem:invalid-value"
    assert r.json()["detail"].endswith("(\\u0000 cannot be converted to text.)")


async def test_not_ready_is_a_problem(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    class Down:
        def connection(self) -> object:
            raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(api.app.state, "database", Down())
    r = await api.client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:cct-ledger:problem:not-ready"
    assert "refused" in r.json()["detail"]


async def test_a_statement_cursor_belongs_to_its_account(api: Api) -> None:
    h = {**api.auth("admin")}
    for code, normal in (("a:1", "debit"), ("a:2", "credit"), ("a:3", "credit")):
        body = {"code": code, "currency": "PEN", "normal_balance": normal}
        assert (await api.client.post("/v1/accounts", json=body, headers=h)).status_code == 201
    for n, target in enumerate(("a:2", "a:3", "a:2", "a:3")):
        transfer = {
            "postings": [{"account": "a:1", "debit": 100}, {"account": target, "credit": 100}],
            "currency": "PEN",
        }
        r = await api.client.post("/v1/transfers", json=transfer, headers={**h, "Idempotency-Key": f"k{n}"})
        assert r.status_code == 201, r.text
    first = (await api.client.get("/v1/accounts/a:2/postings", params={"limit": 1}, headers=h)).json()
    assert first["next_cursor"]
    rest = await api.client.get("/v1/accounts/a:2/postings", params={"cursor": first["next_cursor"]}, headers=h)
    assert [line["version"] for line in rest.json()["data"]] == [1]
    accounts = (await api.client.get("/v1/accounts", params={"limit": 1}, headers=h)).json()["next_cursor"]
    for path, cursor in (("/v1/accounts/a:3/postings", first["next_cursor"]), ("/v1/accounts/a:2/postings", accounts)):
        r = await api.client.get(path, params={"cursor": cursor}, headers=h)
        assert r.json()["type"] == "urn:cct-ledger:problem:invalid-cursor", (path, r.text)


async def test_a_parameter_asyncpg_refuses_is_explained_without_the_query() -> None:
    from starlette.requests import Request

    from services.api import problems

    request = Request({"type": "http", "method": "POST", "path": "/v1/x", "headers": [], "query_string": b""})
    refused = asyncpg.exceptions.DataError(
        "invalid input for query argument $3: 99999999999999999999 (value out of int64 range)"
    )
    body = json.loads(bytes((await problems.data_error(request, refused)).body))
    assert body["type"] == "urn:cct-ledger:problem:invalid-value"
    assert body["detail"] == "a value in the request cannot be stored: value out of int64 range"
