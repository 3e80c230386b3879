"""Request and response bodies of the programs routes. Amounts are strict integers of minor units."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class Strict(BaseModel):
    """A request body that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid")


class AppropriationCreate(Strict):
    """An appropriation to a program's fund."""

    amount: Annotated[
        StrictInt, Field(gt=0, lt=2**62, description="Integer minor units (céntimos): 15000000000 = S/ 150,000,000.00")
    ]
    reference: Annotated[
        str,
        Field(
            min_length=1,
            max_length=100,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_./:-]*$",
            examples=["RM-045-2026-MIDIS"],
            description="The budget document's reference; an appropriation is recorded once per reference.",
        ),
    ]


class AppropriationOut(BaseModel):
    """A recorded appropriation."""

    program: str
    reference: str
    amount: int
    currency: str
    transfer_id: int
    replayed: bool = Field(description="True when this reference was recorded before with the same amount.")
    fund_balance: int


class ProgramOut(BaseModel):
    """A program."""

    code: str
    name: str
    currency: str
    schedule: str
    fund_account: str
    in_transit_account: str


class RuleVersionOut(BaseModel):
    """One rule version of a program, as loaded."""

    version: int
    effective_from: str
    rules: dict[str, Any]
    loaded_by: str
    loaded_at: str


class BalanceOut(BaseModel):
    """An account's balances (minor units)."""

    posted: int
    pending_debits: int
    pending_credits: int
    available: int
    currency: str
    version: int


class ProgramDetailOut(ProgramOut):
    """A program with its rule versions, balances and appropriations."""

    current_period: str
    version_in_force: int | None
    rule_versions: list[RuleVersionOut]
    fund_balance: BalanceOut | None
    in_transit_balance: BalanceOut | None
    appropriations: dict[str, int]


class EntitlementSummaryOut(BaseModel):
    """A period's entitlements, counted per status."""

    program: str
    period: str
    starts_on: str
    ends_on: str
    rule_version: int
    currency: str
    groups: dict[str, dict[str, int]] = Field(
        description="Households and amount per status: payable, inactive, not_started, ended, suspended."
    )
    payable_households: int
    payable_amount: int
