"""The programs routes: roles, problem+json for bad input, appropriations with Idempotency-Key."""

from __future__ import annotations

from adapters.postgres.database import Database
from tests.services.programs.conftest import Api, household, insert_households

PROBLEM = "application/problem+json"


async def test_list_and_show_programs(api: Api) -> None:
    listed = await api.client.get("/v1/programs?limit=1", headers=api.auth("auditor"))
    assert listed.status_code == 200
    body = listed.json()
    assert [p["code"] for p in body["data"]] == ["HAKU_WINAY_STIPEND"]
    assert body["has_more"] is True
    rest = await api.client.get(f"/v1/programs?limit=1&cursor={body['next_cursor']}", headers=api.auth("approver"))
    assert [p["code"] for p in rest.json()["data"]] == ["JUNTOS"]
    assert rest.json()["next_cursor"] is None
    shown = await api.client.get("/v1/programs/JUNTOS", headers=api.auth("operator"))
    assert shown.status_code == 200
    data = shown.json()
    assert data["schedule"] == "bimonthly"
    assert data["fund_account"] == "program:JUNTOS:fund"
    assert data["rule_versions"][0]["rules"]["base"] == 200_00
    assert data["fund_balance"]["posted"] == 0


async def test_appropriation_with_replay_and_conflict(api: Api) -> None:
    body = {"amount": 150_000_000_00, "reference": "RM-045-2026-MIDIS"}
    headers = {**api.auth("operator"), "Idempotency-Key": "approp-1"}
    first = await api.client.post("/v1/programs/JUNTOS/appropriations", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["replayed"] is False
    assert first.json()["fund_balance"] == 150_000_000_00
    again = await api.client.post("/v1/programs/JUNTOS/appropriations", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["transfer_id"] == first.json()["transfer_id"]
    other = await api.client.post(
        "/v1/programs/JUNTOS/appropriations",
        json={**body, "amount": 1_00},
        headers={**api.auth("operator"), "Idempotency-Key": "approp-2"},
    )
    assert other.status_code == 409
    assert other.headers["content-type"] == PROBLEM
    assert other.json()["type"] == "urn:cct-ledger:problem:appropriation-conflict"


async def test_bad_appropriations_are_problems_not_500s(api: Api) -> None:
    url = "/v1/programs/JUNTOS/appropriations"
    operator = {**api.auth("operator"), "Idempotency-Key": "k"}
    cases = [
        ({"amount": 100.5, "reference": "RM-1"}, operator, 422, "validation-error"),
        ({"amount": "100", "reference": "RM-1"}, operator, 422, "validation-error"),
        ({"amount": 100, "reference": "RM 1"}, operator, 422, "validation-error"),
        ({"amount": 100, "reference": "RM-1", "extra": 1}, operator, 422, "validation-error"),
        ({"amount": 100, "reference": "RM-1"}, api.auth("operator"), 422, "idempotency-key-required"),
        ({"amount": 100, "reference": "RM-1"}, {**api.auth("auditor"), "Idempotency-Key": "k"}, 403, "forbidden"),
        ({"amount": 100, "reference": "RM-1"}, {"Idempotency-Key": "k"}, 401, "not-authenticated"),
    ]
    for body, headers, status, slug in cases:
        response = await api.client.post(url, json=body, headers=headers)
        assert (response.status_code, response.json()["type"]) == (status, f"urn:cct-ledger:problem:{slug}"), body
        assert response.headers["content-type"] == PROBLEM
    missing = await api.client.post(
        "/v1/programs/NOPE/appropriations", json={"amount": 1, "reference": "R"}, headers=operator
    )
    assert (missing.status_code, missing.json()["type"]) == (404, "urn:cct-ledger:problem:program-not-found")


async def test_entitlement_preview(api: Api, loaded: Database) -> None:
    async with loaded.connection() as conn:
        await insert_households(conn, [household("A", children_under_4=1), household("B", status="inactive")])
    ok = await api.client.get("/v1/programs/JUNTOS/periods/2026-B5/entitlements", headers=api.auth("auditor"))
    assert ok.status_code == 200
    assert ok.json()["groups"] == {
        "payable": {"households": 1, "amount": 300_00},
        "inactive": {"households": 1, "amount": 0},
    }
    bad = await api.client.get("/v1/programs/JUNTOS/periods/2026-B7/entitlements", headers=api.auth("auditor"))
    assert (bad.status_code, bad.json()["type"]) == (422, "urn:cct-ledger:problem:invalid-period")
    assert "bimester must be B1..B6" in bad.json()["detail"]
