"""Export the bank interface's OpenAPI document (served by the simulator at ``/openapi.json``).

.venv/bin/python -m adapters.bank.simulator.openapi            # rewrite docs/bank-openapi.json
.venv/bin/python -m adapters.bank.simulator.openapi --check    # exit 1 if the committed copy is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from adapters.bank.simulator.app import create_app
from adapters.bank.simulator.store import MemoryStore

DEFAULT_PATH = Path(__file__).resolve().parents[3] / "docs" / "bank-openapi.json"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of a fresh in-memory simulator."""
    document: dict[str, Any] = create_app(MemoryStore()).openapi()
    return document


def render(document: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, UTF-8, final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) the committed OpenAPI document; returns the exit status."""
    parser = argparse.ArgumentParser(description="Export or check docs/bank-openapi.json")
    parser.add_argument("--check", action="store_true", help="fail if the file differs from the generated document")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    text = render(openapi_document())
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is stale: run python -m adapters.bank.simulator.openapi", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
