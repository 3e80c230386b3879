"""Request and response bodies of the ledger routes. Amounts are strict integers of minor units."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from ledger.models import MAX_POSTINGS, AccountSpec, NormalBalance, PostingSpec, TransferRequest

Code = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$",
        examples=["household:000123:savings"],
        description="Account code: letters, digits and _ . : @ -",
    ),
]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["PEN"], description="ISO 4217 code.")]
Minor = Annotated[StrictInt, Field(gt=0, lt=2**62, description="Integer minor units (céntimos): 20000 = S/ 200.00")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountCreate(Strict):
    code: Code
    currency: Currency
    normal_balance: Literal["debit", "credit"]
    no_overdraft: StrictBool = False
    hot: StrictBool = Field(default=False, description="Touched by most transfers (a program fund): locked last.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_spec(self) -> AccountSpec:
        return AccountSpec(
            self.code, self.currency, NormalBalance(self.normal_balance), self.no_overdraft, self.hot, self.metadata
        )


class BalanceOut(BaseModel):
    posted: int
    pending_debits: int
    pending_credits: int
    available: int
    currency: str
    version: int


class AccountOut(BaseModel):
    id: int
    code: str
    currency: str
    normal_balance: Literal["debit", "credit"]
    no_overdraft: bool
    closed: bool
    hot: bool
    metadata: dict[str, Any]
    balance: BalanceOut
    created_at: str


class PostingIn(Strict):
    account: Code
    debit: Minor | None = None
    credit: Minor | None = None

    @model_validator(mode="after")
    def one_side(self) -> PostingIn:
        if (self.debit is None) == (self.credit is None):
            raise ValueError("each posting has exactly one of debit or credit")
        return self

    def to_spec(self) -> PostingSpec:
        return PostingSpec(self.account, debit=self.debit or 0, credit=self.credit or 0)


class TransferCreate(Strict):
    postings: Annotated[list[PostingIn], Field(min_length=2, max_length=MAX_POSTINGS)]
    currency: Currency
    pending: StrictBool = False
    expires_at: AwareDatetime | None = Field(default=None, description="Pending transfers only: voided after.")
    effective_at: AwareDatetime | None = Field(default=None, description="Business time (default: now).")
    description: Annotated[str, Field(max_length=1000)] = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_request(self) -> TransferRequest:
        return TransferRequest(
            tuple(p.to_spec() for p in self.postings),
            self.currency,
            self.pending,
            self.expires_at,
            self.effective_at,
            self.description,
            self.metadata,
        )


class BatchItem(TransferCreate):
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)]


class BatchCreate(Strict):
    transfers: Annotated[list[BatchItem], Field(min_length=1, max_length=10_000)]


class PostRequest(Strict):
    amount: Annotated[StrictInt, Field(ge=0, lt=2**62)] | None = Field(
        default=None, description="Post only this much of a two-posting hold; the rest is released."
    )
    effective_at: AwareDatetime | None = None


class VoidRequest(Strict):
    reason: Annotated[str, Field(max_length=200)] | None = None


class ReverseRequest(Strict):
    description: Annotated[str, Field(max_length=1000)] = ""
    effective_at: AwareDatetime | None = None


class TransferOut(BaseModel):
    id: int
    kind: Literal["transfer", "pending", "post", "void"]
    status: str = Field(description="posted | pending | voided | expired (post and void for status events)")
    currency: str
    postings: list[dict[str, Any]]
    effective_at: str
    created_at: str
    expires_at: str | None
    description: str
    metadata: dict[str, Any]
    actor: str
    pending_id: int | None
    reverses_id: int | None
    resolved_by: int | None
    reversed_by: int | None
    posted_amount: int | None


class StatementLineOut(BaseModel):
    version: int
    transfer_id: int
    phase: Literal["posted", "hold", "commit", "release"]
    debit: int
    credit: int
    balance_after: int
    pending_debits_after: int
    pending_credits_after: int
    recorded_at: str
    effective_at: str
    description: str


class PeriodClose(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    starts_at: AwareDatetime
    ends_at: AwareDatetime


class VerifyOut(BaseModel):
    ok: bool
    problems: list[dict[str, Any]]
    transfers: int
    sealed: int
    blocks: int
    head: str | None
