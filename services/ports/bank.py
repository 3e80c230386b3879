"""The bank port: what cct-ledger needs from Banco de la Nación, as a ``typing.Protocol``.

Payment runs and reconciliation depend on :class:`BankPort` only; ``adapters.bank.client.BankClient``
implements it over HTTP, and the simulated bank serves the same interface. The models below are also the
wire format of the interface (``docs/bank-api.md``): the client parses responses into them and the
simulator validates requests with them, so the two cannot disagree on a field.

Money is always an ``int`` of céntimos: amount fields are strict, so a float or a bool is refused at every
edge (a client call, a simulator request body) instead of being rounded.

Failures are named conditions under :class:`BankError`:

- :class:`BankRetryableError`: nothing was applied; the same call may be retried later.
- :class:`BankAmbiguousError`: the request may have been applied (a timeout or dropped connection after it
  was sent). Do not resend blindly: look the object up (:meth:`BankPort.get_batch_by_reference`) and resend
  only if the bank never saw it, with the same idempotency key and the same content
  (:func:`submit_or_recover` does exactly that).
- :class:`BankPermanentError`: the request will not succeed as it is (refused, not found, conflict).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Final, Generic, Literal, Protocol, TypeVar, runtime_checkable

import orjson
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from ledger.errors import AppError, ErrorKind
from services.identifiers import InvalidIdentifier, normalize_cci, normalize_dni, normalize_ubigeo

MAX_BATCH_ITEMS = 1000
"""Most items a credit batch may carry."""

# --- Field types ---------------------------------------------------------------------------------------

Cents = Annotated[int, Strict()]
"""An amount in céntimos (signed where the field says so); floats and bools are refused."""
PositiveCents = Annotated[int, Strict(), Field(gt=0)]
Count = Annotated[int, Strict(), Field(ge=0)]
REFERENCE_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,63}"
"""What our references are made of (a regular expression, unanchored): 1 to 64 characters, a letter or digit
first."""
Reference = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=rf"^{REFERENCE_PATTERN}$",
        description="Our reference: 1 to 64 characters, letters, digits and _ . : / -, unique per object.",
    ),
]


def _identifier(normalize: Callable[[object], str], fast_length: int) -> Any:
    def validate(value: object) -> str:
        # The common case without the library's cleaning; a CCI's check digits are always verified.
        if type(value) is str and len(value) == fast_length != 20 and value.isdigit() and value.isascii():
            return value
        try:
            return normalize(value)
        except InvalidIdentifier as exc:
            raise ValueError(exc.reason) from None

    return BeforeValidator(validate, json_schema_input_type=str)


DNI = Annotated[str, _identifier(normalize_dni, 8), Field(description="8-digit DNI (a check character is accepted)")]
CCI = Annotated[str, _identifier(normalize_cci, 20), Field(description="20-digit interbank account code")]
Ubigeo = Annotated[str, _identifier(normalize_ubigeo, 0), Field(description="6-digit INEI district code")]
AccountNumber = Annotated[str, Field(pattern=r"^[0-9]{12}$", description="12-digit account number")]
TitularName = Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[^\x00-\x1f\x7f]+$")]
"""An account holder's name: 1 to 120 characters, no control characters."""


class _Model(BaseModel):
    """A bank object as received: immutable; unknown fields from a newer bank are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class _Request(BaseModel):
    """A request body: immutable; unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- Enumerations --------------------------------------------------------------------------------------


class AccountStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class BatchStatus(enum.StrEnum):
    """``received``: acknowledged, funds held; ``processing``: some items settled; ``settled``: all final."""

    RECEIVED = "received"
    PROCESSING = "processing"
    SETTLED = "settled"


class ItemStatus(enum.StrEnum):
    """An item is ``pending`` until it settles, once, as ``credited`` or ``rejected``."""

    PENDING = "pending"
    CREDITED = "credited"
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        return self is not ItemStatus.PENDING


class RejectReason(enum.StrEnum):
    """Why the bank rejected an item. Only ``processing_error`` may succeed if sent again in a new batch."""

    ACCOUNT_CLOSED = "account_closed"
    ACCOUNT_NOT_FOUND = "account_not_found"
    DNI_MISMATCH = "dni_mismatch"
    AMOUNT_LIMIT = "amount_limit"
    DUPLICATE_REFERENCE = "duplicate_reference"
    PROCESSING_ERROR = "processing_error"

    @property
    def retryable(self) -> bool:
        return self is RejectReason.PROCESSING_ERROR


