"""The routers of every capability beyond the ledger, mounted by ``create_app``."""

from __future__ import annotations

from typing import Any


def routers() -> list[Any]:
    """Routers to mount, in order."""
    from services.programs.api import router as programs_router
    from services.registry.api import router as registry_router

    return [programs_router, registry_router]
