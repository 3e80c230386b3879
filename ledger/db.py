"""The connection type the ledger runs on: an asyncpg connection, pooled or not."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


def affected_rows(status: str) -> int:
    """The number of rows an INSERT, UPDATE or DELETE reports in its command status (``"UPDATE 12"``)."""
    return int(status.rsplit(" ", 1)[-1])
