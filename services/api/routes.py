"""The routers of every capability beyond the ledger, mounted by ``create_app``."""

from __future__ import annotations

from typing import Any


def routers() -> list[Any]:
    """Routers to mount, in order."""
    return []
