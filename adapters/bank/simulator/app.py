"""The simulated Banco de la Nación over HTTP: the bank interface under ``/v1``, controls under ``/sim``.

``create_app`` builds a FastAPI application usable over a socket (``cct-ledger bank-sim``) or in-process
(``httpx.AsyncClient(transport=httpx.ASGITransport(app=app))``). The OpenAPI document it serves at
``/openapi.json`` is the interface's (a copy is kept in ``docs/bank-openapi.json``). Every refusal is the
interface's error envelope, never a stack trace.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import structlog
from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.bank import wire
from adapters.bank.schemas import (
    AccountSearch,
    BulkAccounts,
    BulkAccountsResult,
    ClockAdvance,
    ErrorEnvelope,
    FaultsChange,
    FundingDeposit,
    SimClockState,
    WebhookConfig,
    validation_error,
)
from adapters.bank.simulator import queries
from adapters.bank.simulator.core import SimConfig, SimError
from adapters.bank.simulator.faults import Fault, FaultProfile, get_profile
from adapters.bank.simulator.households import BehaviourModel
from adapters.bank.simulator.runtime import DEFAULT_AUTO_ADVANCE_SECONDS, Simulator
from adapters.bank.simulator.store import FileStore, MemoryStore, Store
from adapters.bank.simulator.webhooks import WebhookReceiver
from services.ports.bank import (
    Account,
    Batch,
    BatchStatus,
    CreditBatch,
    FundingAccount,
    ItemResult,
    ItemStatus,
    LineType,
    OpenAccount,
    Page,
    StatementLine,
    WebhookEvent,
)

log = structlog.get_logger()

REQUEST_ID_KEY = "bank.request_id"
JSON = "application/json"

DESCRIPTION = """\
The interface cct-ledger expects from Banco de la Nación (BN), served by its simulated bank.

Conventions: JSON bodies; amounts are integers in céntimos (S/ 200.00 is `20000`; a float is refused);
ids carry a type prefix (`acct_`, `bat_`, `itm_`, `sln_`, `evt_`, `hld_`); lists are pages with `has_more`
and `next_cursor`; every `POST` under `/v1` needs an `Idempotency-Key` header; errors are
`{"error": {"type", "code", "message", "param", "request_id"}}`; 429 answers carry `Retry-After`.
Authentication: `Authorization: Bearer <api key>`.

Routes under `/sim` are **simulator-only controls**, not part of the bank interface.
See `docs/bank-api.md` for the full description.
"""

TAGS = [
    {"name": "accounts", "description": "Households' savings accounts."},
    {"name": "funding", "description": "The program's funding account."},
    {"name": "credit batches", "description": "Credits to households' accounts, in batches of up to 1,000."},
    {"name": "statements", "description": "Statement lines of any account, the program's included."},
    {"name": "events", "description": "Events also delivered as signed webhooks."},
    {"name": "simulator", "description": "**Simulator-only controls**: not part of the bank interface."},
]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in {
        400: "Malformed request (bad JSON, missing Idempotency-Key, bad cursor)",
        401: "Missing or wrong API key",
        404: "No such object",
        409: "Conflict with the bank's state (idempotency key reused, duplicate batch, funds...)",
        422: "A field is invalid (which one is in `param`); control totals mismatch",
        429: "Rate limited; see Retry-After",
        500: "Bank error; the request may have been applied: retry with the same Idempotency-Key",
        503: "Bank unavailable; the request was not applied",
    }.items()
}

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="A key derived by the caller from stable facts; a retry reuses it with the same body.",
    ),
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (1 to 1000).")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


# --- errors ---------------------------------------------------------------------------------------------


def error_response(
    request_id: str | None,
    status: int,
    type_: str,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error answer in the interface's envelope."""
    body = {"error": {"type": type_, "code": code, "message": message, "param": param, "request_id": request_id}}
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def _request_id(request: Request) -> str | None:
    value = request.scope.get(REQUEST_ID_KEY)
    return value if isinstance(value, str) else None


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    status, code, message, param = validation_error(list(exc.errors()))
    return error_response(_request_id(request), status, "invalid_request_error", code, message, param)


