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
    padron = tmp_path / "padron.csv"
    padron.write_text(
        "household_id,titular_dni,titular_name,ubigeo,cci,status,enrolled_on,children_under_4,"
        "upper_secondary_students\n000001,12345678,Ana Quispe,080101,,active,2024-01-15,1,0\n"
        "000002,bad,Luz Sosa,080101,,active,2024-01-15,1,0\n"
    )
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
