"""Routes of the programs capability: thin adapters from HTTP to :mod:`services.programs.service`."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from services.api.deps import Conn, Key, Paging, Reader, UoW, Writer, page
from services.programs import service
from services.programs.errors import ProgramError
from services.programs.schemas import (
    AppropriationCreate,
    AppropriationOut,
    EntitlementSummaryOut,
    ProgramDetailOut,
    ProgramOut,
)

router = APIRouter(prefix="/v1/programs", tags=["programs"])


def _encode(code: str) -> str:
    return base64.urlsafe_b64encode(f"p1:{code}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith("p1:"):
        raise ProgramError(f"cursor {cursor!r} is not valid; use the next_cursor of a previous page", field="cursor")
    return raw[3:]


@router.get("", response_model=dict[str, Any], summary="List programs")
async def list_programs(who: Reader, conn: Conn, pagination: Paging) -> dict[str, Any]:
    """Programs in code order, paginated."""
    after = _decode(pagination.cursor) if pagination.cursor else None
    found = await service.list_programs(conn, after=after, limit=pagination.limit + 1)
    items = found[: pagination.limit]
    cursor = _encode(items[-1].code) if len(found) > pagination.limit else None
    return page([ProgramOut(**p.to_dict()).model_dump() for p in items], cursor)


@router.get("/{code}", response_model=ProgramDetailOut, summary="A program with its rule versions and balances")
async def get_program(code: str, who: Reader, conn: Conn) -> dict[str, Any]:
    """The program, every rule version (with the one in force for the current period) and its fund and
    in-transit balances."""
    return await service.describe_program(conn, code)


@router.post(
    "/{code}/appropriations", status_code=201, response_model=AppropriationOut, summary="Record an appropriation"
)
async def appropriate(code: str, body: AppropriationCreate, who: Writer, conn: UoW, key: Key) -> Response:
    """Move `amount` from `mef:treasury` to the program's fund, once per `reference`.

    Repeating a reference with the same amount changes nothing and answers with the first result (header
    `Idempotent-Replayed: true`); the same reference with another amount, or the same `Idempotency-Key` for
    another appropriation, is refused with 409 `appropriation-conflict`.
    """
    result = await service.fund(conn, code, body.amount, body.reference, actor=who.name, idempotency_key=key)
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONResponse(result.to_dict(), status_code=201, headers=headers)


@router.get(
    "/{code}/periods/{period}/entitlements",
    response_model=EntitlementSummaryOut,
    summary="What a period would pay: households and amounts per status",
)
async def entitlements(code: str, period: str, who: Reader, conn: Conn) -> dict[str, Any]:
    """Computed from the registry and the rule version in force at the period's start: payable households
    and amount, and how many are excluded (inactive, not_started, ended, suspended)."""
    return await service.entitlement_summary(conn, code, period)
