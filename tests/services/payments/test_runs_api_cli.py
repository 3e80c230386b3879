"""Payment runs over HTTP (roles, maker-checker, background execution) and from the command line."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from adapters.bank.simulator import connect
from adapters.postgres.database import Database
from services.api.app import create_app
from services.auth.service import create_token
from services.cli.main import app as cli
from services.config import Settings, get_settings
from services.payments import service
from services.programs import service as programs
from tests.services.payments.conftest import World, interrupted_creation


async def _tokens(db: Database) -> dict[str, str]:
    out = {}
    async with db.connection() as conn:
        for name, role in (("maria", "operator"), ("ana", "operator"), ("jorge", "approver"), ("lucia", "auditor")):
            out[name], _ = await create_token(conn, name, role)
    return out


async def test_payment_runs_over_http(world: World, db: Database, cli_env: dict[str, str]) -> None:
    await world.register(7)
    await world.fund(10_000_00)
    tokens = await _tokens(db)
    app = create_app(Settings(token_cache_seconds=0, run_poll_seconds=0), database=db, background=False)
    app.state.bank_factory = lambda: connect(world.app)[0]

    def h(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[who]}"}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        r = await api.post("/v1/payment-runs", json={"program": "JUNTOS", "period": "2026-B5"}, headers=h("jorge"))
        assert r.status_code == 403
        r = await api.post(
            "/v1/payment-runs", json={"program": "JUNTOS", "period": "2026-B5", "batch_size": 3}, headers=h("maria")
        )
        assert r.status_code == 201, r.text
        run = r.json()
        assert (run["status"], run["payments_count"], run["batches_count"]) == ("created", 7, 3)
        assert ["no compliance verification has been imported" in w for w in run["warnings"]] == [True]
        again = await api.post("/v1/payment-runs", json={"program": "JUNTOS", "period": "2026-B5"}, headers=h("ana"))
        assert again.status_code == 409
        assert again.json()["type"] == "urn:cct-ledger:problem:run-exists"
        bad = await api.post("/v1/payment-runs", json={"program": "JUNTOS", "period": "2026-B9"}, headers=h("maria"))
        assert bad.status_code == 422
        early = await api.post(f"/v1/payment-runs/{run['id']}/execute", headers=h("maria"))
        assert early.status_code == 409
        r = await api.post(f"/v1/payment-runs/{run['id']}/approve", headers=h("maria"))
        assert r.status_code == 403  # an operator is not an approver
        r = await api.post(f"/v1/payment-runs/{run['id']}/approve", headers=h("jorge"))
        assert r.status_code == 200
        assert r.json()["approved_by"] == "jorge"
        r = await api.post(f"/v1/payment-runs/{run['id']}/execute", headers=h("maria"))
        assert r.status_code == 202
        # The execution runs in the app's background; wait for it to end, then read what the API says of it.
        await asyncio.wait_for(asyncio.gather(*app.state.run_tasks.values()), timeout=300)
        state = (await api.get(f"/v1/payment-runs/{run['id']}", headers=h("lucia"))).json()
        assert state["run"]["status"] == "settled"
        assert state["payments"]["credited"]["count"] == 7
        assert [e["event"] for e in state["events"]][:4] == [
            "creation_started",
            "created",
            "approved",
            "execution_started",
        ]
        listed = (await api.get("/v1/payment-runs", params={"limit": 1}, headers=h("lucia"))).json()
        assert [r["id"] for r in listed["data"]] == [run["id"]]
        missing = await api.get("/v1/payment-runs/999999", headers=h("lucia"))
        assert missing.status_code == 404
        assert missing.json()["type"] == "urn:cct-ledger:problem:run-not-found"
    # Executing a settled run again needs no bank: there is nothing to send (CCT_BANK_URL is unset here).
    again = await asyncio.get_running_loop().run_in_executor(
        None, _run, ["runs", "execute", str(run["id"]), "--user", "maria"]
    )
    assert again.exit_code == 0, again.output
    assert "is already settled: nothing to execute" in again.output


class _GatedBank:
    """The simulated bank's client, but no batch is sent before ``gate`` opens."""

    def __init__(self, bank: Any, gate: asyncio.Event) -> None:
        self._bank, self._gate = bank, gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bank, name)

    async def submit_batch(self, *args: Any, **kwargs: Any) -> Any:
        await self._gate.wait()
        return await self._bank.submit_batch(*args, **kwargs)