class LineType(enum.StrEnum):
    """Statement line types; the sign of a line's amount is + for money in, - for money out."""

    PROGRAM_CREDIT = "program_credit"  # a credit batch item paid into a household account (+)
    PROGRAM_DEBIT = "program_debit"  # the funding account's side of settled items, one line per settlement (-)
    WITHDRAWAL_AGENT = "withdrawal_agent"  # cash out at a correspondent agent (Multired) (-)
    WITHDRAWAL_ATM = "withdrawal_atm"  # (-)
    WITHDRAWAL_BRANCH = "withdrawal_branch"  # at a branch window, including the payout when closing (-)
    DEPOSIT = "deposit"  # cash in (+)
    FEE = "fee"  # (-)
    REVERSAL = "reversal"  # undoes an earlier line (``reverses`` names it), opposite sign


class EventType(enum.StrEnum):
    CREDIT_ITEMS_SETTLED = "credit_items.settled"  # some items of a batch reached a final state
    BATCH_SETTLED = "batch.settled"  # every item of the batch is final


# --- Requests ------------------------------------------------------------------------------------------


class OpenAccount(_Request):
    """Open a savings account for a titular."""

    dni: DNI
    name: TitularName
    ubigeo: Ubigeo


class BatchItem(_Request):
    """One credit to a household account; give exactly one of ``account_number`` and ``cci``."""

    reference: Reference
    dni: DNI
    amount: PositiveCents
    account_number: AccountNumber | None = None
    cci: CCI | None = None

    @model_validator(mode="after")
    def _one_target(self) -> BatchItem:
        if (self.account_number is None) == (self.cci is None):
            raise ValueError("give exactly one of account_number and cci")
        return self


class CreditBatch(_Request):
    """A credit batch with its control totals; a batch whose totals do not match its items is refused."""

    reference: Reference
    control_count: Annotated[int, Strict(), Field(ge=1, le=MAX_BATCH_ITEMS)]
    control_amount: PositiveCents
    items: Annotated[list[BatchItem], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]
    description: Annotated[str, Field(max_length=140)] | None = None

    @classmethod
    def build(cls, reference: str, items: Sequence[BatchItem], description: str | None = None) -> CreditBatch:
        """A batch whose control totals are computed from its items."""
        return cls(
            reference=reference,
            control_count=len(items),
            control_amount=sum(item.amount for item in items),
            items=list(items),
            description=description,
        )


CREDIT_ITEM_BY_CCI: Final = '{"reference":%s,"dni":%s,"amount":%s,"account_number":null,"cci":%s}'
"""A batch item given by CCI as JSON, as a PostgreSQL ``format()`` template: its reference, DNI and CCI as JSON
strings (``to_json(text)``: quoted, and escaped where they need it), its amount as digits. For the plain texts
a payment snapshot holds, the bytes ``CreditBatch.model_dump_json`` writes for the item (a test checks it)."""


@dataclass(frozen=True, slots=True)
class RenderedCreditBatch:
    """A credit batch whose items were rendered as JSON where they are kept, e.g. by PostgreSQL from a payment
    snapshot (with :data:`CREDIT_ITEM_BY_CCI`), in the read that counts and sums them.

    A payment run sends a million items. Read as rows, each item is a record decoded, a tuple made and a JSON
    object written by this process (2.5 to 2.9 ms a batch of 1,000); rendered by the database in the same
    read, it is one text (0.24 ms; the database's part about 1 ms, docs/performance.md). Nothing is validated
    here: the bank validates what it receives, as for any batch, and a resend carries the same text.

    Attributes:
        items_json: the items, each a JSON object as :class:`BatchItem` writes it, joined by commas (the
            ``items`` array without its brackets).
    """

    reference: str
    control_count: int
    control_amount: int
    items_json: str
    description: str | None = None

    def to_json(self) -> bytes:
        """The request body: the batch's fields around its rendered items, in ``CreditBatch``'s order."""
        reference, description = orjson.dumps(self.reference).decode(), orjson.dumps(self.description).decode()
        return (
            f'{{"reference":{reference},"control_count":{int(self.control_count)},'
            f'"control_amount":{int(self.control_amount)},"items":[{self.items_json}],"description":{description}}}'
        ).encode()


