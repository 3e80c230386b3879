"""The three rings: ``ledger`` imports no outer ring; only the entry points wire adapters in."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_LEDGER = {"fastapi", "httpx", "prometheus_client", "services", "adapters", "starlette", "uvicorn"}
ENTRY_POINTS = ("services/api/", "services/cli/")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_ledger_imports_no_outer_ring() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN_IN_LEDGER) for p in (ROOT / "ledger").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_services_reach_adapters_only_through_entry_points() -> None:
    offenders = []
    for p in (ROOT / "services").rglob("*.py"):
        rel = str(p.relative_to(ROOT))
        if rel.startswith(ENTRY_POINTS):
            continue
        if "adapters" in _imports(p):
            offenders.append(rel)
    assert offenders == []


def test_ledger_never_mentions_binary_floating_point() -> None:
    word = re.compile(r"\bfloat\b")
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in (ROOT / "ledger").rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if word.search(line.split("#", 1)[0])
    ]
    assert hits == []
