"""``cct-ledger households`` and ``compliance``: imports with tables, JSON and rejects files; show and list."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.services.registry.conftest import Cli, csv_text, dni, row, write


def test_import_show_list_and_compliance(cli: Cli, tmp_path: Path) -> None:
    assert cli("programs", "load").exit_code == 0
    padron = write(tmp_path / "padron.csv", csv_text([row("H1", dni(1)), row("H2", dni(2), cci="")]))
    first = cli("households", "import", str(padron))
    assert first.exit_code == 0, first.output
    assert "import #1: padron.csv" in first.stdout
    again = cli("households", "import", str(padron), "--json")
    report = json.loads(again.stdout)
    assert (report["changed"], report["unchanged"], report["previous_import"]) == (False, 2, 1)
    said = cli("households", "import", str(padron))
    assert (
        "nothing changed: all 2 households are already up to date (the same file was imported as import #1)"
        in said.stdout
    )

    shown = cli("households", "show", "H1")
    assert "******01" in shown.stdout
    assert dni(1) not in shown.stdout
    revealed = cli("households", "show", "H1", "--reveal", "--reason", "claim 114", "--user", "maria", "--json")
    assert json.loads(revealed.stdout)["titular_dni"] == dni(1)
    reveals = json.loads(cli("households", "reveals", "--json").stdout)["data"]
    assert [(r["household_id"], r["actor"], r["channel"], r["reason"]) for r in reveals] == [
        ("H1", "maria", "cli", "claim 114")
    ]
    assert "claim 114" in cli("households", "reveals", "--household", "H1").stdout
    assert "no reveals" in cli("households", "reveals", "--actor", "nobody").stdout
    blank = cli("households", "show", "H2", "--reveal", "--reason", " ")
    assert (blank.exit_code, dni(2) in blank.output) == (1, False)
    assert "the reason is blank" in blank.stderr
    for blank in (" ", ""):
        nobody = cli("households", "show", "H2", "--reveal", "--user", blank)
        assert (nobody.exit_code, "--user is blank" in nobody.output, dni(2) in nobody.output) == (2, True, False)
    unused = cli("households", "show", "H2", "--reason", "claim")
    assert (unused.exit_code, "a reason is recorded only with a reveal" in unused.stderr) == (1, True)
    assert len(json.loads(cli("households", "reveals", "--json").stdout)["data"]) == 1
    # Text with brackets is shown as it is, in tables and in errors, never read as markup.
    bracketed = cli("households", "show", "H2", "--reveal", "--reason", "claim [/x] [bold]ok", "--user", "[/u]")
    assert bracketed.exit_code == 0, bracketed.output
    listed = cli("households", "reveals", "--household", "H2")
    assert (listed.exit_code, "claim [/x] [bold]ok" in listed.stdout, "[/u]" in listed.stdout) == (0, True, True)
    missing = cli("households", "show", "[/x]")
    assert (missing.exit_code, "'[/x]' is not in the registry" in missing.stderr) == (1, True)
    listed = cli("households", "list", "--status", "active", "--limit", "1", "--json")
    page = json.loads(listed.stdout)
    assert [h["household_id"] for h in page["data"]] == ["H1"]
    assert page["has_more"] is True
    rest = cli("households", "list", "--cursor", page["next_cursor"])
    assert "H2" in rest.stdout

    verification = write(tmp_path / "v.csv", "household_id,compliant,reason\nH1,No,inasistencia\nH2,si,\n")
    done = cli("compliance", "import", "--program", "JUNTOS", "--period", "2026-B5", str(verification), "--json")
    assert json.loads(done.stdout)["inserted"] == 2
    history = cli("households", "show", "H1", "--json")
    assert json.loads(history.stdout)["compliance"][0]["period"] == "2026-B5"


def test_refused_and_skipped_imports(cli: Cli, tmp_path: Path) -> None:
    assert cli("programs", "load").exit_code == 0
    text = csv_text(
        [row("H1", dni(1)), row("H2", dni(2), titular_dni="10117410-3"), row("H3", dni(3), enrolled_on="2099-01-01")]
    )
    padron = write(tmp_path / "padron.csv", text)
    refused = cli("households", "import", str(padron))
    assert refused.exit_code == 1
    assert "check character '3' is wrong (expected 2/G)" in refused.stderr
    assert "2 of 3 rows are invalid" in refused.stderr
    as_json = cli("households", "import", str(padron), "--json")
    assert as_json.exit_code == 1
    errors = json.loads(as_json.stdout)["errors"]
    assert [(e["line"], e["column"]) for e in errors] == [(3, "titular_dni"), (4, "enrolled_on")]
    assert "is in the future" in errors[1]["reason"]
    assert json.loads(cli("households", "list", "--json").stdout)["data"] == []

    skipped = cli("households", "import", str(padron), "--skip-invalid")
    assert skipped.exit_code == 0, skipped.output
    rejects = tmp_path / "padron.csv.rejects.csv"
    assert f"2 rejected rows written to {rejects}" in skipped.stderr.replace("\n", "")
    with rejects.open(encoding="utf-8") as f:
        lines = list(csv.reader(f))
    assert lines[0][-3:] == ["reject_line", "reject_column", "reject_reason"]
    assert [(r[0], r[-3], r[-2]) for r in lines[1:]] == [("H2", "3", "titular_dni"), ("H3", "4", "enrolled_on")]
    chosen = tmp_path / "bad.csv"
    padron2 = write(tmp_path / "p2.csv", csv_text([row("H9", dni(9), status="gone")]))
    out = cli("households", "import", str(padron2), "--skip-invalid", "--rejects", str(chosen), "--json")
    assert json.loads(out.stdout)["rejects_file"] == str(chosen)
    assert chosen.exists()


def test_compliance_errors_and_help(cli: Cli, tmp_path: Path) -> None:
    assert cli("programs", "load").exit_code == 0
    verification = write(tmp_path / "v.csv", "household_id,compliant,reason\nH1,maybe,\n")
    refused = cli("compliance", "import", "--program", "JUNTOS", "--period", "2026-B5", str(verification))
    assert refused.exit_code == 1
    assert "'maybe' is not true/false, 1/0, si/sí/no or yes (any case)" in refused.stderr
    missing = cli("households", "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 1
    assert "cannot read" in missing.stderr
    for group, command in (
        ("households", "import"),
        ("households", "show"),
        ("households", "list"),
        ("compliance", "import"),
    ):
        text = cli(group, command, "--help").stdout.replace("\n", " ")
        assert f"Example: cct-ledger {group} {command}" in " ".join(text.split())