async def _sim_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SimError)
    return error_response(_request_id(request), exc.status, exc.type, exc.code, exc.message, exc.param)


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_response(
            _request_id(request),
            404,
            "invalid_request_error",
            "route_missing",
            f"no route {request.url.path}",
        )
    if exc.status_code == 405:
        return error_response(
            _request_id(request),
            405,
            "invalid_request_error",
            "method_not_allowed",
            f"{request.method} is not allowed here",
        )
    return error_response(_request_id(request), exc.status_code, "invalid_request_error", "http_error", str(exc.detail))


async def _unexpected_handler(request: Request, exc: Exception) -> Response:
    # A plain traceback, without the values of local variables (they may hold personal data).
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log.error("bank_sim.unexpected_error", path=request.url.path, error=type(exc).__name__, traceback=trace)
    return error_response(
        _request_id(request), 500, "api_error", "internal_error", "the bank failed to process the request"
    )


# --- middleware: request ids, authentication, transport faults ------------------------------------------


class BankMiddleware:
    """Gives every request an id, checks the API key on ``/v1`` and injects the profile's transport faults."""

    def __init__(self, app: ASGIApp, simulator: Simulator) -> None:
        self.app = app
        self.sim = simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sim = self.sim
        request_id = sim.next_request_id()
        scope[REQUEST_ID_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("Request-Id", request_id)
            await send(message)

        path: str = scope["path"]
        if not path.startswith("/v1/"):
            await self.app(scope, receive, send_with_id)
            return
        headers = Headers(scope=scope)
        authorization = headers.get("authorization", "")
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        if not token or (sim.api_key and not hmac.compare_digest(token.encode(), sim.api_key.encode())):
            response = error_response(
                request_id,
                401,
                "authentication_error",
                "api_key_invalid",
                "send Authorization: Bearer <api key>",
            )
            await response(scope, receive, send_with_id)
            return
        method: str = scope["method"]
        # A search is a POST only to keep personal data out of URLs: for faults it is a read.
        kind = "POST" if method == "POST" and not path.endswith("/search") else "GET"
        detail = headers.get("idempotency-key", "") if kind == "POST" else scope["query_string"].decode()
        identity = f"{path}?{detail}"
        decision = sim.faults.decide(sim.bank.seed, kind, identity, sim.sighting(f"{method} {identity}"))
        if decision.latency_seconds > 0:
            await asyncio.sleep(decision.latency_seconds)
        fault = decision.fault
        if fault is Fault.NONE:
            await self.app(scope, receive, send_with_id)
            return
        sim.count_fault(fault.value)
        if fault is Fault.UNAVAILABLE:
            response = error_response(
                request_id,
                503,
                "api_error",
                "service_unavailable",
                "the bank is unavailable; the request was not applied",
            )
        elif fault is Fault.INTERNAL_ERROR:
            response = error_response(
                request_id, 500, "api_error", "internal_error", "the bank failed to process the request"
            )
        elif fault is Fault.RATE_LIMITED:
            response = error_response(
                request_id,
                429,
                "rate_limit_error",
                "rate_limited",
                "too many requests; retry after the delay in Retry-After",
                headers={"Retry-After": str(sim.faults.retry_after_seconds)},
            )
        else:
            messages: list[Message] = []

            async def capture(message: Message) -> None:
                messages.append(message)

            await self.app(scope, receive, capture)  # the bank applies the request...
            if fault is Fault.ERROR_AFTER_APPLY:
                response = error_response(
                    request_id,
                    502,
                    "api_error",
                    "bad_gateway",
                    "upstream failure; the request may have been applied",
                )
            else:
                await asyncio.sleep(sim.faults.hang_seconds)  # ...and answers after the client gave up
                for message in messages:
                    await send_with_id(message)
                return
        await response(scope, receive, send_with_id)


# --- request bodies ---------------------------------------------------------------------------------------

B = TypeVar("B", bound=BaseModel)
BODY_MODELS: tuple[type[BaseModel], ...] = (
    OpenAccount,
    AccountSearch,
    CreditBatch,
    BulkAccounts,
    FundingDeposit,
    ClockAdvance,
    WebhookConfig,
    FaultsChange,
)


async def parse_body(request: Request, model: type[B]) -> B:
    """Validate the raw JSON body in one pass (pydantic-core parses and validates together).

    Errors become a ``RequestValidationError`` located under ``body``, rendered like any other.
    """
    return validate_body(await request.body(), model)


def validate_body(raw: bytes, model: type[B]) -> B:
    """:func:`parse_body` on a body already read."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes, tags=TAGS
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in BODY_MODELS:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components.setdefault(model.__name__, model_schema)
        schema["components"]["schemas"] = dict(sorted(components.items()))
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    return build


# --- routes ---------------------------------------------------------------------------------------------


def _canonical(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def _fingerprint(op: str, payload: Any, canonical: bytes | None = None) -> str:
    """The idempotency fingerprint of a request: its operation and its canonical JSON (``canonical`` if given)."""
    return hashlib.sha256(op.encode() + b"\0" + (canonical or _canonical(payload))).hexdigest()


def _json(status: int, body: bytes, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _page(data: dict[str, Any]) -> Response:
    return Response(orjson.dumps(data), media_type=JSON)


def _bank_routes(sim: Simulator) -> APIRouter:
    router = APIRouter(prefix="/v1", responses=ERRORS)

    async def run(cmd: dict[str, Any]) -> Response:
        status, body, replayed = sim.execute(cmd)
        await sim.after_change()
        return _json(status, body, replayed)

    @router.post(
        "/accounts",
        status_code=201,
        response_model=Account,
        tags=["accounts"],
        summary="Open an account",
        openapi_extra=body_doc(OpenAccount),
    )
    async def open_account(request: Request, idempotency_key: IdempotencyKey) -> Response:
        """Open a savings account for a titular (one open account per DNI)."""
        body = await parse_body(request, OpenAccount)
        payload = {"dni": body.dni, "name": body.name, "ubigeo": body.ubigeo}
        return await run(
            {
                "op": "open_account",
                "key": idempotency_key,
                "fingerprint": _fingerprint("open_account", payload),
                **payload,
            }
        )

    @router.post(
        "/accounts/search",
        response_model=Page[Account],
        tags=["accounts"],
        summary="Find an account (a read: no Idempotency-Key)",
        openapi_extra=body_doc(AccountSearch),
    )
    async def find_accounts(request: Request) -> Response:
        """Find the open account of a DNI, or the account with an account number or CCI."""
        body = await parse_body(request, AccountSearch)
        bank = sim.bank
        if body.dni is not None:
            seq = bank.dni_index.get(int(body.dni), -1)
        else:
            seq = bank.resolve_account(body.account_number, body.cci)
        return _page(queries._page([bank.account_json(seq)] if seq > 0 else [], False))

    @router.get("/accounts/{account_id}", response_model=Account, tags=["accounts"], summary="Get an account")
    async def get_account(account_id: Annotated[str, PathParam(description="`acct_...`")]) -> Response:
        """One account by id."""
        return _json(200, orjson.dumps(sim.bank.account_json(sim.bank.account_seq(account_id))))

    @router.post("/accounts/{account_id}/close", response_model=Account, tags=["accounts"], summary="Close an account")
    async def close_account(account_id: str, idempotency_key: IdempotencyKey) -> Response:
        """Close an account; a positive balance is paid out at the branch first."""
        seq = sim.bank.account_seq(account_id)
        return await run(
            {
                "op": "close_account",
                "key": idempotency_key,
                "fingerprint": _fingerprint("close_account", account_id),
                "account": seq,
            }
        )

    @router.get(
        "/accounts/{account_id}/statement_lines",
        response_model=Page[StatementLine],
        tags=["statements"],
        summary="One account's statement (the funding account's too)",
    )
    async def account_statement(
        account_id: str,
        from_date: date | None = None,
        to_date: date | None = None,
        type: LineType | None = None,
        cursor: Cursor = None,
        limit: Limit = 100,
    ) -> Response:
        """One account's statement lines, oldest first."""
        seq = sim.bank.account_seq(account_id, allow_funding=True)
        return _page(
            queries.statement_lines(sim.bank, seq, from_date, to_date, type.value if type else None, cursor, limit)
        )

    @router.get(
        "/statement_lines",
        response_model=Page[StatementLine],
        tags=["statements"],
        summary="Every account's statement lines (the daily statement file)",
    )
    async def all_statement_lines(
        account_id: str | None = None,
        from_date: date | None = None,
        to_date: date | None = None,
        type: LineType | None = None,
        cursor: Cursor = None,
        limit: Limit = 100,
    ) -> Response:
        """Every account's statement lines in posting order (the daily statement file)."""
        seq = sim.bank.account_seq(account_id, allow_funding=True) if account_id else None
        return _page(
            queries.statement_lines(sim.bank, seq, from_date, to_date, type.value if type else None, cursor, limit)
        )

    @router.get("/funding_account", response_model=FundingAccount, tags=["funding"], summary="The funding account")
    async def funding_account() -> Response:
        """The program's funding account: balance, held, available and holds."""
        return _json(200, orjson.dumps(sim.bank.funding_json()))

    @router.post(
        "/credit_batches",
        status_code=201,
        response_model=Batch,
        tags=["credit batches"],
        summary="Submit a batch",
        openapi_extra=body_doc(CreditBatch),
    )
    async def submit_batch(request: Request, idempotency_key: IdempotencyKey) -> Response:
        """Submit a credit batch of up to 1,000 items with its control totals."""
        raw = await request.body()
        with wire.paused_gc():
            payload = wire.credit_batch_payload(raw)  # the plain form, checked a field at a time
            if payload is None:  # another form, or an error: the model normalises it or says exactly what is wrong
                body = validate_body(raw, CreditBatch)
                payload = {
                    "reference": body.reference,
                    "description": body.description,
                    "control_count": body.control_count,
                    "control_amount": body.control_amount,
                    "items": [(i.reference, i.dni, i.amount, i.account_number, i.cci) for i in body.items],
                }
            # The body is serialised once: for its fingerprint, and as it is in the journal's line.
            canonical = _canonical(payload)
            fingerprint = _fingerprint("submit_batch", payload, canonical)
            cmd = {"op": "submit_batch", "key": idempotency_key, "fingerprint": fingerprint, "body": payload}
            encoded = orjson.dumps({**cmd, "body": orjson.Fragment(canonical)})
            status, answer, replayed = sim.execute(cmd, encoded)
        await sim.after_change()
        return _json(status, answer, replayed)

    @router.get("/credit_batches", response_model=Page[Batch], tags=["credit batches"], summary="List or find batches")
    async def list_batches(
        reference: Annotated[str | None, Query(description="Our reference: the page has 0 or 1 batch.")] = None,
        status: Annotated[
            BatchStatus | None,
            Query(description="Only batches in this state (`settled`: which batches can be read back)."),
        ] = None,
        cursor: Cursor = None,
        limit: Limit = 100,
    ) -> Response:
        """Batches in submission order, or the batch with our reference (0 or 1); `status` filters."""
        if reference is not None or status is not None:
            sim.auto_advance(sim.bank.batch_by_ref.get(reference) if reference is not None else None)
            await sim.after_change()
        return _page(queries.batches(sim.bank, reference, cursor, limit, status.value if status else None))

    @router.get("/credit_batches/{batch_id}", response_model=Batch, tags=["credit batches"], summary="Get a batch")
    async def get_batch(batch_id: str) -> Response:
        """One batch and its counters."""
        seq = sim.bank.batch_seq(batch_id)
        sim.auto_advance(seq)
        await sim.after_change()
        return _json(200, orjson.dumps(sim.bank.batch_json(seq)))

    @router.get(
        "/credit_batches/{batch_id}/items",
        response_model=Page[ItemResult],
        tags=["credit batches"],
        summary="A batch's items and their results",
    )
    async def batch_items(
        batch_id: str, status: ItemStatus | None = None, cursor: Cursor = None, limit: Limit = 100
    ) -> Response:
        """A batch's items and their results, in submission order."""
        seq = sim.bank.batch_seq(batch_id)
        page = queries.batch_items(sim.bank, seq, status.value if status else None, cursor, limit)
        return Response(page, media_type=JSON)

    @router.get("/credit_items/{item_id}", response_model=ItemResult, tags=["credit batches"], summary="Get an item")
    async def get_item(item_id: str) -> Response:
        """One batch item and its result."""
        return _json(200, orjson.dumps(sim.bank.item_json(sim.bank.item_seq(item_id))))

    @router.get("/events", response_model=Page[WebhookEvent], tags=["events"], summary="List events")
    async def list_events(cursor: Cursor = None, limit: Limit = 100) -> Response:
        """Events (also delivered as signed webhooks), oldest first."""
        return _page(queries.events(sim.bank, cursor, limit))

    return router


def _sim_routes(sim: Simulator) -> APIRouter:
    router = APIRouter(
        prefix="/sim", tags=["simulator"], responses={k: v for k, v in ERRORS.items() if k in (400, 409, 422)}
    )

    @router.get("/clock", response_model=SimClockState, summary="The simulated clock")
    async def clock() -> Response:
        """The simulated clock."""
        return _json(200, orjson.dumps(sim.bank.clock_json()))

    @router.post(
        "/clock/advance",
        response_model=SimClockState,
        summary="Advance the simulated clock",
        openapi_extra=body_doc(ClockAdvance),
    )
    async def advance(request: Request) -> Response:
        """Advance the simulated clock; settlements and household moves that come due run in time order."""
        body = await parse_body(request, ClockAdvance)
        bank = sim.bank
        if body.until is not None:
            target = bank.clock.seconds_until(body.until)
            if target < bank.now:
                raise SimError(409, "invalid_request_error", "clock_backwards", "the clock only moves forward", "until")
        else:
            target = bank.now + body.total_seconds()
        result = sim.advance_to(target)
        await sim.after_change()
        return _json(200, orjson.dumps(result))

    @router.post(
        "/accounts/bulk",
        response_model=BulkAccountsResult,
        summary="Open many accounts at once",
        openapi_extra=body_doc(BulkAccounts),
    )
    async def bulk_accounts(request: Request) -> Response:
        """Open up to 50,000 accounts; a DNI with an open account gets it back."""
        raw = await request.body()
        with wire.paused_gc():
            rows = wire.bulk_account_rows(raw)
            if rows is None:
                rows = [(a.dni, a.name, a.ubigeo) for a in validate_body(raw, BulkAccounts).accounts]
            status, data, _ = sim.execute({"op": "bulk_accounts", "rows": rows})
        return _json(status, data)

    @router.post(
        "/funding/deposits",
        response_model=FundingAccount,
        summary="Deposit into the funding account",
        openapi_extra=body_doc(FundingDeposit),
    )
    async def deposit(request: Request) -> Response:
        """Deposit into the program's funding account."""
        body = await parse_body(request, FundingDeposit)
        status, data, _ = sim.execute({"op": "deposit_funding", "amount": body.amount, "reference": body.reference})
        return _json(status, data)

    @router.post("/webhooks/config", summary="Set the webhook URL and secret", openapi_extra=body_doc(WebhookConfig))
    async def webhook_config(request: Request) -> dict[str, Any]:
        """Set where webhooks go and the secret that signs them."""
        body = await parse_body(request, WebhookConfig)
        sim.webhooks.configure(body.url, body.secret)
        return {"url": body.url, "secret_set": bool(sim.webhooks.secret)}

    @router.post("/webhooks/flush", summary="Deliver pending webhooks now")
    async def webhook_flush() -> dict[str, Any]:
        """Deliver pending webhooks now."""
        return {"delivered": await sim.webhooks.flush()}

    @router.post("/faults", summary="Switch the fault profile", openapi_extra=body_doc(FaultsChange))
    async def faults(request: Request) -> dict[str, Any]:
        """Switch the fault profile (its settlement part is journaled)."""
        body = await parse_body(request, FaultsChange)
        sim.set_faults(get_profile(body.profile))
        return {"profile": sim.faults.name}

    @router.get("/stats", summary="Counters: accounts, items by status, faults injected, conflicts...")
    async def stats() -> Response:
        """Counters for tests and operators."""
        data = sim.bank.stats_json()
        data["faults_profile"] = sim.faults.name
        return _json(200, orjson.dumps(data))

    @router.get("/savings", summary="What households keep in their accounts (savers, average balance)")
    async def savings(monthly_transfer: int = 100_00) -> Response:
        """Savings of the accounts that received program credits, overall and near/far from a pay point."""
        return _json(200, orjson.dumps(sim.bank.savings_json(monthly_transfer)))

    @router.post("/snapshot", summary="Write a snapshot of the state now (file store)")
    async def snapshot() -> dict[str, Any]:
        """Write a snapshot of the state now (file store)."""
        sim.snapshot()
        return {"snapshot": True}

    return router


def create_app(
    store: Store | None = None,
    seed: int | None = None,
    faults: str | FaultProfile = "none",
    *,
    state_dir: Path | None = None,
    api_key: str = "",
    webhook_target: str | WebhookReceiver | None = None,
    webhook_secret: str = "",
    item_amount_limit: int | None = None,
    start: datetime | None = None,
    behaviour: BehaviourModel | None = None,
    auto_advance_seconds: int = DEFAULT_AUTO_ADVANCE_SECONDS,
    wall_clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build the simulated bank's application.

    Args:
        store: where state lives; default a :class:`FileStore` on ``state_dir`` when given, else memory.
        seed: the world's seed (None: the stored seed, or 0 for a new world).
        faults: ``none``, ``flaky``, ``hostile`` or a custom :class:`FaultProfile`.
        state_dir: a state folder (shortcut for ``store=FileStore(state_dir)``).
        api_key: the bearer token to require; empty accepts any non-empty token.
        webhook_target: a URL or an in-process receiver for signed event deliveries.
        webhook_secret: the HMAC secret for webhook signatures.
        item_amount_limit: per-item amount limit in céntimos (new worlds; default S/ 5,000.00).
        start: the simulated clock's first instant (new worlds).
        behaviour: the household behaviour model (new worlds).
        auto_advance_seconds: the most simulated seconds a batch lookup advances the clock, towards the next
            settlement due (0 disables).
        wall_clock: unix time for webhook signature timestamps.

    Returns:
        The FastAPI app; ``app.state.simulator`` is the :class:`Simulator`.
    """
    if store is None:
        store = FileStore(state_dir) if state_dir is not None else MemoryStore()
    profile = get_profile(faults)
    config: SimConfig | None = None
    stored = store.stored_config()
    if stored is None or seed is not None or item_amount_limit is not None or start is not None:
        base = stored or SimConfig()
        config = SimConfig(
            seed=seed if seed is not None else base.seed,
            start=start or base.start,
            item_amount_limit=item_amount_limit if item_amount_limit is not None else base.item_amount_limit,
            program_name=base.program_name,
            behaviour=behaviour or base.behaviour,
        )
    sim = Simulator(
        store,
        config,
        profile,
        api_key=api_key,
        auto_advance_seconds=auto_advance_seconds,
        webhook_target=webhook_target,
        webhook_secret=webhook_secret,
        wall_clock=wall_clock,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await sim.aclose()

    app = FastAPI(
        title="Banco de la Nación interface (simulated)",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.simulator = sim
    app.include_router(_bank_routes(sim))
    app.include_router(_sim_routes(sim))
    app.add_exception_handler(SimError, _sim_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
    app.add_middleware(BankMiddleware, simulator=sim)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app


def get_simulator(app: FastAPI) -> Simulator:
    """The :class:`Simulator` behind an app made by :func:`create_app`."""
    sim = app.state.simulator
    assert isinstance(sim, Simulator)
    return sim
