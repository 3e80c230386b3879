"""Routes of the payment runs (operator creates and executes, approver approves, everyone reads)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ledger.errors import AppError
from services.api.deps import Approver, Conn, Id, Paging, Reader, UoW, Writer, page
from services.db import DatabasePort
from services.payments import report, repository, service
from services.payments.errors import RunStateError
from services.payments.execute import ExecuteOptions, RunExecutor, cancel_refused_batch, refused_batch
from services.payments.schemas import RunCreate, RunOut

router = APIRouter(prefix="/v1/payment-runs", tags=["payment runs"])
BatchNo = Annotated[int, Path(ge=0, le=2**31 - 1, description="The batch number.")]
log = structlog.get_logger(__name__)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@router.post("", status_code=201, response_model=RunOut, summary="Create a run: compute and snapshot payments")
async def create(body: RunCreate, who: Writer, request: Request) -> dict[str, Any]:
    """Computes every household's entitlement for the period and snapshots the payments; nothing moves yet.
    A program has one run per period (409 `run-exists`). A run whose creation was interrupted (status
    `creating`) is finished by the same request."""
    database: DatabasePort = request.app.state.database
    created = await service.create_run(
        database,
        body.program,
        body.period,
        who.name,
        body.batch_size,
        workers=request.app.state.settings.run_create_workers,
    )
    return {**_jsonable(created.run), "warnings": list(created.warnings)}


@router.get("", summary="List runs, newest first")
async def list_runs(who: Reader, conn: Conn, pagination: Paging, program: str | None = None) -> dict[str, Any]:
    runs, cursor = await repository.page_of_runs(
        conn, program=program, limit=pagination.limit, cursor=pagination.cursor
    )
    return page(_jsonable(runs), cursor)


@router.get("/{run_id}", summary="A run with its report: paid, rejected by reason, accrued, districts")
async def get(run_id: Id, who: Reader, conn: Conn) -> dict[str, Any]:
    s = await report.summary(conn, run_id)
    s["events"] = await repository.events(conn, run_id)
    return _jsonable(s)  # type: ignore[no-any-return]


@router.post("/{run_id}/approve", response_model=RunOut, summary="Approve (maker-checker)")
async def approve(run_id: Id, who: Approver, conn: UoW) -> dict[str, Any]:
    """The approver must not be the maker; refused when the program's fund cannot cover the run."""
    return _jsonable(await service.approve_run(conn, run_id, who.name))  # type: ignore[no-any-return]


@router.post("/{run_id}/execute", status_code=202, summary="Execute (or resume) in the background")
async def execute(run_id: Id, who: Writer, request: Request, conn: Conn) -> JSONResponse:
    """Starts (or resumes) the execution in the server; poll `GET /v1/payment-runs/{id}` for its progress.
    Needs `CCT_BANK_URL`."""
    run = await repository.get_run(conn, run_id)
    if run["status"] not in ("approved", "executing"):
        raise RunStateError(f"run {run_id} is {run['status']}; only an approved run can be executed", run=run_id)
    # One execution per run in this server: a repeated call while it runs starts nothing (another server
    # process's execution of the same run is kept out by the run's lock, and this one waits its turn).
    running: dict[int, asyncio.Task[Any]] = request.app.state.__dict__.setdefault("run_tasks", {})
    if run_id in running:
        return JSONResponse(
            {"id": run_id, "status": "executing", "detail": "already executing in this server"}, status_code=202
        )
    bank = request.app.state.bank_factory()
    database = request.app.state.database

    async def work() -> None:
        try:
            await RunExecutor(
                database, bank, run_id, who.name, options=ExecuteOptions.from_settings(request.app.state.settings)
            ).execute()
        except Exception as e:  # the run resumes on the next call; the failure is in its events and the logs
            log.error("run.execute_failed", run=run_id, error=repr(e))
            await _record_failure(database, run_id, who.name, e)
        finally:
            await bank.aclose()

    task = asyncio.create_task(work())
    running[run_id] = task
    task.add_done_callback(lambda _: running.pop(run_id, None))
    return JSONResponse({"id": run_id, "status": "executing", "detail": "execution started"}, status_code=202)


async def _record_failure(database: DatabasePort, run_id: int, actor: str, error: Exception) -> None:
    """An execution started over HTTP has no caller to tell: its failure becomes an ``execution_failed`` event
    of the run (what `GET /v1/payment-runs/{id}` shows), with the error's type and what to do."""
    if isinstance(error, AppError):
        detail = {**error.extra, "error": error.type, "detail": error.detail}
    else:
        detail = {"error": "internal-error", "detail": f"{type(error).__name__}: the execution stopped; resume it"}
    try:
        async with database.unit_of_work() as conn:
            await repository.event(conn, run_id, actor, "execution_failed", detail)
    except Exception as e:  # the database itself may be what failed; the log above has the error
        log.error("run.execute_failure_not_recorded", run=run_id, error=repr(e))


class BatchCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=500, description="Why (recorded in the run's events).")]


@router.post("/{run_id}/batches/{batch_no}/cancel", summary="Cancel a batch the bank refused")
async def cancel_batch(
    run_id: Id, batch_no: BatchNo, body: BatchCancel, who: Writer, request: Request
) -> dict[str, Any]:
    """Only a batch the bank refused (a `submit_refused` incident) and does not have: its hold returns to the
    fund, its payments are rejected as `cancelled`, their entitlements accrue to the next run. Needs
    `CCT_BANK_URL`. Answers the run's report."""
    database = request.app.state.database
    async with database.connection() as conn:
        await refused_batch(conn, run_id, batch_no)  # the run and the batch first, then the bank
    bank = request.app.state.bank_factory()
    try:
        await cancel_refused_batch(database, bank, run_id, batch_no, who.name, body.reason)
    finally:
        await bank.aclose()
    async with database.connection() as conn:
        s = await report.summary(conn, run_id)
        s["events"] = await repository.events(conn, run_id)
    return _jsonable(s)  # type: ignore[no-any-return]


@router.post("/{run_id}/close", response_model=RunOut, summary="Close a settled run")
async def close(run_id: Id, who: Writer, conn: UoW) -> dict[str, Any]:
    return _jsonable(await service.close_run(conn, run_id, who.name))  # type: ignore[no-any-return]
