"""Routes of the payment runs (operator creates and executes, approver approves, everyone reads)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.api.deps import Approver, Conn, Id, Paging, Reader, UoW, Writer, page
from services.payments import report, repository, service
from services.payments.errors import RunStateError
from services.payments.execute import ExecuteOptions, RunExecutor
from services.payments.schemas import RunCreate, RunOut

router = APIRouter(prefix="/v1/payment-runs", tags=["payment runs"])
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
async def create(body: RunCreate, who: Writer, conn: UoW) -> dict[str, Any]:
    """Computes every household's entitlement for the period and snapshots the payments; nothing moves yet.
    A program has one run per period (409 `run-exists`)."""
    created = await service.create_run(conn, body.program, body.period, who.name, body.batch_size)
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
    bank = request.app.state.bank_factory()
    database = request.app.state.database
    tasks: set[asyncio.Task[Any]] = request.app.state.__dict__.setdefault("run_tasks", set())

    async def work() -> None:
        try:
            await RunExecutor(
                database, bank, run_id, who.name, options=ExecuteOptions.from_settings(request.app.state.settings)
            ).execute()
        except Exception as e:  # reported in the run's events and logs; the run resumes on the next call
            log.error("run.execute_failed", run=run_id, error=repr(e))
        finally:
            await bank.aclose()

    task = asyncio.create_task(work())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return JSONResponse({"id": run_id, "status": "executing", "detail": "execution started"}, status_code=202)


@router.post("/{run_id}/close", response_model=RunOut, summary="Close a settled run")
async def close(run_id: Id, who: Writer, conn: UoW) -> dict[str, Any]:
    return _jsonable(await service.close_run(conn, run_id, who.name))  # type: ignore[no-any-return]