OutgoingBatch = CreditBatch | RenderedCreditBatch
"""What ``submit_batch`` sends: a batch of models, or one rendered where its items are kept."""


# --- Bank objects --------------------------------------------------------------------------------------


class Account(_Model):
    id: str
    object: Literal["account"] = "account"
    account_number: str
    cci: str
    dni: str
    name: str
    ubigeo: str
    status: AccountStatus
    balance: Cents
    opened_at: AwareDatetime
    closed_at: AwareDatetime | None = None


class Hold(_Model):
    """Funds reserved on the funding account for a batch that is not fully settled."""

    id: str
    batch_id: str
    amount: Cents
    created_at: AwareDatetime


class FundingAccount(_Model):
    """The program's account at the bank: credited items are paid from it."""

    id: str
    object: Literal["funding_account"] = "funding_account"
    account_number: str
    cci: str
    name: str
    balance: Cents
    held: Cents
    available: Cents
    holds: list[Hold]


class Batch(_Model):
    """A credit batch as the bank knows it (also the acknowledgement of a submission)."""

    id: str
    object: Literal["credit_batch"] = "credit_batch"
    reference: str
    status: BatchStatus
    description: str | None = None
    item_count: Count
    control_amount: Cents
    credited_count: Count
    credited_amount: Cents
    rejected_count: Count
    rejected_amount: Cents
    pending_count: Count
    created_at: AwareDatetime
    settled_at: AwareDatetime | None = None


class ItemResult(_Model):
    """One item of a batch and its outcome."""

    id: str
    object: Literal["credit_item"] = "credit_item"
    batch_id: str
    reference: str
    account_id: str | None = None
    amount: Cents
    status: ItemStatus
    reason: RejectReason | None = None
    settled_at: AwareDatetime | None = None
    statement_line_id: str | None = None


ItemOutcome = tuple[str, str, int, str, str | None]
"""A batch item as a reader of many needs it: our reference, the bank's item id, the amount, the status and the
reason (``None`` unless rejected), as plain text: a tuple of strings and numbers, which the cyclic collector
stops tracking, where a model is four objects for it to walk."""


def item_outcome(item: ItemResult) -> ItemOutcome:
    """The :data:`ItemOutcome` of an item."""
    return (item.reference, item.id, item.amount, item.status.value, None if item.reason is None else item.reason.value)


class StatementLine(_Model):
    """A movement on an account, as the bank's statement reports it."""

    id: str
    object: Literal["statement_line"] = "statement_line"
    account_id: str
    value_date: date
    posted_at: AwareDatetime
    type: LineType
    amount: Cents
    balance_after: Cents
    reference: str | None = None
    reverses: str | None = None


class EventData(_Model):
    batch: Batch
    items: list[ItemResult] = Field(default_factory=list)


