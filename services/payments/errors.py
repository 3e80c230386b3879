"""The payment runs' named conditions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.errors import AppError, ErrorKind


def show_hint(run_id: int) -> str:
    """Where to look at a run, for the CLI's and the API's users alike."""
    return f"`cct-ledger runs show {run_id}` (GET /v1/payment-runs/{run_id})"


def resume_hint(run_id: int) -> str:
    """How to continue a run's execution."""
    return f"`cct-ledger runs resume {run_id}` (POST /v1/payment-runs/{run_id}/execute)"


class PaymentError(AppError):
    type = "payment-error"
    title = "Payment run error"


class RunNotFound(PaymentError):
    type = "run-not-found"
    title = "Payment run not found"
    kind = ErrorKind.NOT_FOUND


class RunExists(PaymentError):
    type = "run-exists"
    title = "A run for this program and period exists"
    kind = ErrorKind.CONFLICT


class RunStateError(PaymentError):
    """The run is not in a state that allows this step (e.g. executing an unapproved run)."""

    type = "run-state"
    title = "Payment run is not in the right state"
    kind = ErrorKind.CONFLICT


class RunNotApproved(RunStateError):
    type = "run-not-approved"
    title = "Payment run not approved"


def still_creating(run: Mapping[str, Any]) -> RunStateError:
    """The error for a run still ``creating``: it cannot be approved or executed yet."""
    return RunStateError(
        f"run {run['id']} is still being created (by another session, or its creation was interrupted); finish "
        f"it with `cct-ledger runs create --program {run['program']} --period {run['period']}` (or POST "
        f"/v1/payment-runs again), which resumes it",
        run=run["id"],
    )


class MakerChecker(PaymentError):
    """The approver is the person who created the run."""

    type = "maker-checker"
    title = "A run must be approved by someone other than its maker"
    kind = ErrorKind.FORBIDDEN


class RunNotFunded(PaymentError):
    """The program's fund cannot cover the run."""

    type = "run-not-funded"
    title = "The program's fund cannot cover the run"
    kind = ErrorKind.CONFLICT


class BankNotConfigured(PaymentError):
    type = "bank-not-configured"
    title = "No bank configured"
    kind = ErrorKind.UNAVAILABLE


class RunBusy(PaymentError):
    """Another process is executing the run right now."""

    type = "run-busy"
    title = "Run is being executed elsewhere"
    kind = ErrorKind.CONFLICT


class RunIncident(PaymentError):
    """The bank reported something that contradicts our records; the batch is held for a person to look at."""

    type = "run-incident"
    title = "Payment run incident"
    kind = ErrorKind.CONFLICT
