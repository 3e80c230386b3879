"""The command line's shared behaviour: bad input gets a message and exit status 1 or 2, never a traceback;
lists page the same way as the API; with ``--json`` the output, errors included, is JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from services.cli.common import command
from tests.services.programs.conftest import Cli

TOO_BIG = "9" * 20  # above a bigint


PADRON_HEADER = (
    "household_id,titular_dni,titular_name,ubigeo,cci,status,enrolled_on,children_under_4,upper_secondary_students\n"
)
GOOD_ROW = "000001,12345678,Ana Quispe,080101,,active,2024-01-15,1,0\n"
BAD_ROW = "000002,bad,Luz Sosa,080101,,active,2024-01-15,1,0\n"  # line 3: the DNI


def _padron(tmp_path: Path, *more: str) -> Path:
    """A padron of one valid household, then ``more`` rows."""
    padron = tmp_path / "padron.csv"
    padron.write_text(PADRON_HEADER + GOOD_ROW + "".join(more))
    return padron


def _one_run(cli: Cli, tmp_path: Path) -> str:
    """Programs loaded, one household imported, a JUNTOS 2026-B5 run created; returns the run's id."""
    assert cli("programs", "load").exit_code == 0
    assert cli("households", "import", str(_padron(tmp_path))).exit_code == 0
    created = cli("runs", "create", "--program", "JUNTOS", "--period", "2026-B5", "--user", "maria", "--json")
    assert created.exit_code == 0, created.output
    return str(json.loads(created.stdout)["run"]["id"])


def _text(output: str) -> str:
    """The output as one line, without the boxes rich draws around usage errors."""
    return " ".join(output.replace("│", " ").split())


