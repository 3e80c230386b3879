"""The project's error base and the ledger's named conditions.

Every failure a user can cause is an :class:`AppError` subclass with a stable ``type`` slug, a ``kind``
(which the HTTP layer maps to a status code) and a human ``detail``. The ledger defines the base because it
is the innermost ring: services and adapters subclass it, and one handler renders them all.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar


class ErrorKind(enum.Enum):
    """What sort of failure an error is; the HTTP layer maps each kind to one status code."""

    INVALID = "invalid"  # the request is malformed or breaks a rule of form (422)
    NOT_FOUND = "not_found"  # a named thing does not exist (404)
    CONFLICT = "conflict"  # the request is well formed but the state forbids it (409)
    UNAUTHENTICATED = "unauthenticated"  # 401
    FORBIDDEN = "forbidden"  # 403
    UNAVAILABLE = "unavailable"  # a dependency is down; retry later (503)


class AppError(Exception):
    """Base of every error a user or caller can cause.

    Attributes:
        type: stable slug, rendered as ``https://cct-ledger.dev/problems/<type>``.
        title: short, constant summary of the condition.
        kind: the :class:`ErrorKind`.
        detail: what exactly went wrong and, where possible, how to fix it.
        extra: machine-readable fields (account code, row number, ...).
    """

    type: ClassVar[str] = "error"
    title: ClassVar[str] = "Error"
    kind: ClassVar[ErrorKind] = ErrorKind.INVALID

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidCursor(AppError):
    """A pagination cursor that is not one of the list's own (:mod:`ledger.cursors`)."""

    type = "invalid-cursor"
    title = "Invalid cursor"


class LedgerError(AppError):
    """Base of the ledger engine's conditions."""

    type = "ledger-error"
    title = "Ledger error"


class InvalidTransfer(LedgerError):
    """The transfer is malformed: unbalanced, non-integer or non-positive amounts, too few postings."""

    type = "invalid-transfer"
    title = "Invalid transfer"


class InvalidAccount(LedgerError):
    """The account definition is malformed."""

    type = "invalid-account"
    title = "Invalid account"


class AccountNotFound(LedgerError):
    type = "account-not-found"
    title = "Account not found"
    kind = ErrorKind.NOT_FOUND


class AccountExists(LedgerError):
    type = "account-exists"
    title = "Account already exists"
    kind = ErrorKind.CONFLICT


class AccountClosed(LedgerError):
    type = "account-closed"
    title = "Account closed"
    kind = ErrorKind.CONFLICT


class CurrencyMismatch(LedgerError):
    type = "currency-mismatch"
    title = "Currency mismatch"
    kind = ErrorKind.INVALID


class InsufficientFunds(LedgerError):
    type = "insufficient-funds"
    title = "Insufficient funds"
    kind = ErrorKind.CONFLICT


class TransferNotFound(LedgerError):
    type = "transfer-not-found"
    title = "Transfer not found"
    kind = ErrorKind.NOT_FOUND


class TransferNotPending(LedgerError):
    """Post or void of a transfer that is not (or no longer) pending."""

    type = "transfer-not-pending"
    title = "Transfer is not pending"
    kind = ErrorKind.CONFLICT


class TransferExpired(LedgerError):
    type = "transfer-expired"
    title = "Pending transfer expired"
    kind = ErrorKind.CONFLICT


class TransferNotReversible(LedgerError):
    """Reversal of a transfer that is not posted, or was already reversed."""

    type = "transfer-not-reversible"
    title = "Transfer cannot be reversed"
    kind = ErrorKind.CONFLICT


class PeriodClosed(LedgerError):
    type = "period-closed"
    title = "Accounting period closed"
    kind = ErrorKind.CONFLICT


class IdempotencyConflict(LedgerError):
    """The idempotency key was used before with a different request."""

    type = "idempotency-key-reused"
    title = "Idempotency key reused with a different request"
    kind = ErrorKind.CONFLICT
