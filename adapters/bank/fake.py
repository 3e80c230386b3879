"""A small in-memory fake of the bank interface, as an httpx request handler, for unit tests.

Mount it with respx (``respx_mock.route(host=...).mock(side_effect=FakeBank())``) or with
``httpx.MockTransport(FakeBank())``. It speaks the same JSON as the simulated bank, validates requests with
the same models and supports the same control routes used by tests (``/sim/clock/advance`` settles every
pending batch at once, ``/sim/funding/deposits``, ``/sim/accounts/bulk``, ``/sim/webhooks/flush``), without
faults, households or persistence. The contract suite (``tests/adapters/bank``) runs against both this fake
and the simulator, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from adapters.bank.schemas import (
    AccountSearch,
    BulkAccounts,
    ClockAdvance,
    FundingDeposit,
    WebhookConfig,
    validation_error,
)
from adapters.bank.simulator.clock import DEFAULT_START
from adapters.bank.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header
from services.identifiers import BN_BANK_CODE, make_cci
from services.ports.bank import CreditBatch, OpenAccount

M = TypeVar("M", bound=BaseModel)
Receiver = Callable[[Mapping[str, str], bytes], Awaitable[int]]
_OFFICE = "150"


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None, type_: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.type = type_ or "invalid_request_error"


class FakeBank:
    """The bank interface in a few dictionaries.

    Args:
        item_amount_limit: per-item limit in céntimos (items above it are rejected ``amount_limit``).
        webhook_receiver: an async callable given (headers, body) of each signed event delivery.
        webhook_secret: the HMAC secret for the deliveries.
        wall_clock: unix time for signature timestamps.
    """

    def __init__(
        self,
        *,
        item_amount_limit: int = 5_000_00,
        webhook_receiver: Receiver | None = None,
        webhook_secret: str = "",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.item_amount_limit = item_amount_limit
        self.webhook_receiver = webhook_receiver
        self.webhook_secret = webhook_secret
        self.wall_clock = wall_clock
        self.now = DEFAULT_START
        self.requests: list[httpx.Request] = []
        self._ids = itertools.count(1)
        self.accounts: dict[str, dict[str, Any]] = {}
        self.open_by_dni: dict[str, str] = {}
        self.funding: dict[str, Any] = self._new_account("", "Programa Juntos", "150101", funding=True)
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_by_ref: dict[str, str] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.credited_refs: set[str] = set()
        self.lines: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.undelivered: list[dict[str, Any]] = []
        self.idempotency: dict[str, tuple[str, int, bytes]] = {}

    def transport(self) -> httpx.MockTransport:
        """An httpx transport serving this fake (no respx needed)."""
        return httpx.MockTransport(self)

    # --- plumbing ----------------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}fake{next(self._ids):06x}"

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        request_id = self._id("req_")
        try:
            status, body, headers = await self._route(request)
        except _Refusal as exc:
            envelope = {"type": exc.type, "code": exc.code, "message": exc.message, "param": exc.param}
            status, body, headers = exc.status, {"error": {**envelope, "request_id": request_id}}, {}
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {"Content-Type": "application/json", "Request-Id": request_id, **headers}
        return httpx.Response(status, content=content, headers=headers)

    @staticmethod
    def _parse(request: httpx.Request, model: type[M]) -> M:
        try:
            return model.model_validate_json(request.content)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            status, code, message, param = validation_error(errors)
            raise _Refusal(status, code, message, param) from None

    async def _route(self, request: httpx.Request) -> tuple[int, Any, dict[str, str]]:
        path = request.url.path
        method = request.method
        query = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        if path.startswith("/sim/"):
            return await self._control(method, path, request)
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            raise _Refusal(401, "api_key_invalid", "send Authorization: Bearer <api key>", type_="authentication_error")
        parts = path.strip("/").split("/")[1:]
        if method == "POST" and parts == ["accounts", "search"]:
            search = self._parse(request, AccountSearch)
            matches = [a for a in self.accounts.values() if a["status"] == "open" and self._matches(a, search)]
            return 200, self._page([self._account_json(a) for a in matches], None, 1000), {}
        if method == "POST":
            key = request.headers.get("Idempotency-Key")
            if not key:
                raise _Refusal(400, "idempotency_key_missing", "every POST needs an Idempotency-Key", "Idempotency-Key")
            fingerprint = hashlib.sha256(path.encode() + b"\0" + request.content).hexdigest()
            if key in self.idempotency:
                stored_fp, status, body = self.idempotency[key]
                if stored_fp != fingerprint:
                    raise _Refusal(
                        409,
                        "idempotency_key_reused",
                        "key used with another request",
                        type_="idempotency_error",
                    )
                return status, body, {"Idempotent-Replayed": "true"}
            status, result = self._post(parts, request)
            body = orjson.dumps(result)
            self.idempotency[key] = (fingerprint, status, body)
            return status, body, {}
        if method == "GET":
            return 200, self._get(parts, query), {}
        raise _Refusal(405, "method_not_allowed", f"{method} is not allowed here")

    # --- bank interface ----------------------------------------------------------------------------------

    def _post(self, parts: list[str], request: httpx.Request) -> tuple[int, dict[str, Any]]:
        if parts == ["accounts"]:
            body = self._parse(request, OpenAccount)
            if body.dni in self.open_by_dni:
                raise _Refusal(409, "account_exists", "the titular already has an open account", "dni")
            return 201, self._account_json(self._new_account(body.dni, body.name, body.ubigeo))
        if len(parts) == 3 and parts[0] == "accounts" and parts[2] == "close":
            account = self._account(parts[1])
            if account["status"] == "closed":
                raise _Refusal(409, "account_closed", "the account is already closed")
            if account["balance"] > 0:
                self._line(account, "withdrawal_branch", -account["balance"])
            account.update(status="closed", closed_at=self.now.isoformat())
            del self.open_by_dni[account["dni"]]
            return 200, self._account_json(account)
        if parts == ["credit_batches"]:
            return 201, self._submit(self._parse(request, CreditBatch))
        raise _Refusal(404, "route_missing", "no such route")

    def _submit(self, batch: CreditBatch) -> dict[str, Any]:
        total = sum(item.amount for item in batch.items)
        if batch.control_count != len(batch.items) or batch.control_amount != total:
            raise _Refusal(422, "control_totals_mismatch", "control totals do not match the items", "control_amount")
        for i, item in enumerate(batch.items):
            if item.cci is not None and item.cci[:3] != BN_BANK_CODE:
                raise _Refusal(422, "parameter_invalid", "not a Banco de la Nación CCI", f"items[{i}].cci")
        if batch.reference in self.batch_by_ref:
            raise _Refusal(409, "batch_reference_exists", "a batch with this reference exists", "reference")
        if total > self._available():
            raise _Refusal(409, "insufficient_funds", "the funding account does not cover the batch")
        batch_id = self._id("bat_")
        items = []
        for item in batch.items:
            item_id = self._id("itm_")
            number = item.account_number or (item.cci or "")[6:18]
            self.items[item_id] = {
                "id": item_id,
                "object": "credit_item",
                "batch_id": batch_id,
                "reference": item.reference,
                "account_id": next((a["id"] for a in self.accounts.values() if a["account_number"] == number), None),
                "amount": item.amount,
                "status": "pending",
                "reason": None,
                "settled_at": None,
                "statement_line_id": None,
                "_dni": item.dni,
                "_cci_office": item.cci[3:6] if item.cci else None,
            }
            items.append(item_id)
        self.batches[batch_id] = {
            "id": batch_id,
            "reference": batch.reference,
            "description": batch.description,
            "items": items,
            "control_amount": total,
            "hold": total,
            "created_at": self.now.isoformat(),
            "settled_at": None,
        }
        self.batch_by_ref[batch.reference] = batch_id
        return self._batch_json(self.batches[batch_id])

    def _get(self, parts: list[str], query: dict[str, str]) -> dict[str, Any]:
        limit = self._limit(query)
        cursor = query.get("cursor")
        if len(parts) == 2 and parts[0] == "accounts":
            return self._account_json(self._account(parts[1]))
        if len(parts) == 3 and parts[0] == "accounts" and parts[2] == "statement_lines":
            account = self.funding if parts[1] == self.funding["id"] else self._account(parts[1])
            lines = [x for x in self.lines if x["account_id"] == account["id"]]
            return self._page(self._dated(lines, query), cursor, limit)
        if parts == ["statement_lines"]:
            return self._page(self._dated(self.lines, query), cursor, limit)
        if parts == ["funding_account"]:
            return self._funding_json()
        if parts == ["credit_batches"]:
            status = query.get("status")
            if status is not None and status not in ("received", "processing", "settled"):
                raise _Refusal(422, "parameter_invalid", "status: must be received, processing or settled", "status")
            listed = [self._batch_json(b) for b in self.batches.values()]
            if cursor is not None:  # the cursor is the last batch seen, whatever its state now
                ids = [b["id"] for b in listed]
                if cursor not in ids:
                    raise _Refusal(400, "parameter_invalid", "unknown cursor", "cursor")
                listed = listed[ids.index(cursor) + 1 :]
            found = [
                b
                for b in listed
                if b["reference"] == query.get("reference", b["reference"]) and b["status"] == (status or b["status"])
            ]
            return self._page(found, None, limit)
        if len(parts) == 2 and parts[0] == "credit_batches":
            return self._batch_json(self._batch(parts[1]))
        if len(parts) == 3 and parts[0] == "credit_batches" and parts[2] == "items":
            items = [self._item_json(self.items[i]) for i in self._batch(parts[1])["items"]]
            if "status" in query:
                items = [i for i in items if i["status"] == query["status"]]
            return self._page(items, cursor, limit)
        if len(parts) == 2 and parts[0] == "credit_items":
            if parts[1] not in self.items:
                raise _Refusal(404, "resource_missing", f"no such credit item: {parts[1]}")
            return self._item_json(self.items[parts[1]])
        if parts == ["events"]:
            return self._page(self.events, cursor, limit)
        raise _Refusal(404, "route_missing", "no such route")

    # --- simulator-style controls ------------------------------------------------------------------------

    async def _control(self, method: str, path: str, request: httpx.Request) -> tuple[int, Any, dict[str, str]]:
        if path == "/sim/clock/advance" and method == "POST":
            advance = self._parse(request, ClockAdvance)
            self.now = advance.until or self.now + timedelta(seconds=advance.total_seconds())
            for batch in self.batches.values():
                if batch["settled_at"] is None:
                    self._settle(batch)
            await self.flush()
            return (
                200,
                {
                    "now": self.now.isoformat(),
                    "seconds": 0,
                    "pending_settlements": 0,
                    "pending_household_moves": 0,
                },
                {},
            )
        if path == "/sim/funding/deposits" and method == "POST":
            deposit = self._parse(request, FundingDeposit)
            self._line(self.funding, "deposit", deposit.amount, reference=deposit.reference)
            return 200, self._funding_json(), {}
        if path == "/sim/accounts/bulk" and method == "POST":
            rows = []
            for a in self._parse(request, BulkAccounts).accounts:
                existing = self.open_by_dni.get(a.dni)
                account = self.accounts[existing] if existing else self._new_account(a.dni, a.name, a.ubigeo)
                rows.append(
                    {
                        "dni": a.dni,
                        "account_id": account["id"],
                        "account_number": account["account_number"],
                        "cci": account["cci"],
                        "created": existing is None,
                    }
                )
            return 200, {"object": "list", "data": rows, "has_more": False, "next_cursor": None}, {}
        if path == "/sim/webhooks/config" and method == "POST":
            config = self._parse(request, WebhookConfig)
            self.webhook_secret = config.secret or self.webhook_secret
            return 200, {"url": config.url, "secret_set": bool(self.webhook_secret)}, {}
        if path == "/sim/webhooks/flush" and method == "POST":
            return 200, {"delivered": await self.flush()}, {}
        raise _Refusal(404, "route_missing", "no such control route")

    def _settle(self, batch: dict[str, Any]) -> None:
        credited = 0
        for item_id in batch["items"]:
            item = self.items[item_id]
            account = self.accounts.get(item["account_id"] or "")
            if account is not None and item["_cci_office"] not in (None, account["office"]):
                account = None
            if account is None:
                reason = "account_not_found"
            elif account["status"] == "closed":
                reason = "account_closed"
            elif item["_dni"] != account["dni"]:
                reason = "dni_mismatch"
            elif item["amount"] > self.item_amount_limit:
                reason = "amount_limit"
            elif item["reference"] in self.credited_refs:
                reason = "duplicate_reference"
            else:
                reason = None
            item["settled_at"] = self.now.isoformat()
            if reason is None:
                item["status"] = "credited"
                self.credited_refs.add(item["reference"])
                assert account is not None
                item["statement_line_id"] = self._line(
                    account, "program_credit", item["amount"], reference=item["reference"]
                )["id"]
                credited += item["amount"]
            else:
                item.update(status="rejected", reason=reason)
        if credited:
            self._line(self.funding, "program_debit", -credited, reference=batch["reference"])
        batch.update(hold=0, settled_at=self.now.isoformat())
        items = [self._item_json(self.items[i]) for i in batch["items"]]
        for event_type, event_items in (("credit_items.settled", items), ("batch.settled", [])):
            event = {
                "id": self._id("evt_"),
                "object": "event",
                "type": event_type,
                "created_at": self.now.isoformat(),
                "data": {"batch": self._batch_json(batch), "items": event_items},
            }
            self.events.append(event)
            self.undelivered.append(event)

    async def flush(self) -> int:
        """Deliver the undelivered events to the receiver; return how many were accepted."""
        if self.webhook_receiver is None or not self.webhook_secret:
            return 0
        delivered = 0
        for event in list(self.undelivered):
            body = orjson.dumps(event)
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature_header(self.webhook_secret, int(self.wall_clock()), body),
                EVENT_ID_HEADER: event["id"],
            }
            if 200 <= await self.webhook_receiver(headers, body) < 300:
                self.undelivered.remove(event)
                delivered += 1
        return delivered

    # --- state -----------------------------------------------------------------------------------------

    def _new_account(self, dni: str, name: str, ubigeo: str, *, funding: bool = False) -> dict[str, Any]:
        n = len(self.accounts) + 1
        number = f"{'00' if funding else '04'}{_OFFICE}{n:07d}"
        account: dict[str, Any] = {
            "id": self._id("acct_"),
            "object": "account",
            "account_number": number,
            "cci": make_cci(BN_BANK_CODE, _OFFICE, number),
            "office": _OFFICE,
            "dni": dni,
            "name": name,
            "ubigeo": ubigeo,
            "status": "open",
            "balance": 0,
            "opened_at": self.now.isoformat(),
            "closed_at": None,
        }
        if not funding:
            self.accounts[account["id"]] = account
            self.open_by_dni[dni] = account["id"]
        return account

    def _account(self, account_id: str) -> dict[str, Any]:
        account = self.accounts.get(account_id)
        if account is None:
            raise _Refusal(404, "resource_missing", f"no such account: {account_id}")
        return account

    def _batch(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise _Refusal(404, "resource_missing", f"no such credit batch: {batch_id}")
        return batch

    @staticmethod
    def _matches(account: dict[str, Any], search: AccountSearch) -> bool:
        if search.dni is not None:
            return bool(account["dni"] == search.dni)
        if search.cci is not None:
            return bool(account["cci"] == search.cci)
        return bool(account["account_number"] == search.account_number)

    def _available(self) -> int:
        held: int = sum(b["hold"] for b in self.batches.values())
        return int(self.funding["balance"]) - held

    def _line(
        self, account: dict[str, Any], line_type: str, amount: int, *, reference: str | None = None
    ) -> dict[str, Any]:
        account["balance"] += amount
        line = {
            "id": self._id("sln_"),
            "object": "statement_line",
            "account_id": account["id"],
            "value_date": self.now.date().isoformat(),
            "posted_at": self.now.isoformat(),
            "type": line_type,
            "amount": amount,
            "balance_after": account["balance"],
            "reference": reference,
            "reverses": None,
        }
        self.lines.append(line)
        return line

    @staticmethod
    def _dated(lines: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
        low = date.fromisoformat(query["from_date"]) if "from_date" in query else date.min
        high = date.fromisoformat(query["to_date"]) if "to_date" in query else date.max
        return [x for x in lines if low <= date.fromisoformat(x["value_date"]) <= high]

    @staticmethod
    def _limit(query: dict[str, str]) -> int:
        text = query.get("limit", "100")
        if not text.isdigit() or not 1 <= int(text) <= 1000:
            raise _Refusal(422, "parameter_invalid", "limit: must be from 1 to 1000", "limit")
        return int(text)

    @staticmethod
    def _page(objects: list[dict[str, Any]], cursor: str | None, limit: int) -> dict[str, Any]:
        start = 0
        if cursor is not None:
            ids = [o["id"] for o in objects]
            if cursor not in ids:
                raise _Refusal(400, "parameter_invalid", "unknown cursor", "cursor")
            start = ids.index(cursor) + 1
        data = objects[start : start + limit]
        has_more = start + limit < len(objects)
        return {
            "object": "list",
            "data": data,
            "has_more": has_more,
            "next_cursor": data[-1]["id"] if has_more else None,
        }

    @staticmethod
    def _account_json(account: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in account.items() if k != "office"}

    def _funding_json(self) -> dict[str, Any]:
        holds = [
            {
                "id": "hld_" + b["id"][4:],
                "batch_id": b["id"],
                "amount": b["hold"],
                "created_at": b["created_at"],
            }
            for b in self.batches.values()
            if b["hold"]
        ]
        held = sum(h["amount"] for h in holds)
        f = self.funding
        return {
            "id": f["id"],
            "object": "funding_account",
            "account_number": f["account_number"],
            "cci": f["cci"],
            "name": f["name"],
            "balance": f["balance"],
            "held": held,
            "available": f["balance"] - held,
            "holds": holds,
        }

    def _batch_json(self, batch: dict[str, Any]) -> dict[str, Any]:
        items = [self.items[i] for i in batch["items"]]
        credited = [i for i in items if i["status"] == "credited"]
        rejected = [i for i in items if i["status"] == "rejected"]
        pending = len(items) - len(credited) - len(rejected)
        return {
            "id": batch["id"],
            "object": "credit_batch",
            "reference": batch["reference"],
            "status": "settled" if pending == 0 else ("received" if pending == len(items) else "processing"),
            "description": batch["description"],
            "item_count": len(items),
            "control_amount": batch["control_amount"],
            "credited_count": len(credited),
            "credited_amount": sum(i["amount"] for i in credited),
            "rejected_count": len(rejected),
            "rejected_amount": sum(i["amount"] for i in rejected),
            "pending_count": pending,
            "created_at": batch["created_at"],
            "settled_at": batch["settled_at"],
        }

    @staticmethod
    def _item_json(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if not k.startswith("_")}