async def test_repeated_execute_calls_start_one_execution_and_a_failure_is_in_the_runs_events(
    world: World, db: Database
) -> None:
    await world.register(4)
    async with db.unit_of_work() as conn:  # the ledger's fund covers the run, the bank's account half of it
        await programs.fund(conn, "JUNTOS", 4 * 200_00, "MEF-2026-001", actor="budget-office")
    await world.control.deposit_funding(2 * 200_00, reference="MEF-2026-001")
    tokens = await _tokens(db)
    gate = asyncio.Event()
    app = create_app(
        Settings(token_cache_seconds=0, run_poll_seconds=0, run_concurrency=1), database=db, background=False
    )
    app.state.bank_factory = lambda: _GatedBank(connect(world.app)[0], gate)
    h = {
        "maria": {"Authorization": f"Bearer {tokens['maria']}"},
        "lucia": {"Authorization": f"Bearer {tokens['lucia']}"},
    }
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        r = await api.post(
            "/v1/payment-runs", json={"program": "JUNTOS", "period": "2026-B5", "batch_size": 2}, headers=h["maria"]
        )
        run_id = r.json()["id"]
        async with db.unit_of_work() as conn:
            await service.approve_run(conn, run_id, "jorge")
        first = await api.post(f"/v1/payment-runs/{run_id}/execute", headers=h["maria"])
        assert (first.status_code, first.json()["detail"]) == (202, "execution started")
        for _ in range(12):  # more calls than the pool has connections: none starts another execution
            again = await api.post(f"/v1/payment-runs/{run_id}/execute", headers=h["maria"])
            assert (again.status_code, again.json()["detail"]) == (202, "already executing in this server")
        assert len(app.state.run_tasks) == 1

        async def executing() -> None:  # the execution starts in the background, held at the bank's gate
            while (await api.get(f"/v1/payment-runs/{run_id}", headers=h["lucia"])).json()["run"]["status"] != (
                "executing"
            ):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(executing(), timeout=10)
        gate.set()
        await asyncio.wait_for(asyncio.gather(*app.state.run_tasks.values()), timeout=300)
        assert app.state.run_tasks == {}
        state = (await api.get(f"/v1/payment-runs/{run_id}", headers=h["lucia"])).json()
        # The refused batch is cancelled by an operator, with a reason; the run settles.
        cancel = f"/v1/payment-runs/{run_id}/batches/1/cancel"
        assert (await api.post(cancel, json={"reason": "short"}, headers=h["lucia"])).status_code == 403
        assert (await api.post(cancel, json={}, headers=h["maria"])).status_code == 422
        wrong = await api.post(f"/v1/payment-runs/{run_id}/batches/0/cancel", json={"reason": "x"}, headers=h["maria"])
        assert (wrong.status_code, wrong.json()["type"]) == (409, "urn:cct-ledger:problem:run-state")
        done = await api.post(cancel, json={"reason": "the bank's account is short this month"}, headers=h["maria"])
        assert done.status_code == 200, done.text
        assert done.json()["run"]["status"] == "settled"
        assert done.json()["rejected_by_reason"] == {"cancelled": {"count": 2, "total": 2 * 200_00}}
        assert [e["event"] for e in done.json()["events"]][-2:] == ["batch_cancelled", "settled"]
    # The bank refused the batch its funding account could not cover: the execution stopped, and says so.
    failed = [e for e in state["events"] if e["event"] == "execution_failed"]
    assert len(failed) == 1
    assert failed[0]["detail"]["error"] == "run-incident"
    assert "the bank refused batch(es) [1]" in failed[0]["detail"]["detail"]
    assert failed[0]["detail"]["batches"] == [1]
    assert state["payments"]["credited"]["count"] == 2


@pytest.fixture
def cli_env(db_url: str) -> Iterator[dict[str, str]]:
    env = {"DATABASE_URL": db_url, "CCT_LOG_LEVEL": "ERROR"}
    saved = {k: os.environ.get(k) for k in (*env, "CCT_BANK_URL")}
    os.environ.update(env)
    os.environ.pop("CCT_BANK_URL", None)
    get_settings.cache_clear()
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


