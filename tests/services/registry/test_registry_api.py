"""The registry routes: CSV imports as request bodies, problem+json with per-row errors, masked households."""

from __future__ import annotations

import asyncpg
import pytest
from structlog.testing import capture_logs

from services.registry import service
from tests.services.registry.conftest import BN_CCI, Api, csv_text, dni, row

PROBLEM = "application/problem+json"
CSV = {"Content-Type": "text/csv"}


async def test_import_list_and_show_households(api: Api) -> None:
    text = csv_text([row(f"H{i}", dni(i)) for i in range(1, 6)] + [row("Z1", dni(9), ubigeo="050101", cci="")])
    response = await api.client.post("/v1/households/imports", content=text, headers={**api.auth("operator"), **CSV})
    assert response.status_code == 200, response.text
    assert (response.json()["inserted"], response.json()["changed"]) == (6, True)
    again = await api.client.post("/v1/households/imports", content=text, headers={**api.auth("operator"), **CSV})
    assert (again.json()["changed"], again.json()["unchanged"], again.json()["import_id"]) == (False, 6, None)

    page1 = await api.client.get("/v1/households?limit=4", headers=api.auth("auditor"))
    assert [h["household_id"] for h in page1.json()["data"]] == ["H1", "H2", "H3", "H4"]
    assert page1.json()["data"][0]["titular_dni"] == "******01"
    assert page1.json()["data"][0]["cci"] == "*" * 18 + "51"
    page2 = await api.client.get(
        f"/v1/households?limit=4&cursor={page1.json()['next_cursor']}", headers=api.auth("auditor")
    )
    assert [h["household_id"] for h in page2.json()["data"]] == ["H5", "Z1"]
    assert page2.json()["has_more"] is False
    by_district = await api.client.get("/v1/households?ubigeo=050101&status=active", headers=api.auth("approver"))
    assert [h["household_id"] for h in by_district.json()["data"]] == ["Z1"]

    masked = await api.client.get("/v1/households/H1", headers=api.auth("auditor"))
    assert masked.status_code == 200
    assert masked.json()["titular_dni"] == "******01"
    assert masked.json()["history"][0]["data"]["titular_dni"] == "******01"
    with capture_logs() as logs:
        revealed = await api.client.get("/v1/households/H1?reveal=true", headers=api.auth("operator"))
    assert (revealed.json()["titular_dni"], revealed.json()["cci"]) == (dni(1), "00219119184091600051")
    seen = [e for e in logs if e["event"] == "household.revealed"]
    assert [(e["household"], e["actor"]) for e in seen] == [("H1", "operator-user")]  # who saw it unmasked
    refused = await api.client.get("/v1/households/H1?reveal=true", headers=api.auth("auditor"))
    assert (refused.status_code, refused.json()["type"]) == (403, "urn:cct-ledger:problem:forbidden")
    missing = await api.client.get("/v1/households/NOPE", headers=api.auth("auditor"))
    assert (missing.status_code, missing.json()["type"]) == (404, "urn:cct-ledger:problem:household-not-found")


