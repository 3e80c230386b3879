"""The synthetic registry: deterministic, valid identifiers, rural-heavy districts, plausible households."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from services.identifiers import is_valid_dni, normalize_ubigeo
from services.registry.synthetic import (
    generate_compliance,
    generate_households,
    synthetic_ccis,
    write_padron_csv,
)


def test_the_same_seed_gives_the_same_households() -> None:
    assert generate_households(200, seed=3) == generate_households(200, seed=3)
    assert generate_households(200, seed=3) != generate_households(200, seed=4)


def test_households_are_plausible() -> None:
    households = generate_households(5_000, seed=1)
    assert len({h.household_id for h in households}) == 5_000
    assert len({h.titular_dni for h in households}) == 5_000
    assert all(is_valid_dni(h.titular_dni) and normalize_ubigeo(h.ubigeo) == h.ubigeo for h in households)
    departments = Counter(h.ubigeo[:2] for h in households)
    rural = sum(departments[d] for d in ("01", "03", "05", "06", "08", "09", "10", "16", "21"))
    assert rural / 5_000 > 0.6
    assert departments["15"] / 5_000 < 0.03  # Lima
    statuses = Counter(h.status for h in households)
    assert statuses["active"] / 5_000 > 0.9
    assert 0.3 < sum(1 for h in households if h.children_under_4) / 5_000 < 0.7
    assert all(len(h.titular_name.split()) >= 3 for h in households)


def test_writer_and_compliance_files(tmp_path: Path) -> None:
    households = generate_households(100, seed=2, haku_fraction=0.2)
    ccis = synthetic_ccis(households, 2, unbanked_fraction=0.1)
    write_padron_csv(tmp_path / "p.csv", households, ccis)
    with (tmp_path / "p.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 100
    assert rows[0]["titular_dni"][8] == "-"
    assert sum(1 for r in rows if not r["cci"]) == sum(1 for v in ccis.values() if v is None) > 0
    assert {r["program"] for r in rows} == {"JUNTOS", "HAKU_WINAY_STIPEND"}
    results = generate_compliance(households, "JUNTOS", "2026-B5", 0.3, seed=2, path=tmp_path / "v.csv")
    assert results == generate_compliance(households, "JUNTOS", "2026-B5", 0.3, seed=2)
    juntos_active = {h.household_id for h in households if h.program == "JUNTOS" and h.status == "active"}
    assert {r[0] for r in results} == juntos_active
    assert any(not ok for _, ok, _ in results)
    assert (tmp_path / "v.csv").read_text(encoding="utf-8").splitlines()[0] == "household_id,compliant,reason"
