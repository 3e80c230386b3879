"""Use cases of the household registry: import files (see :mod:`services.registry.imports`), read households.

Functions never commit: run writes in a unit of work (``Database.unit_of_work()``).
"""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from typing import Any, Literal

import structlog

from ledger import cursors
from ledger.db import Connection
from services.logs import mask_value
from services.payments import repository as payments_repository
from services.registry import repository
from services.registry.errors import HouseholdNotFound, InvalidFilter, InvalidRevealReason
from services.registry.imports import ImportReport, Progress, import_compliance, import_households
from services.registry.padron import STATUSES

log = structlog.get_logger(__name__)

__all__ = [
    "ImportReport",
    "Progress",
    "decode_cursor",
    "encode_cursor",
    "get_household",
    "household_out",
    "import_compliance",
    "import_households",
    "list_households",
    "list_reveals",
    "mask_household",
]

REASON_MAX = 500
"""The most characters of a reveal's reason."""
Channel = Literal["api", "cli"]
"""Through what a household's personal data was revealed."""


# ------------------------------------------------------------------------------------------------ reading
def mask_household(row: dict[str, Any]) -> dict[str, Any]:
    """The household with its titular's DNI and CCI masked (all but the last two characters)."""
    out = dict(row)
    for key in ("titular_dni", "cci"):
        if out.get(key):
            out[key] = mask_value(str(out[key]))
    return out


def household_out(row: dict[str, Any], *, reveal: bool = False) -> dict[str, Any]:
    """A household row as JSON-ready data (dates as ISO strings), masked unless ``reveal``."""
    data = row if reveal else mask_household(row)
    out: dict[str, Any] = {}
    for key, value in data.items():
        out[key] = value.isoformat() if isinstance(value, date | datetime) else value
    return out


async def get_household(
    conn: Connection,
    household_id: str,
    *,
    reveal: bool = False,
    actor: str | None = None,
    channel: Channel | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """A household with its history (every version), its recent compliance records and its payments.

    With ``reveal`` the DNI and CCI are shown whole: who asked (``actor``), through what (``channel``: api or
    cli) and why (``reason``, optional) is first recorded in ``registry.reveals`` (committed before the data
    is returned: no record, no data) and logged (``household.revealed``). ``conn`` must be in autocommit
    mode for a reveal: a record in a transaction that rolls back would leave data shown and not recorded.

    Raises:
        HouseholdNotFound: no such household.
        InvalidRevealReason: a reason without ``reveal``, or one that is not readable text of 1 to 500
            characters (see :func:`_checked_reason`).
    """
    if not reveal:
        if reason is not None:
            raise InvalidRevealReason(
                "a reason is recorded only with a reveal: add reveal=true (--reveal) or leave the reason out",
                field="reason",
            )
    else:
        if not actor or not actor.strip() or channel is None:
            raise ValueError("a reveal needs who asks (actor) and through what (channel)")
        if conn.is_in_transaction():
            raise RuntimeError("a reveal is recorded in autocommit: call get_household outside a transaction")
        reason = _checked_reason(reason)
    row = await repository.get_household(conn, household_id)
    if row is None:
        hint = ""
        for other in {household_id.strip(), household_id.strip().upper()} - {household_id}:
            if await repository.get_household(conn, other) is not None:
                hint = f"; did you mean {other!r}? (ids are exact: case matters)"
        raise HouseholdNotFound(f"household {household_id!r} is not in the registry{hint}", household_id=household_id)
    if reveal:
        assert actor is not None  # checked above
        assert channel is not None
        reveal_id = await repository.record_reveal(conn, household_id, actor, channel, reason)
        # A warning, so that it is written at every log level (the command line's default is WARNING).
        log.warning("household.revealed", household=household_id, actor=actor, channel=channel, reveal_id=reveal_id)
    history = []
    for h in await repository.household_history(conn, household_id):
        data = {k: v for k, v in h.items() if k not in ("version", "import_id", "changed_at")}
        history.append(
            {
                "version": h["version"],
                "import_id": h["import_id"],
                "changed_at": h["changed_at"].isoformat(),
                "data": household_out(data, reveal=reveal),
            }
        )
    compliance = [household_out(c) for c in await repository.household_compliance(conn, household_id)]
    paid = await payments_repository.household_payments(conn, household_id)
    return {**household_out(row, reveal=reveal), "history": history, "compliance": compliance, **paid}


def encode_cursor(household_id: str) -> str:
    """An opaque cursor after ``household_id``."""
    return cursors.encode_cursor("h1", household_id)


def decode_cursor(cursor: str) -> str:
    """The household id inside a cursor from :func:`encode_cursor`.

    Raises:
        InvalidCursor: not one of ours.
    """
    return cursors.decode_text(cursor, "h1")


async def list_households(
    conn: Connection,
    *,
    limit: int = 100,
    cursor: str | None = None,
    ubigeo: str | None = None,
    status: str | None = None,
    program: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Households in id order, filtered, masked, paginated; returns (page, next cursor or None).

    Raises:
        InvalidFilter, InvalidCursor.
    """
    if status is not None and status not in STATUSES:
        raise InvalidFilter(f"status must be one of active, inactive, exited; got {status!r}", field="status")
    if ubigeo is not None and (len(ubigeo) != 6 or not (ubigeo.isascii() and ubigeo.isdigit())):
        raise InvalidFilter(f"ubigeo must be 6 digits, got {ubigeo!r}", field="ubigeo")
    after = decode_cursor(cursor) if cursor else None
    found = await repository.list_households(
        conn, after=after, limit=limit + 1, ubigeo=ubigeo, status=status, program=program
    )
    page = [household_out(r) for r in found[:limit]]
    return page, (encode_cursor(found[limit - 1]["household_id"]) if len(found) > limit else None)


def _checked_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    text = reason.strip()
    if not text:
        raise InvalidRevealReason(
            "the reason is blank: say why the personal data is needed, or leave it out", field="reason"
        )
    # Letters, marks, digits, punctuation, symbols and spaces: no control, format (invisible, direction
    # overrides), line or paragraph separator, private-use or unassigned character.
    if any(unicodedata.category(c)[0] not in "LMNPS" and unicodedata.category(c) != "Zs" for c in text):
        raise InvalidRevealReason(
            "the reason holds control, invisible or line-breaking characters; write it as one line of plain text",
            field="reason",
        )
    if not any(c.isalnum() for c in text):
        raise InvalidRevealReason("the reason has no letters or digits: say why the data is needed", field="reason")
    if len(text) > REASON_MAX:
        raise InvalidRevealReason(
            f"the reason is {len(text)} characters; at most {REASON_MAX}", field="reason", length=len(text)
        )
    return text


async def list_reveals(
    conn: Connection,
    *,
    limit: int = 100,
    cursor: str | None = None,
    household_id: str | None = None,
    actor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Who was shown which household's DNI and CCI whole, newest first, filtered, paginated; returns (page,
    next cursor or None).

    Raises:
        InvalidCursor.
    """
    before = cursors.decode_int(cursor, "x1") if cursor else None
    found = await repository.list_reveals(conn, before=before, limit=limit + 1, household_id=household_id, actor=actor)
    page = [{**r, "revealed_at": r["revealed_at"].isoformat()} for r in found[:limit]]
    return page, (cursors.encode_cursor("x1", found[limit - 1]["id"]) if len(found) > limit else None)