async def test_every_reveal_is_recorded_and_listed_for_auditors(api: Api) -> None:
    text = csv_text([row(f"H{i}", dni(i)) for i in range(1, 4)])
    imported = await api.client.post("/v1/households/imports", content=text, headers={**api.auth("operator"), **CSV})
    assert imported.status_code == 200, imported.text
    for hid, reason in (("H1", "claim 2026-114"), ("H2", None), ("H1", "  bank asked for the CCI  ")):
        query = "reveal=true" + (f"&reason={reason}" if reason else "")
        assert (await api.client.get(f"/v1/households/{hid}?{query}", headers=api.auth("operator"))).status_code == 200
    assert (await api.client.get("/v1/households/H3", headers=api.auth("operator"))).status_code == 200  # masked
    assert (await api.client.get("/v1/households/H1?reveal=true", headers=api.auth("admin"))).status_code == 200

    listed = await api.client.get("/v1/audit/reveals", headers=api.auth("auditor"))
    assert listed.status_code == 200, listed.text
    rows = [(r["household_id"], r["actor"], r["channel"], r["reason"]) for r in listed.json()["data"]]
    assert rows == [  # newest first; the masked read of H3 is not a reveal
        ("H1", "admin-user", "api", None),
        ("H1", "operator-user", "api", "bank asked for the CCI"),
        ("H2", "operator-user", "api", None),
        ("H1", "operator-user", "api", "claim 2026-114"),
    ]
    first = await api.client.get("/v1/audit/reveals?household_id=H1&limit=2", headers=api.auth("admin"))
    assert [r["actor"] for r in first.json()["data"]] == ["admin-user", "operator-user"]
    rest = await api.client.get(
        f"/v1/audit/reveals?household_id=H1&limit=2&cursor={first.json()['next_cursor']}", headers=api.auth("admin")
    )
    assert ([r["reason"] for r in rest.json()["data"]], rest.json()["has_more"]) == (["claim 2026-114"], False)
    by_admin = await api.client.get("/v1/audit/reveals?actor=admin-user", headers=api.auth("auditor"))
    assert [r["household_id"] for r in by_admin.json()["data"]] == ["H1"]

    # Only auditors and admins read the record; a bad reason or an unknown household records nothing.
    for role in ("operator", "approver"):
        refused = await api.client.get("/v1/audit/reveals", headers=api.auth(role))
        assert (refused.status_code, refused.json()["type"]) == (403, "urn:cct-ledger:problem:forbidden")
    for query, status, kind in (
        ("reason=%20%20", 422, "invalid-reveal-reason"),
        ("reason=" + "x" * 501, 422, "invalid-reveal-reason"),
        ("reason=a%00b", 422, "invalid-reveal-reason"),
        ("reason=claim%E2%80%8B114", 422, "invalid-reveal-reason"),  # a zero-width space
        ("reason=claim%E2%80%AE114", 422, "invalid-reveal-reason"),  # a right-to-left override
        ("reason=claim%E2%80%A8114", 422, "invalid-reveal-reason"),  # a line separator
        ("reason=...", 422, "invalid-reveal-reason"),
    ):
        bad = await api.client.get(f"/v1/households/H2?reveal=true&{query}", headers=api.auth("operator"))
        assert (bad.status_code, bad.json()["type"]) == (status, f"urn:cct-ledger:problem:{kind}")
        assert bad.json()["field"] == "reason"
    unknown = await api.client.get("/v1/households/NOPE?reveal=true", headers=api.auth("operator"))
    assert unknown.status_code == 404
    no_reveal = await api.client.get("/v1/households/H2?reason=claim", headers=api.auth("operator"))
    assert (no_reveal.status_code, no_reveal.json()["type"]) == (422, "urn:cct-ledger:problem:invalid-reveal-reason")
    accented = await api.client.get(  # letters with combining accents, punctuation and symbols are text
        "/v1/households/H2?reveal=true&reason=reclamo%20n%C2%BA%2014%20(Mari%CC%81a)", headers=api.auth("operator")
    )
    assert accented.status_code == 200
    assert accented.headers["cache-control"] == "no-store"  # shown once, recorded once
    assert "cache-control" not in (await api.client.get("/v1/households/H2", headers=api.auth("operator"))).headers
    wrong = await api.client.get("/v1/audit/reveals?cursor=aDE6SDE", headers=api.auth("auditor"))  # a households cursor
    assert (wrong.status_code, wrong.json()["type"]) == (422, "urn:cct-ledger:problem:invalid-cursor")
    after = await api.client.get("/v1/audit/reveals", headers=api.auth("auditor"))
    assert [r["reason"] for r in after.json()["data"]][:1] == ["reclamo nº 14 (Mari\u0301a)"]
    assert len(after.json()["data"]) == 5
    async with api.app.state.database.connection() as conn:  # the record cannot be edited or erased
        for sql in (
            "update registry.reveals set reason = 'x'",
            "delete from registry.reveals",
            "truncate registry.reveals",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(sql)
        assert await conn.fetchval("select count(*) from registry.reveals") == 5
        # Inside a transaction a reveal is refused: a rollback would leave data shown and not recorded.
        async with conn.transaction():
            with pytest.raises(RuntimeError, match="autocommit"):
                await service.get_household(conn, "H1", reveal=True, actor="ana", channel="api")


async def test_a_refused_import_lists_every_bad_row(api: Api) -> None:
    text = csv_text([row("H1", dni(1)), row("H2", dni(2), cci="00219119184091600052"), row("H3", dni(3), status="x")])
    response = await api.client.post("/v1/households/imports", content=text, headers={**api.auth("operator"), **CSV})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == "urn:cct-ledger:problem:import-rejected"
    assert body["errors_total"] == 2
    assert [(e["line"], e["column"]) for e in body["errors"]] == [(3, "cci"), (4, "status")]
    assert body["errors"][0]["reason"] == "check digit 2 (account) is 2, expected 1"
    skipped = await api.client.post(
        "/v1/households/imports?skip_invalid=true", content=text, headers={**api.auth("operator"), **CSV}
    )
    assert skipped.status_code == 200
    assert (skipped.json()["inserted"], skipped.json()["rejected"], skipped.json()["errors_total"]) == (1, 2, 2)


async def test_bad_requests_are_problems(api: Api) -> None:
    text = csv_text([row("H1", dni(1))])
    cases = [
        ({**api.auth("operator"), "Content-Type": "application/json"}, text, 422, "invalid-import-file"),
        ({**api.auth("operator"), **CSV}, "", 422, "invalid-import-file"),
        ({**api.auth("operator"), **CSV}, "a,b\n1,2\n", 422, "invalid-import-file"),
        ({**api.auth("auditor"), **CSV}, text, 403, "forbidden"),
        (CSV, text, 401, "not-authenticated"),
    ]
    for headers, content, status, slug in cases:
        response = await api.client.post("/v1/households/imports", content=content, headers=headers)
        assert (response.status_code, response.json()["type"]) == (status, f"urn:cct-ledger:problem:{slug}")
    bad_filter = await api.client.get("/v1/households?status=gone", headers=api.auth("auditor"))
    assert (bad_filter.status_code, bad_filter.json()["type"]) == (422, "urn:cct-ledger:problem:invalid-filter")
    bad_cursor = await api.client.get("/v1/households?cursor=zzz", headers=api.auth("auditor"))
    assert (bad_cursor.status_code, bad_cursor.json()["type"]) == (422, "urn:cct-ledger:problem:invalid-cursor")


async def test_compliance_route(api: Api) -> None:
    padron = csv_text([row("H1", dni(1), cci=BN_CCI), row("H2", dni(2))])
    await api.client.post("/v1/households/imports", content=padron, headers={**api.auth("operator"), **CSV})
    url = "/v1/programs/JUNTOS/periods/2026-B5/compliance"
    ok = await api.client.post(
        url,
        content="household_id,compliant,reason\nH1,no,inasistencia\nH2,si,\n",
        headers={**api.auth("operator"), **CSV},
    )
    assert ok.status_code == 200, ok.text
    assert (ok.json()["kind"], ok.json()["inserted"], ok.json()["period"]) == ("compliance", 2, "2026-B5")
    preview = await api.client.get("/v1/programs/JUNTOS/periods/2026-B5/entitlements", headers=api.auth("auditor"))
    assert preview.json()["groups"]["suspended"]["households"] == 1
    refused = await api.client.post(
        url, content="household_id,compliant,reason\nH9,si,\n", headers={**api.auth("operator"), **CSV}
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0] == {
        "line": 2,
        "column": "household_id",
        "reason": "household H9 is not in the registry",
        "household_id": "H9",
    }
    bad_period = await api.client.post(
        "/v1/programs/JUNTOS/periods/2026-13/compliance",
        content="household_id,compliant,reason\n",
        headers={**api.auth("operator"), **CSV},
    )
    assert (bad_period.status_code, bad_period.json()["type"]) == (422, "urn:cct-ledger:problem:invalid-period")


async def test_the_csv_routes_document_their_body(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    for path in ("/v1/households/imports", "/v1/programs/{code}/periods/{period}/compliance"):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["text/csv"]["schema"] == {"type": "string"}


async def test_an_id_in_the_wrong_case_is_pointed_at(api: Api) -> None:
    text = csv_text([row("HH1", dni(1))])
    imported = await api.client.post("/v1/households/imports", content=text, headers={**CSV, **api.auth("operator")})
    assert imported.status_code == 200, imported.text
    r = await api.client.get("/v1/households/hh1", headers=api.auth("auditor"))
    assert r.status_code == 404
    assert "did you mean 'HH1'?" in r.json()["detail"]
