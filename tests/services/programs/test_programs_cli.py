"""``cct-ledger programs``: load, list, show, fund (idempotent), entitlements, help and errors."""

from __future__ import annotations

import json

from tests.services.programs.conftest import Cli


def test_load_list_show_fund(cli: Cli) -> None:
    loaded = cli("programs", "load", "--json")
    assert loaded.exit_code == 0, loaded.output
    assert json.loads(loaded.stdout)["programs_created"] == ["JUNTOS", "HAKU_WINAY_STIPEND"]
    again = cli("programs", "load")
    assert again.exit_code == 0
    assert "nothing changed" in again.stdout

    listed = cli("programs", "list", "--json")
    assert [p["code"] for p in json.loads(listed.stdout)["data"]] == ["HAKU_WINAY_STIPEND", "JUNTOS"]

    funded = cli("programs", "fund", "JUNTOS", "--amount", "150000000.00", "--reference", "RM-045-2026-MIDIS")
    assert funded.exit_code == 0, funded.output
    assert "S/ 150,000,000.00 to JUNTOS" in funded.stdout
    replay = cli("programs", "fund", "JUNTOS", "--amount", "150000000.00", "--reference", "RM-045-2026-MIDIS", "--json")
    assert json.loads(replay.stdout)["replayed"] is True
    replay_text = cli("programs", "fund", "JUNTOS", "--amount", "150,000,000.00", "--reference", "RM-045-2026-MIDIS")
    assert "already recorded" in replay_text.stdout
    assert "nothing changed" in replay_text.stdout
    conflict = cli("programs", "fund", "JUNTOS", "--amount", "1.00", "--reference", "RM-045-2026-MIDIS")
    assert conflict.exit_code == 1
    assert "already appropriated to JUNTOS for S/ 150,000,000.00" in conflict.stderr

    shown = cli("programs", "show", "JUNTOS", "--json")
    data = json.loads(shown.stdout)
    assert data["fund_balance"]["posted"] == 150_000_000_00
    assert data["appropriations"] == {"count": 1, "total": 150_000_000_00}
    table = cli("programs", "show", "JUNTOS")
    assert "base S/ 200.00" in table.stdout
    assert "+S/ 100.00 first_childhood if children_under_4 >= 1" in table.stdout

    preview = cli("programs", "entitlements", "JUNTOS", "2026-B5", "--json")
    assert json.loads(preview.stdout)["payable_households"] == 0


def test_errors_say_what_was_wrong(cli: Cli) -> None:
    assert cli("programs", "load").exit_code == 0
    cases = [
        (["programs", "fund", "JUNTOS", "--amount", "10.001", "--reference", "R"], "has more than 2 decimals"),
        (["programs", "fund", "JUNTOS", "--amount", "abc", "--reference", "R"], "is not a decimal number"),
        (["programs", "show", "NOPE"], "program 'NOPE' not found"),
        (["programs", "entitlements", "JUNTOS", "2026-B7"], "bimester must be B1..B6"),
        (["programs", "load", "/nonexistent/programs.json"], "cannot read /nonexistent/programs.json"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 1, args
        assert message in result.stderr, (args, result.stderr)


def test_every_command_has_an_example() -> None:
    cli = Cli()
    for command in ("load", "list", "show", "fund", "entitlements"):
        result = cli("programs", command, "--help")
        assert result.exit_code == 0
        assert "Example: cct-ledger programs " + command in result.stdout.replace("\n", " ").replace("  ", " ")