@pytest.mark.parametrize(
    "args",
    [
        ("transfer", "show", TOO_BIG),
        ("transfer", "post", TOO_BIG, "--key", "k"),
        ("transfer", "void", TOO_BIG, "--key", "k"),
        ("transfer", "reverse", TOO_BIG, "--key", "k"),
        ("runs", "show", TOO_BIG),
        ("runs", "approve", TOO_BIG, "--user", "u"),
        ("runs", "report", TOO_BIG),
        ("runs", "close", TOO_BIG, "--user", "u"),
        ("transfer", "show", "0"),
    ],
)
def test_an_id_out_of_range_is_a_usage_error(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Invalid value for" in _text(result.output)


def test_revoking_a_name_that_looks_like_digits_is_not_a_crash(cli: Cli) -> None:
    for name in ("²", "٣", TOO_BIG):
        result = cli("token", "revoke", name)
        assert result.exit_code == 1, result.output
        assert f"no live token named or numbered {name!r}" in result.stderr


def test_an_unknown_fault_profile_is_refused_before_anything_is_done(cli: Cli) -> None:
    result = cli("demo", "--faults", "bogus", "--households", "10")
    assert result.exit_code == 2
    assert "'bogus' is not one of" in _text(result.output)
    assert "Database" not in result.output  # refused by the parser: no database was dropped or made


def test_a_file_error_is_named_not_blamed_on_the_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "missing" / "run.csv"

    @command
    async def write_report() -> None:
        target.write_text("x")

    @command
    async def connect() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    for fn, expected in ((write_report, f"cannot use {target}"), (connect, "cannot reach the database")):
        with pytest.raises(typer.Exit) as exit_:
            fn()
        assert exit_.value.exit_code == 1
        assert expected in " ".join(capsys.readouterr().err.split())


def test_a_rejects_file_that_cannot_be_written_is_refused_before_the_import(cli: Cli, tmp_path: Path) -> None:
    padron = _padron(tmp_path, BAD_ROW)
    bad_rejects = tmp_path / "missing" / "rejects.csv"
    result = cli("households", "import", str(padron), "--skip-invalid", "--rejects", str(bad_rejects))
    assert result.exit_code == 2, result.output
    assert "cannot write the rejects file" in _text(result.output)
    listed = json.loads(cli("households", "list", "--json").stdout)
    assert listed["data"] == []  # refused before the import: nothing was written


def test_lists_page_like_the_api(cli: Cli) -> None:
    assert cli("programs", "load").exit_code == 0
    first = json.loads(cli("programs", "list", "--limit", "1", "--json").stdout)
    assert first["has_more"] is True
    assert len(first["data"]) == 1
    rest = json.loads(cli("programs", "list", "--limit", "1", "--cursor", first["next_cursor"], "--json").stdout)
    assert [p["code"] for p in first["data"] + rest["data"]] == ["HAKU_WINAY_STIPEND", "JUNTOS"]
    assert rest["has_more"] is False
    assert rest["next_cursor"] is None
    for args in (("runs", "list"), ("periods", "list"), ("token", "list"), ("accounts", "list")):
        page = json.loads(cli(*args, "--json").stdout)
        assert set(page) == {"data", "next_cursor", "has_more"}, args
    table = cli("programs", "list", "--limit", "1")
    assert f"more: --cursor {first['next_cursor']}" in table.stdout
    wrong = cli("runs", "list", "--cursor", first["next_cursor"])  # a cursor of another list
    assert wrong.exit_code == 1
    assert "not valid; use the next_cursor of a previous page" in wrong.stderr


def test_with_json_an_error_is_json_too(cli: Cli) -> None:
    result = cli("accounts", "show", "nope:1", "--json")
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["error"] == "account-not-found"
    assert "nope:1" in error["detail"]
    assert error["hint"]
    plain = cli("accounts", "show", "nope:1")
    assert plain.exit_code == 1
    assert plain.stdout == ""
    assert "nope:1" in plain.stderr


def test_a_too_large_amount_says_so(cli: Cli) -> None:
    assert cli("programs", "load").exit_code == 0
    result = cli("programs", "fund", "JUNTOS", "--amount", "1" * 17, "--reference", "r")
    assert result.exit_code == 1
    assert "too large: at most 16 digits" in result.stderr


def test_an_unknown_role_is_a_usage_error(cli: Cli) -> None:
    result = cli("token", "create", "--name", "maria", "--role", "superuser")
    assert result.exit_code == 2
    assert "'superuser' is not one of" in _text(result.output)
    made = cli("token", "create", "--name", "maria", "--role", "Operator")  # any case
    assert made.exit_code == 0, made.output
    assert made.stdout.strip().startswith("cct_")


def test_a_statement_shows_what_holds_do_to_the_available_balance(cli: Cli) -> None:
    for args in (
        ("accounts", "create", "mef:treasury", "--normal", "debit"),
        ("accounts", "create", "program:X:fund", "--normal", "credit", "--no-overdraft"),
        ("accounts", "create", "household:H1:savings", "--normal", "credit"),
        ("transfer", "create", "--debit", "mef:treasury=500.00", "--credit", "program:X:fund=500.00", "--key", "f"),
    ):
        assert cli(*args).exit_code == 0, args
    held = cli("transfer", "create", "--debit", "program:X:fund=200.00", "--credit", "household:H1:savings=200.00",
               "--key", "h", "--pending", "--json")  # fmt: skip
    assert held.exit_code == 0, held.output
    assert cli("transfer", "void", str(json.loads(held.stdout)["id"]), "--key", "v").exit_code == 0
    page = cli("accounts", "statement", "program:X:fund", "--json")
    lines = json.loads(page.stdout)["data"]
    assert [(x["phase"], x["balance_after"], x["pending_debits_after"]) for x in lines] == [
        ("release", 500_00, 0),
        ("hold", 500_00, 200_00),
        ("posted", 500_00, 0),
    ]
    text = _text(cli("accounts", "statement", "program:X:fund").stdout)
    assert "available after" in text
    assert "S/ 300.00" in text  # available while the hold stood; posted stayed S/ 500.00


def test_a_second_token_with_a_name_is_made_but_noted(cli: Cli) -> None:
    first = cli("token", "create", "--name", "maria", "--role", "operator")
    assert first.exit_code == 0
    assert first.stderr == ""
    second = cli("token", "create", "--name", "maria", "--role", "approver")
    assert second.exit_code == 0
    assert second.stdout.strip().startswith("cct_")  # stdout is still the token alone
    assert "maria already has live token(s) #" in _text(second.stderr)
    assert "(operator)" in second.stderr


def test_the_writes_that_print_a_sentence_print_json_for_scripts(cli: Cli) -> None:
    """Closing an account or a period, revoking a token, migrating: with --json, what was done, and a refusal
    is JSON too."""
    assert cli("accounts", "create", "household:HH00000001:savings", "--normal", "credit").exit_code == 0
    closed = cli("accounts", "close", "household:HH00000001:savings", "--json")
    assert closed.exit_code == 0, closed.output
    account = json.loads(closed.stdout)
    assert (account["code"], account["closed"]) == ("household:HH00000001:savings", True)
    again = cli("accounts", "close", "household:HH00000001:savings", "--json")
    assert again.exit_code == 1
    assert json.loads(again.stdout)["error"] == "account-closed"

    period = cli("periods", "close", "2026-B4", "--from", "2026-07-01", "--to", "2026-09-01", "--json")
    assert period.exit_code == 0, period.output
    listed = json.loads(cli("periods", "list", "--json").stdout)["data"]
    assert json.loads(period.stdout) == listed[0]
    assert (listed[0]["name"], listed[0]["closed_by"]) == ("2026-B4", "cli-tester")

    assert cli("token", "create", "--name", "maria", "--role", "operator").exit_code == 0
    assert cli("token", "create", "--name", "maria", "--role", "operator").exit_code == 0
    revoked = cli("token", "revoke", "maria", "--json", "--user", "ana")
    assert (revoked.exit_code, json.loads(revoked.stdout)) == (0, {"revoked": 2})
    tokens = json.loads(cli("token", "list", "--json").stdout)["data"]
    assert [(t["name"], t["created_by"], t["revoked_by"]) for t in tokens] == [("maria", "cli-tester", "ana")] * 2
    unknown = cli("token", "revoke", "maria", "--json")
    assert unknown.exit_code == 1
    error = json.loads(unknown.stdout)
    assert error["error"] == "token-not-found"
    assert "cct-ledger token list" in error["hint"]

    migrated = cli("db", "upgrade", "--json")
    assert migrated.exit_code == 0, migrated.output
    status = json.loads(cli("db", "status", "--json").stdout)
    assert json.loads(migrated.stdout) == {"revision": status["head"], "migrated": True}


def test_with_json_a_file_error_is_json_too(cli: Cli, tmp_path: Path) -> None:
    run_id = _one_run(cli, tmp_path)
    target = tmp_path / "missing" / "run.csv"
    result = cli("runs", "report", run_id, "--csv", str(target), "--json")
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["error"] == "file-unusable"
    assert str(target) in error["detail"]
    assert error["hint"]
    assert str(target) in result.stderr  # and said to a person as before


def test_an_import_refused_as_json_says_what_and_how_to_fix_it(cli: Cli, tmp_path: Path) -> None:
    padron = _padron(tmp_path, BAD_ROW)
    assert cli("programs", "load").exit_code == 0
    result = cli("households", "import", str(padron), "--json")
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["error"] == "import-rejected"
    assert error["title"] == "Import rejected: invalid rows"
    assert "--skip-invalid" in error["hint"]
    assert (error["rows"], error["rejected"], error["errors_total"]) == (2, 1, 1)
    assert [(e["line"], e["column"]) for e in error["errors"]] == [(3, "titular_dni")]


def test_the_demo_refuses_a_database_with_runs_as_a_refusal_not_a_usage_error(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCT_DATA_DIR", str(tmp_path / "data"))  # the demo's files, if it got that far
    _one_run(cli, tmp_path)
    result = cli("demo", "--households", "10", "--json")  # DATABASE_URL is the test's database, with a run
    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)
    assert error["error"] == "demo-database-in-use"
    assert "unset it to use the embedded server" in error["detail"]
    listed = json.loads(cli("runs", "list", "--json").stdout)["data"]
    assert len(listed) == 1  # nothing of the demo was written
    table = cli("runs", "list")  # people's output still reaches stdout after the demo's --json moved it
    assert "JUNTOS" in table.stdout


def test_serve_takes_port_zero_and_refuses_a_port_out_of_range(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    monkeypatch.delenv("CCT_PORT", raising=False)
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append(k))
    assert cli("serve", "--port", "0").exit_code == 0
    assert cli("serve").exit_code == 0
    assert [c["port"] for c in calls] == [0, 8000]  # 0 is a port to bind (any free one), not "unset"
    refused = cli("serve", "--port", "70000")
    assert refused.exit_code == 2
    assert "less than or equal to 65535" in _text(refused.output)


def test_a_bank_state_folder_of_another_world_is_a_refusal(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from adapters.bank.simulator import create_app

    create_app(state_dir=tmp_path, seed=3)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    result = cli("bank-sim", "--state-dir", str(tmp_path), "--seed", "4")
    assert result.exit_code == 1
    assert "seed" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("CCT_DB_POOL_SIZE", "1", "greater than or equal to 2"),
        ("CCT_RUN_CONCURRENCY", "many", "valid integer"),
        ("CCT_LOG_FORMAT", "xml", "'auto', 'console' or 'json'"),
    ],
)
def test_a_bad_setting_names_its_variable_and_why(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, why: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = cli("runs", "list")
    assert result.exit_code == 2
    assert f"{variable}={value!r}" in result.output
    assert why in result.output
    assert "Traceback" not in result.output
