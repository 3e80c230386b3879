"""Helpers for migrations written as SQL scripts."""

from __future__ import annotations

from alembic import op
from sqlalchemy.util.concurrency import await_


def execute_script(sql: str) -> None:
    """Run a multi-statement SQL script in the migration's transaction.

    asyncpg prepares single statements only; a script (functions with ``$$`` bodies, several statements)
    goes through the driver's simple-query path on the same connection and transaction.
    """
    driver = op.get_bind().connection.driver_connection
    assert driver is not None
    await_(driver.execute(sql))
