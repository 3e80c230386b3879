"""Routes of the ledger: thin adapters from HTTP to :class:`ledger.engine.Ledger`."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from ledger import audit
from ledger.engine import Ledger
from ledger.groups import TransferGroups
from ledger.models import Transfer
from services.api.deps import (
    Admin,
    Auditor,
    Conn,
    Id,
    Paging,
    Reader,
    UoW,
    Write,
    Writer,
    get_database,
    json_body,
    keyed_write_of,
    keyed_write_openapi,
    page,
)
from services.ledgerapi import metrics
from services.ledgerapi.schemas import (
    AccountCreate,
    AccountOut,
    BalanceOut,
    BatchCreate,
    PeriodClose,
    PostRequest,
    ReverseRequest,
    StatementLineOut,
    TransferCreate,
    TransferOut,
    VerifyOut,
    VoidRequest,
)

router = APIRouter(prefix="/v1", tags=["ledger"])


class _ORJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@functools.lru_cache(maxsize=64)
def _transfers_counter(kind: str, replayed: bool) -> Any:
    return metrics.TRANSFERS.labels(kind=kind, replayed=str(replayed).lower())


def _transfer_response(t: Transfer, status: int = 201) -> Response:
    _transfers_counter(t.kind, t.replayed).inc()
    headers = {"Idempotent-Replayed": "true"} if t.replayed else None
    return _ORJSON(t.to_dict(), status_code=status, headers=headers)


def transfer_groups(request: Request) -> TransferGroups:
    """The process's groups of online transfers (:mod:`ledger.groups`), made on first use
    (``CCT_TRANSFER_GROUP_MAX`` 1: each transfer written alone, in its request's task)."""
    state = request.app.state
    groups: TransferGroups | None = getattr(state, "transfer_groups", None)
    if groups is None:
        settings = state.settings
        groups = TransferGroups(
            get_database(request).connection,
            max_items=settings.transfer_group_max,
            workers=settings.transfer_group_workers,
            observe=_observe_group,
        )
        state.transfer_groups = groups
    return groups


def _observe_group(size: int, together: bool) -> None:
    metrics.TRANSFER_GROUPS.labels(together=str(together).lower()).observe(size)


# First in the router: Starlette tries routes in order (a regular expression each), and this one carries
# most of the traffic.
#
# It takes the request itself and reads its caller, key and body without FastAPI's parameter machinery
# (`keyed_write_of`, `json_body`: the same checks and errors, documented by `keyed_write_openapi`): driven
# in-process that machinery was about a third of the route's CPU (docs/performance.md).
@router.post(
    "/transfers",
    status_code=201,
    response_model=TransferOut,
    summary="Create a transfer",
    openapi_extra=keyed_write_openapi(TransferCreate),
)
async def create_transfer(request: Request) -> Response:
    """Create a posted transfer, or a pending one (a hold) with `"pending": true`.

    Postings must balance (debits = credits) in one currency. Replaying the same `Idempotency-Key` with the
    same body returns the first result (header `Idempotent-Replayed: true`); the same key with another body
    is refused with 409.
    """
    call = await keyed_write_of(request)
    body = await json_body(request, TransferCreate)
    # Written together with the transfers of concurrent callers (ledger.groups), the same answer as alone.
    t = await transfer_groups(request).transfer(body.to_request(), call.key, call.who.name)
    return _transfer_response(t)


@router.post("/accounts", status_code=201, response_model=AccountOut, summary="Open an account")
async def create_account(
    body: AccountCreate,
    who: Writer,
    conn: Conn,
    key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> dict[str, Any]:
    """Open an account. A duplicate code is refused with 409 `account-exists`, unless the request repeats an
    earlier one with the same optional `Idempotency-Key`."""
    account = await Ledger(conn, who.name).create_account(body.to_spec(), key)
    return account.to_dict()


@router.get("/accounts", response_model=dict[str, Any], summary="List accounts")
async def list_accounts(
    who: Reader,
    conn: Conn,
    pagination: Paging,
    prefix: Annotated[str, Query(max_length=200, description="Only codes starting with this")] = "",
) -> dict[str, Any]:
    accounts, cursor = await Ledger(conn).list_accounts(prefix=prefix, limit=pagination.limit, cursor=pagination.cursor)
    return page([a.to_dict() for a in accounts], cursor)


@router.get("/accounts/{code}", response_model=AccountOut, summary="An account with its balances")
async def get_account(code: str, who: Reader, conn: Conn) -> dict[str, Any]:
    return (await Ledger(conn).get_account(code)).to_dict()


@router.post("/accounts/{code}/close", response_model=AccountOut, summary="Close an account")
async def close_account(code: str, who: Writer, conn: Conn) -> dict[str, Any]:
    """Close an account with zero balance and nothing pending; it then refuses new postings."""
    return (await Ledger(conn, who.name).close_account(code)).to_dict()


@router.get("/accounts/{code}/balance", response_model=BalanceOut, summary="Balance now or at an instant")
async def balance(
    code: str,
    who: Reader,
    conn: Conn,
    as_of: Annotated[datetime | None, Query(description="RFC 3339 instant, e.g. 2026-11-01T00:00:00Z")] = None,
) -> dict[str, Any]:
    return (await Ledger(conn).balance(code, as_of)).to_dict()


@router.get("/accounts/{code}/postings", response_model=dict[str, Any], summary="Statement, newest first")
async def postings(code: str, who: Reader, conn: Conn, pagination: Paging) -> dict[str, Any]:
    """The account's postings, newest first, each with the balance after it. Paginated: pass `next_cursor`
    back as `cursor`."""
    lines, cursor = await Ledger(conn).statement(code, limit=pagination.limit, cursor=pagination.cursor)
    return page([StatementLineOut(**line.to_dict()).model_dump() for line in lines], cursor)


@router.post("/transfers/batch", status_code=201, summary="Create up to 10,000 transfers, all or nothing")
async def create_batch(body: BatchCreate, who: Writer, conn: UoW) -> Response:
    """Each transfer carries its own `idempotency_key`; either every transfer is written or none is."""
    done = await Ledger(conn, who.name).transfer_batch([(t.idempotency_key, t.to_request()) for t in body.transfers])
    for t in done:
        metrics.TRANSFERS.labels(kind=t.kind, replayed=str(t.replayed).lower()).inc()
    return _ORJSON({"data": [t.to_dict() for t in done]}, status_code=201)


@router.get("/transfers/{transfer_id}", response_model=TransferOut, summary="A transfer and its status")
async def get_transfer(transfer_id: Id, who: Reader, conn: Conn) -> Response:
    return _ORJSON((await Ledger(conn).get_transfer(transfer_id)).to_dict())


@router.post("/transfers/{transfer_id}/post", response_model=TransferOut, summary="Post a pending transfer")
async def post_transfer(transfer_id: Id, call: Write, body: PostRequest | None = None) -> Response:
    body = body or PostRequest()
    async with call.ledger() as led:
        t = await led.post(transfer_id, call.key, body.effective_at, body.amount)
    return _transfer_response(t, 200)


@router.post("/transfers/{transfer_id}/void", response_model=TransferOut, summary="Void a pending transfer")
async def void_transfer(transfer_id: Id, call: Write, body: VoidRequest | None = None) -> Response:
    body = body or VoidRequest()
    async with call.ledger() as led:
        t = await led.void(transfer_id, call.key, body.reason)
    return _transfer_response(t, 200)


@router.post("/transfers/{transfer_id}/reverse", status_code=201, response_model=TransferOut, summary="Reverse")
async def reverse_transfer(transfer_id: Id, call: Write, body: ReverseRequest | None = None) -> Response:
    """Reverse a posted transfer with a new transfer of opposite postings; a transfer is reversed at most once."""
    body = body or ReverseRequest()
    async with call.ledger() as led:
        t = await led.reverse(transfer_id, call.key, body.description, body.effective_at)
    return _transfer_response(t)


@router.get("/ledger/verify", response_model=VerifyOut, summary="Verify the chain, balances and trial balance")
async def verify(who: Auditor, conn: Conn, request: Request) -> dict[str, Any]:
    """Recompute the sealed chain, every balance from its postings and the trial balance. Read-only: the
    server seals new transfers in the background (`CCT_SEAL_INTERVAL_SECONDS`)."""
    async with request.app.state.database.connection() as helper:
        report = await audit.verify(conn, helper)
    metrics.VERIFY_PROBLEMS.set(len(report.problems))
    return report.to_dict()


@router.post("/ledger/seal", summary="Seal committed transfers into the audit chain now")
async def seal(who: Admin, conn: Conn) -> dict[str, Any]:
    result = await audit.seal(conn)
    metrics.SEALED_TRANSFERS.inc(result.transfers)
    return {"blocks": result.blocks, "transfers": result.transfers, "head": result.head}


@router.post("/ledger/periods", status_code=201, summary="Close an accounting period")
async def close_period(body: PeriodClose, who: Admin, conn: Conn) -> dict[str, Any]:
    """Postings with an effective time in [starts_at, ends_at) are refused from now on (admin only).

    Answers the period as recorded, as `GET /v1/ledger/periods` lists it."""
    return _period(await Ledger(conn, who.name).close_period(body.name, body.starts_at, body.ends_at))


@router.get("/ledger/periods", summary="Closed accounting periods")
async def periods(who: Reader, conn: Conn, pagination: Paging) -> dict[str, Any]:
    """Closed periods in the order of their start, paginated."""
    rows, cursor = await Ledger(conn).closed_periods(limit=pagination.limit, cursor=pagination.cursor)
    return page([_period(r) for r in rows], cursor)


def _period(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
