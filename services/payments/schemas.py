"""Request and response bodies of the payment-run routes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program: Annotated[str, Field(min_length=1, max_length=40, examples=["JUNTOS"])]
    period: Annotated[str, Field(min_length=4, max_length=10, examples=["2026-B5"])]
    batch_size: Annotated[StrictInt, Field(ge=1, le=1000)] = 1000


class RunOut(BaseModel):
    id: int
    program: str
    period: str
    status: str
    currency: str
    rule_version: int
    batch_size: int
    payments_count: int
    payments_total: int
    accrued_count: int
    accrued_total: int
    exclusions: dict[str, Any]
    batches_count: int
    created_by: str
    created_at: Any
    approved_by: str | None
    approved_at: Any | None
    executed_by: str | None
    execution_started_at: Any | None
    settled_at: Any | None
    closed_by: str | None
    closed_at: Any | None
    warnings: list[str] = Field(
        default_factory=list, description="Said when the run is created, e.g. no compliance verification imported."
    )
