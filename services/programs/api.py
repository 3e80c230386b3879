"""Routes of the programs capability: thin adapters from HTTP to :mod:`services.programs.service`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from services.api.deps import Conn, Key, Paging, Reader, UoW, Writer, page
from services.programs import service
from services.programs.schemas import (
    AppropriationCreate,
    AppropriationOut,
    EntitlementSummaryOut,
    ProgramDetailOut,
    ProgramOut,
)

router = APIRouter(prefix="/v1/programs", tags=["programs"])


@router.get("", response_model=dict[str, Any], summary="List programs")
async def list_programs(who: Reader, conn: Conn, pagination: Paging) -> dict[str, Any]:
    """Programs in code order, paginated."""
    items, cursor = await service.page_of_programs(conn, limit=pagination.limit, cursor=pagination.cursor)
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
