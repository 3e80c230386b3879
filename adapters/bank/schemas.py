"""Wire-only models of the bank interface: the error envelope and the simulator's control requests.

The bank's objects and request bodies live in ``services.ports.bank`` (the port and the wire share them);
this module adds what only the HTTP layer needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, model_validator

from services.ports.bank import CCI, DNI, AccountNumber, OpenAccount, PositiveCents, Reference

MAX_BULK_ACCOUNTS = 50_000


class ErrorBody(BaseModel):
    """What went wrong: ``type`` is the family, ``code`` the precise condition, ``param`` the field."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["invalid_request_error", "idempotency_error", "authentication_error", "rate_limit_error", "api_error"]
    code: str
    message: str
    param: str | None = None
    request_id: str | None = None


class ErrorEnvelope(BaseModel):
    """Every error answer of the interface: ``{"error": {...}}``."""

    model_config = ConfigDict(extra="ignore")

    error: ErrorBody


def _param(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(error: Mapping[str, Any]) -> str:
    value = error.get("input")
    if error.get("type") == "int_type" and isinstance(value, float | bool):
        return f"must be an integer (amounts are whole céntimos), got {orjson.dumps(value).decode()}"
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def validation_error(errors: Sequence[Mapping[str, Any]]) -> tuple[int, str, str, str | None]:
    """(status, code, message, param) of the error envelope for pydantic/FastAPI validation errors.

    The first error is reported, located (``items[3].amount``, ``Idempotency-Key``, ``limit``); a float
    where céntimos are expected gets its own message.
    """
    first: Mapping[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = tuple(first.get("loc", ()))
    source = loc[0] if loc else "body"
    param = _param(loc[1:]) or None
    kind = first.get("type", "")
    if kind in ("json_invalid", "json_type"):
        return 400, "invalid_json", "the body is not valid JSON", None
    if source == "header" and param == "Idempotency-Key" and kind == "missing":
        return 400, "idempotency_key_missing", "every POST needs an Idempotency-Key header", "Idempotency-Key"
    if kind == "missing" and source == "body" and param is None:
        return 400, "parameter_missing", "a JSON body is required", None
    code = "parameter_missing" if kind == "missing" else "parameter_invalid"
    message = f"{param}: {_message(first)}" if param else _message(first)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return 422, code, message, param


class _Control(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Whole = Annotated[int, Strict(), Field(ge=0)]


class ClockAdvance(_Control):
    """Move the simulated clock forward by a duration (the parts are added) or to an instant."""

    seconds: Whole = 0
    minutes: Whole = 0
    hours: Whole = 0
    days: Whole = 0
    until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ClockAdvance:
        duration = self.seconds or self.minutes or self.hours or self.days
        if self.until is not None and duration:
            raise ValueError("give either a duration (seconds, minutes, hours, days) or until, not both")
        if self.until is None and not duration:
            raise ValueError("give a positive duration (seconds, minutes, hours or days) or until")
        return self

    def total_seconds(self) -> int:
        """The duration in seconds."""
        return self.seconds + 60 * self.minutes + 3600 * self.hours + 86400 * self.days


class SimClockState(BaseModel):
    """The simulated clock: now, seconds since the start, pending settlements and household moves."""

    now: datetime
    seconds: int
    pending_settlements: int
    pending_household_moves: int


class BulkAccounts(_Control):
    """Open many accounts in one request (seeding a simulated world)."""

    accounts: Annotated[list[OpenAccount], Field(min_length=1, max_length=MAX_BULK_ACCOUNTS)]


class BulkAccountResult(BaseModel):
    """One opened (or existing) account of a bulk request, in request order."""

    dni: str
    account_id: str
    account_number: str
    cci: str
    created: bool


class BulkAccountsResult(BaseModel):
    """The answer to a bulk account opening."""

    object: Literal["list"] = "list"
    data: list[BulkAccountResult]
    has_more: bool = False
    next_cursor: str | None = None


class OpenedAccount(NamedTuple):
    """One row of a bulk opening (:class:`BulkAccountResult`), as ``SimControl.seed_accounts`` returns it.

    A named tuple rather than a model: seeding a world makes a million of them, and a tuple is cheaper to
    make and is one object for the garbage collector to walk, where a model is two.
    """

    dni: str
    account_id: str
    account_number: str
    cci: str
    created: bool


class FundingDeposit(_Control):
    """Money paid into the program's funding account (e.g. the treasury's transfer for a round)."""

    amount: PositiveCents
    reference: Reference | None = None


class WebhookConfig(_Control):
    """Where webhooks go; ``url`` null stops deliveries."""

    url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    secret: Annotated[str, Field(min_length=8)] | None = None


class AccountSearch(_Control):
    """Find an account by exactly one of: the titular's DNI (the open account), account number, CCI.

    A POST, so that personal data stays out of URLs and access logs; it changes nothing and needs no
    Idempotency-Key.
    """

    dni: DNI | None = None
    account_number: AccountNumber | None = None
    cci: CCI | None = None

    @model_validator(mode="after")
    def _one_criterion(self) -> AccountSearch:
        if sum(value is not None for value in (self.dni, self.account_number, self.cci)) != 1:
            raise ValueError("give exactly one of dni, account_number, cci")
        return self


class FaultsChange(_Control):
    """Switch the simulator's fault profile."""

    profile: Literal["none", "flaky", "hostile"]
