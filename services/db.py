"""The database as services see it: pooled connections and units of work (implemented by
``adapters.postgres.database.Database``)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ledger.db import Connection


class DatabasePort(Protocol):
    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A pooled connection in autocommit mode."""
        ...

    def unit_of_work(self) -> AbstractAsyncContextManager[Connection]:
        """A pooled connection inside a transaction: commit on success, rollback on error."""
        ...

    def session(self) -> AbstractAsyncContextManager[Connection]:
        """A pooled connection that may hold session state (advisory locks), cleared on release."""
        ...
