"""Response bodies of the registry routes (requests are CSV files and query parameters)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class HouseholdOut(BaseModel):
    """A household (DNI and CCI masked unless revealed)."""

    household_id: str
    titular_dni: str = Field(description="Masked (last two digits) unless reveal=true.")
    titular_name: str
    ubigeo: str
    cci: str | None = Field(description="Masked unless reveal=true; null: no usable bank account yet.")
    status: str
    enrolled_on: str
    children_under_4: int
    upper_secondary_students: int
    program: str
    extra: dict[str, Any]
    version: int
    updated_at: str
    import_id: int | None


class HistoryOut(BaseModel):
    """One version of a household."""

    version: int
    import_id: int | None
    changed_at: str
    data: dict[str, Any]


class PaymentOut(BaseModel):
    """One payment of the household (one per run that included it)."""

    run: int
    program: str
    period: str = Field(description="The run's period.")
    periods: list[str] = Field(description="The periods the payment carries (arrears included).")
    currency: str
    amount: int = Field(description="Minor units.")
    status: str = Field(description="snapshotted (not settled yet), credited or rejected.")
    reason: str | None = Field(description="The bank's reason for a rejection.")
    ledger_transfer_id: int | None = Field(description="The ledger transfer that credited it.")
    settled_at: str | None


class AccruedOut(BaseModel):
    """An entitlement not paid yet (no usable account, or a rejected payment): paid in the next run that can."""

    program: str
    period: str
    currency: str
    amount: int = Field(description="Minor units.")


class HouseholdDetailOut(HouseholdOut):
    """A household with its history, compliance records, payments (newest run first) and what it is owed."""

    history: list[HistoryOut]
    compliance: list[dict[str, Any]]
    payments: list[PaymentOut]
    accrued: list[AccruedOut]


class RowErrorOut(BaseModel):
    """One problem in one row of an imported file."""

    line: int = Field(description="Line in the file (the header is line 1).")
    column: str
    reason: str
    household_id: str | None


class ImportOut(BaseModel):
    """What an import did."""

    kind: str
    import_id: int | None = Field(description="null when the file changed nothing (nothing is recorded).")
    file_name: str
    sha256: str
    program: str | None
    period: str | None
    rows: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    changed: bool
    previous_import: int | None = Field(description="An earlier import of a file with the same bytes.")
    errors: list[RowErrorOut] = Field(description="Rejected rows (skip_invalid=true), at most 1,000.")
    errors_total: int
    warnings: list[str] = Field(
        default_factory=list, description="What was imported but deserves a look (e.g. another bank's CCI)."
    )


class RevealOut(BaseModel):
    """One disclosure of a household's DNI and CCI unmasked."""

    id: int
    household_id: str
    actor: str = Field(description="Who was shown them: the token's user, or the CLI's user.")
    channel: str = Field(description="api or cli.")
    reason: str | None = Field(description="Why, as the caller said (optional).")
    revealed_at: str
