"""Routes of the household registry: households, padron imports and compliance files (CSV request bodies)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from services.api.deps import Auditor, Conn, Paging, Reader, UoW, Writer, page
from services.auth.service import Role
from services.registry import service
from services.registry.errors import InvalidImportFile
from services.registry.padron import CsvSource
from services.registry.schemas import HouseholdDetailOut, HouseholdOut, ImportOut, RevealOut

router = APIRouter(prefix="/v1", tags=["registry"])
CSV_TYPES = ("text/csv", "application/csv", "text/plain")
FileName = Annotated[str, Query(max_length=200, description="Recorded with the import.")]


def _csv_request_body(description: str) -> dict[str, Any]:
    """The OpenAPI description of a CSV request body (the route reads the body itself)."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {t: {"schema": {"type": "string"}} for t in CSV_TYPES},
        }
    }


async def _csv_body(request: Request, name: str) -> CsvSource:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in CSV_TYPES:
        raise InvalidImportFile(
            f"send the file as the request body with Content-Type: text/csv (got {content_type or 'none'})",
            content_type=content_type,
        )
    body = await request.body()
    if not body.strip():
        raise InvalidImportFile("the request body is empty: send the CSV file, header line first")
    return CsvSource.from_bytes(name, body)


@router.get("/households", response_model=dict[str, Any], summary="List households")
async def list_households(
    who: Reader,
    conn: Conn,
    pagination: Paging,
    ubigeo: Annotated[str | None, Query(description="6-digit district code.")] = None,
    status: Annotated[str | None, Query(description="active, inactive or exited.")] = None,
    program: Annotated[str | None, Query(description="Program code.")] = None,
) -> dict[str, Any]:
    """Households in id order (DNI and CCI masked), filtered, paginated."""
    items, cursor = await service.list_households(
        conn, limit=pagination.limit, cursor=pagination.cursor, ubigeo=ubigeo, status=status, program=program
    )
    return page([HouseholdOut(**h).model_dump() for h in items], cursor)


@router.get("/households/{household_id}", response_model=HouseholdDetailOut, summary="A household and its history")
async def get_household(
    household_id: str,
    who: Reader,
    conn: Conn,
    response: Response,
    reveal: Annotated[bool, Query(description="Show DNI and CCI unmasked (operators and admins).")] = False,
    reason: Annotated[str | None, Query(description="Why they are needed; recorded with the reveal.")] = None,
) -> dict[str, Any]:
    """The household, every version of it, its recent compliance records and its payments. The titular's DNI
    and the CCI are masked unless `reveal=true`, which needs the operator or admin role; every reveal is
    recorded first (who, when, `reason`) and listed by `GET /v1/audit/reveals`."""
    if reveal:
        who.require(Role.OPERATOR)
        # Shown once, recorded once: no cache (a browser's, a proxy's) may show it again unrecorded.
        response.headers["Cache-Control"] = "no-store"
    return await service.get_household(conn, household_id, reveal=reveal, actor=who.name, channel="api", reason=reason)


@router.get("/audit/reveals", response_model=dict[str, Any], summary="Who was shown personal data")
async def list_reveals(
    who: Auditor,
    conn: Conn,
    pagination: Paging,
    household_id: Annotated[str | None, Query(description="Only this household.")] = None,
    actor: Annotated[str | None, Query(description="Only this user.")] = None,
) -> dict[str, Any]:
    """Every time a household's DNI and CCI were shown unmasked (`reveal=true`, `households show --reveal`):
    who, when, through what, why. Newest first, paginated; auditors and admins."""
    items, cursor = await service.list_reveals(
        conn, limit=pagination.limit, cursor=pagination.cursor, household_id=household_id, actor=actor
    )
    return page([RevealOut(**r).model_dump() for r in items], cursor)


@router.post(
    "/households/imports",
    response_model=ImportOut,
    summary="Import a padron (CSV body)",
    openapi_extra=_csv_request_body("The padron: UTF-8 CSV, header line first."),
)
async def import_households(
    request: Request,
    who: Writer,
    conn: UoW,
    skip_invalid: Annotated[bool, Query(description="Import the valid rows and report the rest.")] = False,
    file_name: FileName = "padron.csv",
) -> dict[str, Any]:
    """Send the padron as the body (`Content-Type: text/csv`). Columns: household_id, titular_dni,
    titular_name, ubigeo, cci, status, enrolled_on, children_under_4, upper_secondary_students (optional
    program; others are kept in `extra`).

    All-or-nothing: one invalid row refuses the file with 422 `import-rejected` and an `errors` list (line,
    column, reason). With `skip_invalid=true` the valid rows are imported and the others listed in `errors`.
    Importing the same file again changes nothing (`changed: false`).
    """
    source = await _csv_body(request, file_name)
    report = await service.import_households(conn, source, actor=who.name, skip_invalid=skip_invalid)
    return report.to_dict()


@router.post(
    "/programs/{code}/periods/{period}/compliance",
    response_model=ImportOut,
    summary="Import a period's verification results (CSV body)",
    openapi_extra=_csv_request_body("household_id, compliant, reason: UTF-8 CSV, header line first."),
)
async def import_compliance(
    code: str, period: str, request: Request, who: Writer, conn: UoW, file_name: FileName = "verification.csv"
) -> dict[str, Any]:
    """Columns household_id, compliant (true/false, 1/0, si/no), reason. A non-compliant household is
    suspended for this period only. All-or-nothing: bad values and unknown households are refused with 422
    `import-rejected` and an `errors` list."""
    source = await _csv_body(request, file_name)
    report = await service.import_compliance(conn, source, program=code, period=period, actor=who.name)
    return report.to_dict()