class WebhookEvent(_Model):
    """A notification the bank sends (signed) to our webhook endpoint; also listed at ``/v1/events``."""

    id: str
    object: Literal["event"] = "event"
    type: EventType
    created_at: AwareDatetime
    data: EventData


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` back to get the next page while ``has_more``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next_cursor: str | None = None


# --- Errors --------------------------------------------------------------------------------------------


class BankError(AppError):
    """Base of the bank's conditions.

    Attributes:
        status: the HTTP status the bank answered, when it answered.
        code: the bank's error code (``control_totals_mismatch``...), when it answered.
        request_id: the bank's request id, for support.
        attempts: how many attempts the client made.
    """

    type = "bank-error"
    title = "Bank error"
    kind = ErrorKind.UNAVAILABLE

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        attempts: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail, status=status, code=code, request_id=request_id, attempts=attempts, **extra)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.attempts = attempts


class BankRetryableError(BankError):
    """The bank did not apply the request (unavailable, overloaded, unreachable); retry later."""

    type = "bank-unavailable"
    title = "Bank unavailable"


class BankUnavailable(BankRetryableError):
    """5xx answers or connection failures until the attempts ran out."""


class BankRateLimited(BankRetryableError):
    """The bank kept answering 429; ``retry_after`` (seconds) is what it last asked for."""

    type = "bank-rate-limited"
    title = "Bank rate limit"

    def __init__(self, detail: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **kwargs)
        self.retry_after = retry_after


class BankAmbiguousError(BankError):
    """The request may have been applied; look the object up before sending it again.

    ``operation`` names the call, ``idempotency_key`` the key used, ``reference`` our reference (if any).
    """

    type = "bank-outcome-unknown"
    title = "Bank outcome unknown"

    def __init__(
        self,
        detail: str,
        *,
        operation: str,
        idempotency_key: str | None = None,
        reference: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detail, operation=operation, idempotency_key=idempotency_key, reference=reference, **kwargs)
        self.operation = operation
        self.idempotency_key = idempotency_key
        self.reference = reference


class BankPermanentError(BankError):
    """The request will not succeed as it is; retrying the same request is pointless."""

    type = "bank-request-failed"
    title = "Bank refused the request"
    kind = ErrorKind.CONFLICT


class BankInvalidRequest(BankPermanentError):
    """The bank found the request malformed (400/422); ``param`` names the field when it said."""

    type = "bank-invalid-request"
    title = "Bank rejected the request as invalid"
    kind = ErrorKind.INVALID


class BankBatchRefused(BankInvalidRequest):
    """The whole batch was refused because its control totals do not match its items."""

    type = "bank-batch-refused"
    title = "Batch refused by the bank"


class BankNotFound(BankPermanentError):
    type = "bank-not-found"
    title = "Not found at the bank"
    kind = ErrorKind.NOT_FOUND


class BankConflict(BankPermanentError):
    """The bank's state forbids the request (409)."""

    type = "bank-conflict"
    title = "Conflict at the bank"


class BankIdempotencyConflict(BankConflict):
    """The idempotency key was already used with a different request."""

    type = "bank-idempotency-key-reused"
    title = "Idempotency key reused with another request"


class BankDuplicateBatch(BankConflict):
    """A batch with this reference exists, sent with another idempotency key."""

    type = "bank-duplicate-batch"
    title = "Batch reference already used"


class BankInsufficientFunds(BankConflict):
    """The funding account's available balance does not cover the batch."""

    type = "bank-insufficient-funds"
    title = "Insufficient funds at the bank"


class BankAuthError(BankPermanentError):
    """The API key was refused (401/403)."""

    type = "bank-auth-failed"
    title = "Bank refused our credentials"
    kind = ErrorKind.UNAVAILABLE


class BankProtocolError(BankPermanentError):
    """The bank's answer does not follow the interface (malformed JSON, missing fields)."""

    type = "bank-protocol-error"
    title = "Unexpected answer from the bank"
    kind = ErrorKind.UNAVAILABLE


class WebhookVerificationError(BankError):
    """A webhook delivery failed verification: bad or missing signature, stale timestamp, bad body."""

    type = "bank-webhook-invalid"
    title = "Invalid bank webhook"
    kind = ErrorKind.UNAUTHENTICATED


# --- The port ------------------------------------------------------------------------------------------


@runtime_checkable
class BankPort(Protocol):
    """What cct-ledger needs from the bank. Every POST takes an idempotency key derived by the caller from
    stable facts (run, batch number), never from the clock; a retry must reuse it with the same content."""

    async def open_account(self, request: OpenAccount, *, idempotency_key: str) -> Account:
        """Open a savings account; :class:`BankConflict` if the titular already has an open one."""
        ...

    async def close_account(self, account_id: str, *, idempotency_key: str) -> Account:
        """Close an account (a positive balance is paid out at the branch first)."""
        ...

    async def get_account(self, account_id: str) -> Account:
        """Look an account up by its bank id (``acct_...``); :class:`BankNotFound` if unknown."""
        ...

    async def find_accounts(
        self, *, dni: str | None = None, account_number: str | None = None, cci: str | None = None
    ) -> list[Account]:
        """Accounts matching exactly one criterion (empty list when none)."""
        ...

    async def get_funding_account(self) -> FundingAccount:
        """The program's funding account: balance, held and available amounts, holds."""
        ...

    async def submit_batch(self, batch: OutgoingBatch, *, idempotency_key: str) -> Batch:
        """Submit a credit batch; the acknowledgement is the batch with its bank id, status ``received``.

        Raises :class:`BankBatchRefused` when control totals do not match, :class:`BankInsufficientFunds`,
        :class:`BankDuplicateBatch`, and :class:`BankAmbiguousError` when the outcome is unknown.
        """
        ...

    async def get_batch(self, batch_id: str) -> Batch:
        """A batch by bank id; :class:`BankNotFound` if unknown."""
        ...

    async def get_batch_by_reference(self, reference: str) -> Batch | None:
        """The batch with our reference, or None if the bank has never seen it."""
        ...

    async def list_batches(
        self, *, status: BatchStatus | None = None, cursor: str | None = None, limit: int = 1000
    ) -> Page[Batch]:
        """One page of batches in submission order; ``status`` keeps those in that state (``settled``: the
        batches whose items can be read back, in one call instead of a lookup per batch)."""
        ...

    def iter_batches(self, *, status: BatchStatus | None = None, page_size: int = 1000) -> AsyncIterator[Batch]:
        """Every batch (in ``status``), following cursors."""
        ...

    async def get_item(self, item_id: str) -> ItemResult:
        """One batch item by bank id (``itm_...``)."""
        ...

    async def list_batch_items(
        self, batch_id: str, *, status: ItemStatus | None = None, cursor: str | None = None, limit: int = 1000
    ) -> Page[ItemResult]:
        """One page of a batch's items, in submission order."""
        ...

    def iter_batch_items(
        self, batch_id: str, *, status: ItemStatus | None = None, page_size: int = 1000
    ) -> AsyncIterator[ItemResult]:
        """Every item of a batch (following cursors)."""
        ...

    def iter_batch_outcomes(self, batch_id: str) -> AsyncIterator[ItemOutcome]:
        """Every item of a batch as :data:`ItemOutcome`: the items :meth:`iter_batch_items` gives, validated
        the same, without a model for each (a payment run reads a million)."""
        ...

    async def list_statement_lines(
        self,
        account_id: str | None = None,
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[StatementLine]:
        """One page of statement lines, oldest first: one account's, or every account's when None."""
        ...

    def iter_statement_lines(
        self,
        account_id: str | None = None,
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        after: str | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[StatementLine]:
        """Every statement line (following cursors); ``after`` resumes after a line id already seen."""
        ...

    async def list_events(self, *, cursor: str | None = None, limit: int = 100) -> Page[WebhookEvent]:
        """Events the bank generated, oldest first (for receivers that missed deliveries)."""
        ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify a webhook delivery's signature and freshness; return its event.

        Raises :class:`WebhookVerificationError`.
        """
        ...


async def submit_or_recover(
    bank: BankPort, batch: OutgoingBatch, *, idempotency_key: str, max_rounds: int = 3
) -> Batch:
    """Submit a batch exactly once, resolving unknown outcomes by looking the batch up by reference.

    On :class:`BankAmbiguousError` the batch is looked up by our reference: if the bank has it, that is the
    answer (after checking it carries the same control totals); if the bank never saw it, the same content
    is sent again with the same key. At most ``max_rounds`` submissions are made.

    Raises:
        BankAmbiguousError: still unknown after ``max_rounds`` (or the lookup itself failed): the caller
            records the batch as "outcome unknown" and resumes later.
        BankConflict: the bank holds a batch with this reference but other totals (an incident).
    """
    last: BankAmbiguousError | None = None
    for _ in range(max_rounds):
        try:
            return await bank.submit_batch(batch, idempotency_key=idempotency_key)
        except BankAmbiguousError as exc:
            last = exc
        try:
            found = await bank.get_batch_by_reference(batch.reference)
        except BankRetryableError as exc:
            raise BankAmbiguousError(
                f"batch {batch.reference}: outcome unknown and the lookup failed ({exc.detail})",
                operation="submit_batch",
                idempotency_key=idempotency_key,
                reference=batch.reference,
            ) from exc
        if found is not None:
            if (found.item_count, found.control_amount) != (batch.control_count, batch.control_amount):
                raise BankConflict(
                    f"batch {batch.reference} exists at the bank with other totals "
                    f"({found.item_count} items, {found.control_amount} céntimos)",
                    reference=batch.reference,
                    batch_id=found.id,
                )
            return found
    assert last is not None
    raise last
