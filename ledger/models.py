"""The ledger's values: accounts, balances, posting specifications, transfers, statement lines."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ledger.errors import InvalidAccount, InvalidTransfer
from ledger.money import require_currency, require_minor_units

MAX_POSTINGS = 64
MAX_DESCRIPTION = 1_000


class NormalBalance(enum.StrEnum):
    """The side on which an account's balance is positive: assets are debit-normal, funds credit-normal."""

    DEBIT = "debit"
    CREDIT = "credit"

    @property
    def sign(self) -> int:
        return 1 if self is NormalBalance.DEBIT else -1

    @classmethod
    def from_sign(cls, sign: int) -> NormalBalance:
        return cls.DEBIT if sign == 1 else cls.CREDIT


class Phase(enum.IntEnum):
    """What a posting does to its account's balances."""

    POSTED = 0  # moves the posted balance
    HOLD = 1  # adds to the pending balance (pending transfer)
    COMMIT = 2  # pending -> posted (a pending transfer was posted)
    RELEASE = 3  # removes from pending (a pending transfer was voided or expired)


class TransferKind(enum.IntEnum):
    TRANSFER = 0
    PENDING = 1
    POST = 2
    VOID = 3


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balances at one instant.

    ``posted`` is on the account's normal side; ``available`` is ``posted`` minus pending outflows
    (pending credits of a debit-normal account, pending debits of a credit-normal one).
    """

    posted: int
    pending_debits: int
    pending_credits: int
    available: int
    currency: str
    version: int

    @classmethod
    def of(cls, normal: NormalBalance, currency: str, posted: int, pd: int, pc: int, version: int) -> Balance:
        outflow = pc if normal is NormalBalance.DEBIT else pd
        return cls(posted, pd, pc, posted - outflow, currency, version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "posted": self.posted,
            "pending_debits": self.pending_debits,
            "pending_credits": self.pending_credits,
            "available": self.available,
            "currency": self.currency,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Account:
    """An account with its current balances."""

    id: int
    code: str
    currency: str
    normal_balance: NormalBalance
    no_overdraft: bool
    closed: bool
    hot: bool
    metadata: dict[str, Any]
    balance: Balance
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "code": self.code,
            "currency": self.currency,
            "normal_balance": self.normal_balance.value,
            "no_overdraft": self.no_overdraft,
            "closed": self.closed,
            "hot": self.hot,
            "metadata": self.metadata,
            "balance": self.balance.to_dict(),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """What is needed to open an account.

    ``hot`` marks an account most transfers touch (a program fund): writers lock it after every other
    account so its lock is held for the shortest time. It changes nothing else.
    """

    code: str
    currency: str
    normal_balance: NormalBalance
    no_overdraft: bool = False
    hot: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code or len(self.code) > 200:
            raise InvalidAccount("code must be a non-empty string of at most 200 characters", field="code")
        if not (self.code[0].isascii() and self.code[0].isalnum()) or not all(
            c.isascii() and (c.isalnum() or c in "_.:@-") for c in self.code
        ):
            raise InvalidAccount(
                f"code {self.code!r} may hold only letters, digits and _ . : @ - and must start with a letter or digit",
                field="code",
            )
        require_currency(self.currency)
        if not isinstance(self.metadata, dict):
            raise InvalidAccount("metadata must be a JSON object", field="metadata")


@dataclass(frozen=True, slots=True)
class PostingSpec:
    """One leg of a transfer: exactly one of ``debit`` and ``credit`` is a positive integer."""

    account: str
    debit: int = 0
    credit: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.account, str) or not self.account:
            raise InvalidTransfer("each posting needs an account code", field="account")
        for name, value in (("debit", self.debit), ("credit", self.credit)):
            require_minor_units(value, name, positive=False)
            if value < 0:
                raise InvalidTransfer(f"{name} must not be negative, got {value} (minor units)", field=name)
        if (self.debit > 0) == (self.credit > 0):
            raise InvalidTransfer(
                f"posting on {self.account} must have exactly one of debit or credit greater than zero",
                account=self.account,
            )
        require_minor_units(self.debit or self.credit)

    @property
    def signed(self) -> int:
        """Debit positive, credit negative."""
        return self.debit if self.debit else -self.credit


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """A transfer to create: balanced postings in one currency, optionally pending with an expiry."""

    postings: tuple[PostingSpec, ...]
    currency: str
    pending: bool = False
    expires_at: datetime | None = None
    effective_at: datetime | None = None
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_currency(self.currency)
        if len(self.postings) < 2:
            raise InvalidTransfer("a transfer needs at least two postings")
        if len(self.postings) > MAX_POSTINGS:
            raise InvalidTransfer(f"a transfer may have at most {MAX_POSTINGS} postings")
        total = sum(p.signed for p in self.postings)
        if total != 0:
            debits = sum(p.debit for p in self.postings)
            credits = sum(p.credit for p in self.postings)
            raise InvalidTransfer(
                f"postings do not balance: debits {debits} != credits {credits} (minor units)",
                debits=debits,
                credits=credits,
            )
        if self.expires_at is not None and not self.pending:
            raise InvalidTransfer("expires_at applies only to pending transfers", field="expires_at")
        for name in ("expires_at", "effective_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidTransfer(f"{name} must include a time zone offset", field=name)
        if len(self.description) > MAX_DESCRIPTION:
            raise InvalidTransfer(f"description is longer than {MAX_DESCRIPTION} characters")
        if not isinstance(self.metadata, dict):
            raise InvalidTransfer("metadata must be a JSON object", field="metadata")

    def canonical(self) -> dict[str, Any]:
        return {
            "postings": [[p.account, p.signed] for p in self.postings],
            "currency": self.currency,
            "pending": self.pending,
            "expires_at": _ts(self.expires_at),
            "effective_at": _ts(self.effective_at),
            "description": self.description,
            "metadata": self.metadata,
        }

    def digest(self) -> bytes:
        """The hash stored with the transfer's idempotency key: one definition for every path that writes a
        transfer (one at a time, in a batch, in a group), so a replay matches whichever wrote it."""
        return request_hash("transfer", self.canonical())


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def request_hash(operation: str, payload: dict[str, Any]) -> bytes:
    """The hash stored with an idempotency key: same operation and payload, same hash."""
    return hashlib.sha256(orjson.dumps({"op": operation, "payload": payload}, option=orjson.OPT_SORT_KEYS)).digest()


def _dt(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class Transfer:
    """A transfer as the ledger reports it (the same shape the API returns)."""

    id: int
    kind: str
    status: str
    currency: str
    postings: tuple[dict[str, Any], ...]
    effective_at: datetime
    created_at: datetime
    expires_at: datetime | None
    description: str
    metadata: dict[str, Any]
    actor: str
    pending_id: int | None
    reverses_id: int | None
    resolved_by: int | None
    reversed_by: int | None
    posted_amount: int | None = None
    replayed: bool = False

    @classmethod
    def created(cls, request: TransferRequest, data: dict[str, Any]) -> Transfer:
        """The transfer a request created, from what the database recorded (id, times, actor).

        ``ledger.create_transfer`` returns (and stores with the idempotency key) only what the request does
        not say; a replay's request is the same request (same hash), so it yields the same transfer.
        Responses stored whole by earlier versions are read as they are.
        """
        if "postings" in data:
            return cls.from_json(data)
        said = {
            "kind": "pending" if request.pending else "transfer",
            "status": "pending" if request.pending else "posted",
            "currency": request.currency,
            "postings": [
                {"account": p.account, "debit": p.debit} if p.debit else {"account": p.account, "credit": p.credit}
                for p in request.postings
            ],
            "description": request.description,
            "metadata": request.metadata,
        }
        return cls.from_json({**data, **said})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Transfer:
        effective = _dt(data["effective_at"])
        created = _dt(data["created_at"])
        assert effective is not None
        assert created is not None
        return cls(
            id=int(data["id"]),
            kind=data["kind"],
            status=data["status"],
            currency=data["currency"],
            postings=tuple(data["postings"]),
            effective_at=effective,
            created_at=created,
            expires_at=_dt(data.get("expires_at")),
            description=data.get("description", ""),
            metadata=data.get("metadata") or {},
            actor=data.get("actor", ""),
            pending_id=data.get("pending_id"),
            reverses_id=data.get("reverses_id"),
            resolved_by=data.get("resolved_by"),
            reversed_by=data.get("reversed_by"),
            posted_amount=data.get("posted_amount"),
            replayed=bool(data.get("replayed", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "currency": self.currency,
            "postings": list(self.postings),
            "effective_at": self.effective_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "description": self.description,
            "metadata": self.metadata,
            "actor": self.actor,
            "pending_id": self.pending_id,
            "reverses_id": self.reverses_id,
            "resolved_by": self.resolved_by,
            "reversed_by": self.reversed_by,
            "posted_amount": self.posted_amount,
        }


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One posting on an account's statement, with the balances after it."""

    version: int
    transfer_id: int
    phase: Phase
    debit: int
    credit: int
    posted_after: int
    pending_debits_after: int
    pending_credits_after: int
    recorded_at: datetime
    effective_at: datetime
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "transfer_id": self.transfer_id,
            "phase": self.phase.name.lower(),
            "debit": self.debit,
            "credit": self.credit,
            "balance_after": self.posted_after,
            "pending_debits_after": self.pending_debits_after,
            "pending_credits_after": self.pending_credits_after,
            "recorded_at": self.recorded_at.isoformat(),
            "effective_at": self.effective_at.isoformat(),
            "description": self.description,
        }