async def test_runs_from_the_command_line(world: World, cli_env: dict[str, str]) -> None:
    await world.register(5)
    await world.fund(10_000_00)
    loop = asyncio.get_running_loop()

    def run(args: list[str]) -> Any:
        return _run(args)

    missing_user = await loop.run_in_executor(
        None, run, ["runs", "create", "--program", "JUNTOS", "--period", "2026-B5"]
    )
    assert missing_user.exit_code == 2
    assert "--user NAME is required" in missing_user.output
    blank_user = await loop.run_in_executor(
        None, run, ["runs", "create", "--program", "JUNTOS", "--period", "2026-B5", "--user", "  "]
    )
    assert (blank_user.exit_code, "--user NAME is required" in blank_user.output) == (2, True)
    created = await loop.run_in_executor(
        None, run, ["runs", "create", "--program", "JUNTOS", "--period", "2026-B5", "--user", "maria", "--json"]
    )
    assert created.exit_code == 0, created.output
    assert '"payments_count": 5' in created.output
    early = await loop.run_in_executor(None, run, ["runs", "execute", "1", "--user", "maria"])
    assert early.exit_code == 1
    assert "not approved yet" in early.output  # the run's state first, not the missing bank
    same = await loop.run_in_executor(None, run, ["runs", "approve", "1", "--user", "Maria"])
    assert same.exit_code == 1
    assert "another person must approve" in same.output
    approved = await loop.run_in_executor(None, run, ["runs", "approve", "1", "--user", "jorge"])
    assert approved.exit_code == 0
    no_bank = await loop.run_in_executor(None, run, ["runs", "execute", "1", "--user", "maria"])
    assert no_bank.exit_code == 1
    assert "CCT_BANK_URL" in no_bank.output
    shown = await loop.run_in_executor(None, run, ["runs", "show", "1"])
    assert shown.exit_code == 0
    assert "approved by jorge" in shown.output
    not_refused = await loop.run_in_executor(
        None, run, ["runs", "cancel-batch", "1", "0", "--reason", "refused", "--user", "maria"]
    )  # the batch's state first, not the missing bank
    assert (not_refused.exit_code, "only a batch the bank refused" in not_refused.output) == (1, True)
    for command in (
        ["runs", "--help"],
        ["runs", "execute", "--help"],
        ["runs", "cancel-batch", "--help"],
        ["demo", "--help"],
    ):
        helped = await loop.run_in_executor(None, run, command)
        assert helped.exit_code == 0
        assert "Example" in helped.output or "Commands" in helped.output


async def test_closing_a_run_from_the_command_line_prints_it_for_scripts(world: World, cli_env: dict[str, str]) -> None:
    from tests.services.payments.test_runs import _approve, _create, _execute

    await world.register(3)
    await world.fund(10_000_00)
    run_id = await _create(world)
    loop = asyncio.get_running_loop()
    early = await loop.run_in_executor(None, _run, ["runs", "close", str(run_id), "--user", "ana", "--json"])
    assert early.exit_code == 1
    assert json.loads(early.stdout)["error"] == "run-state"  # not settled yet: a refusal, as JSON
    await _approve(world, run_id)
    await _execute(world, run_id)
    closed = await loop.run_in_executor(None, _run, ["runs", "close", str(run_id), "--user", "ana", "--json"])
    assert closed.exit_code == 0, closed.output
    run = json.loads(closed.stdout)
    assert (run["id"], run["status"], run["closed_by"]) == (run_id, "closed", "ana")


async def test_a_run_left_creating_is_refused_over_http_and_finished_by_posting_it_again(
    world: World, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.register(6)
    tokens = await _tokens(db)
    await interrupted_creation(db, monkeypatch, parts=2)
    app = create_app(Settings(token_cache_seconds=0), database=db, background=False)
    h = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        listed = (await api.get("/v1/payment-runs", headers=h["lucia"])).json()["data"]
        assert [(r["period"], r["status"]) for r in listed] == [("2026-B5", "creating")]
        shown = await api.get(f"/v1/payment-runs/{listed[0]['id']}", headers=h["lucia"])
        assert (shown.status_code, shown.json()["run"]["status"]) == (200, "creating")
        assert [e["event"] for e in shown.json()["events"]] == ["creation_started"]
        refused = await api.post(f"/v1/payment-runs/{listed[0]['id']}/approve", headers=h["jorge"])
        assert (refused.status_code, refused.json()["type"]) == (409, "urn:cct-ledger:problem:run-state")
        assert "runs create --program JUNTOS --period 2026-B5" in refused.json()["detail"]
        other = await api.post("/v1/payment-runs", json={"program": "JUNTOS", "period": "2026-B6"}, headers=h["ana"])
        assert (other.status_code, other.json()["type"]) == (409, "urn:cct-ledger:problem:run-state")
        done = await api.post("/v1/payment-runs", json={"program": "JUNTOS", "period": "2026-B5"}, headers=h["ana"])
        assert done.status_code == 201, done.text
        assert (done.json()["id"], done.json()["status"], done.json()["payments_count"]) == (
            listed[0]["id"],
            "created",
            6,
        )
