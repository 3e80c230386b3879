"""A reference model of the ledger in plain Python, for the property and concurrency tests.

It knows nothing of PostgreSQL: accounts are integers on a dict, transfers are lists of signed legs, and
idempotency keys map to the fingerprint of the first request and the answer it got. Each operation takes
the engine's result (a :class:`~ledger.models.Transfer` or the :class:`~ledger.errors.AppError` it raised),
asserts that it is what the ledger's rules predict, and then applies the effect to the model.

The rules it encodes:

* a posting moves, by phase: *posted* (0) the posted balance; *hold* (1) the pending debits or credits;
  *commit* (2) from pending to posted; *release* (3) out of pending. Each posting adds one to its account's
  version.
* ``available`` is ``posted`` minus pending outflows (pending credits of a debit-normal account, pending
  debits of a credit-normal one); a ``no_overdraft`` account's ``available`` never goes below zero, judged
  on the whole transfer's effect.
* a pending transfer is resolved once: posted (all, or part of a two-posting hold, releasing the rest) or
  voided; a posted transfer (or a posted hold) is reversed at most once, by a transfer moving back exactly
  what was posted.
* an idempotency key replays its first successful answer; another request under the same key is refused;
  a failed request stores nothing.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import (
    AccountClosed,
    AccountExists,
    AccountNotFound,
    AppError,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidTransfer,
    TransferNotFound,
    TransferNotPending,
    TransferNotReversible,
)
from ledger.models import Account, Balance, Phase, Transfer

Leg = tuple[str, int]
"""An account code and a signed amount (debit > 0, credit < 0)."""
PhasedLeg = tuple[str, int, Phase]

Result = Transfer | AppError


def posting_json(legs: Iterable[tuple[str, int]] | Iterable[PhasedLeg]) -> list[dict[str, Any]]:
    """The postings of a transfer as the ledger reports them, in leg order."""
    out = []
    for leg in legs:
        code, amount = leg[0], leg[1]
        out.append({"account": code, ("debit" if amount > 0 else "credit"): abs(amount)})
    return out


def expect_error(result: Result, expected: type[AppError], context: str) -> None:
    """Assert that ``result`` is exactly the named condition (not a subclass, not a success)."""
    assert isinstance(result, AppError), f"{context}: expected {expected.__name__}, the ledger answered {result!r}"
    assert type(result) is expected, f"{context}: expected {expected.__name__}, got {type(result).__name__}: {result}"


def expect_success(result: Result, context: str) -> Transfer:
    assert isinstance(result, Transfer), f"{context}: expected success, the ledger raised {result!r}"
    return result


@dataclass
class ModelAccount:
    code: str
    normal: int  # +1 debit-normal, -1 credit-normal
    no_overdraft: bool
    hot: bool = False
    closed: bool = False
    posted: int = 0
    pending_debits: int = 0
    pending_credits: int = 0
    version: int = 0

    @property
    def available(self) -> int:
        return self.posted - (self.pending_credits if self.normal == 1 else self.pending_debits)

    @property
    def outflow_sign(self) -> int:
        """The sign of a posting that takes money out of this account (credit for debit-normal)."""
        return -self.normal

    def balance(self) -> tuple[int, int, int, int, int]:
        return (self.posted, self.pending_debits, self.pending_credits, self.available, self.version)


@dataclass
class ModelTransfer:
    id: int
    kind: str  # transfer | pending | post | void
    legs: list[PhasedLeg]
    pending_id: int | None = None
    reverses_id: int | None = None
    resolved_by: int | None = None
    reversed_by: int | None = None
    outcome: str | None = None  # of a pending transfer: posted | voided | expired
    posted_amount: int = 0
    committed: list[Leg] = field(default_factory=list)  # what a post moved, for a reversal

    @property
    def status(self) -> str:
        if self.kind == "transfer":
            return "posted"
        if self.kind in ("post", "void"):
            return self.kind
        return self.outcome or "pending"

    def signed_legs(self) -> list[Leg]:
        return [(code, amount) for code, amount, _ in self.legs]

    def held(self) -> int:
        return sum(a for _, a in self.signed_legs() if a > 0)

    def expected_json(self) -> dict[str, Any]:
        """The fields of ``ledger.transfer_json`` the model predicts."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "postings": posting_json(self.legs),
            "pending_id": self.pending_id,
            "reverses_id": self.reverses_id,
            "resolved_by": self.resolved_by,
            "reversed_by": self.reversed_by,
            "posted_amount": self.posted_amount if self.kind == "pending" else None,
        }


@dataclass
class LedgerModel:
    """The whole reference ledger: accounts, transfers and idempotency keys."""

    accounts: dict[str, ModelAccount] = field(default_factory=dict)
    transfers: dict[int, ModelTransfer] = field(default_factory=dict)
    keys: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------ helpers
    def _replayed(self, key: str | None, fingerprint: tuple[Any, ...], result: Result, context: str) -> bool:
        """Handle a known key: a replay must return the first answer; another request is refused."""
        if key is None or key not in self.keys:
            return False
        stored_fingerprint, stored_answer = self.keys[key]
        if stored_fingerprint != fingerprint:
            expect_error(result, IdempotencyConflict, f"{context} reusing key {key}")
            return True
        replay = expect_success(result, f"{context} replaying key {key}")
        assert replay.replayed, f"{context}: replay of key {key} not flagged as replayed"
        assert replay.to_dict() == stored_answer, f"{context}: replay of key {key} differs from the first answer"
        return True

    def _remember(self, key: str | None, fingerprint: tuple[Any, ...], result: Transfer) -> None:
        assert not result.replayed, f"a first request under key {key} was flagged as a replay"
        if key is not None:
            self.keys[key] = (fingerprint, result.to_dict())

    def _effect(self, legs: Sequence[PhasedLeg]) -> tuple[type[AppError] | None, dict[str, ModelAccount]]:
        """What writing ``legs`` would do: an error, or the accounts after it (not yet applied)."""
        missing = [code for code, _, _ in legs if code not in self.accounts]
        if missing:
            return AccountNotFound, {}
        after = {code: dataclasses.replace(self.accounts[code]) for code in {c for c, _, _ in legs}}
        if any(after[code].closed for code, _, phase in legs if phase in (Phase.POSTED, Phase.HOLD)):
            return AccountClosed, {}
        for code, amount, phase in legs:
            acc = after[code]
            if phase in (Phase.POSTED, Phase.COMMIT):
                acc.posted += amount * acc.normal
            if phase is Phase.HOLD:
                if amount > 0:
                    acc.pending_debits += amount
                else:
                    acc.pending_credits -= amount
            if phase in (Phase.COMMIT, Phase.RELEASE):
                if amount > 0:
                    acc.pending_debits -= amount
                else:
                    acc.pending_credits += amount
            acc.version += 1
        if any(acc.no_overdraft and acc.available < 0 for acc in after.values()):
            return InsufficientFunds, {}
        return None, after

    def _apply(self, after: dict[str, ModelAccount]) -> None:
        self.accounts.update(after)

    def _check_postings(self, result: Transfer, legs: Sequence[Leg] | Sequence[PhasedLeg], context: str) -> None:
        assert list(result.postings) == posting_json(legs), (
            f"{context}: postings {list(result.postings)} != expected {posting_json(legs)}"
        )

    # ---------------------------------------------------------------------------------------- accounts
    def create_account(self, code: str, normal: int, no_overdraft: bool, hot: bool, result: Account | AppError) -> None:
        if code in self.accounts:
            assert isinstance(result, AccountExists), f"creating {code} twice: expected AccountExists, got {result!r}"
            return
        assert isinstance(result, Account), f"creating {code}: expected an account, got {result!r}"
        assert (result.balance.posted, result.balance.version) == (0, 0)
        self.accounts[code] = ModelAccount(code, normal, no_overdraft, hot)

    def close_account(self, code: str, result: Account | AppError) -> None:
        acc = self.accounts[code]
        if acc.closed or acc.posted or acc.pending_debits or acc.pending_credits:
            assert type(result) is AccountClosed, f"closing {code}: expected AccountClosed, got {result!r}"
            return
        assert isinstance(result, Account), f"closing {code}: expected success, got {result!r}"
        assert result.closed
        acc.closed = True

    # --------------------------------------------------------------------------------------- transfers
    def transfer(self, key: str | None, legs: Sequence[Leg], pending: bool, expires: bool, result: Result) -> None:
        context = f"{'pending ' if pending else ''}transfer {list(legs)}"
        fingerprint = ("transfer", tuple(legs), pending, expires)
        if self._replayed(key, fingerprint, result, context):
            return
        phase = Phase.HOLD if pending else Phase.POSTED
        phased = [(code, amount, phase) for code, amount in legs]
        error, after = self._effect(phased)
        if error is not None:
            expect_error(result, error, context)
            return
        done = expect_success(result, context)
        assert (done.kind, done.status) == (("pending", "pending") if pending else ("transfer", "posted")), context
        self._check_postings(done, legs, context)
        assert done.id not in self.transfers, f"{context}: transfer id {done.id} was given out before"
        self._apply(after)
        self.transfers[done.id] = ModelTransfer(done.id, done.kind, phased)
        self._remember(key, fingerprint, done)

    def _transfer_error(
        self, key: str | None, legs: Sequence[Leg], pending: bool, expires: bool
    ) -> tuple[type[AppError] | None, dict[str, ModelAccount] | None]:
        """The error a transfer would meet, or None and the accounts after it (None after: a replay)."""
        if key is not None and key in self.keys:
            same = self.keys[key][0] == ("transfer", tuple(legs), pending, expires)
            return (None, None) if same else (IdempotencyConflict, None)
        phase = Phase.HOLD if pending else Phase.POSTED
        return self._effect([(code, amount, phase) for code, amount in legs])

    def transfer_batch(
        self, items: Sequence[tuple[str, Sequence[Leg], bool, bool]], result: list[Transfer] | AppError
    ) -> None:
        """Several transfers at once, all or nothing: each as if alone, or the first item's error and no effect."""
        context = f"batch of {len(items)} transfers"
        if len({key for key, *_ in items}) != len(items):
            expect_error(result, InvalidTransfer, f"{context} repeating a key")
            return
        if isinstance(result, list):
            assert len(result) == len(items), f"{context}: {len(result)} answers"
            for (key, legs, pending, expires), answer in zip(items, result, strict=True):
                self.transfer(key, legs, pending, expires, answer)
            return
        trial = copy.deepcopy(self)
        for index, (key, legs, pending, expires) in enumerate(items):
            error, after = trial._transfer_error(key, legs, pending, expires)
            if error is not None:
                expect_error(result, error, f"{context}, item {index}")
                return
            if after is not None:
                trial._apply(after)
        raise AssertionError(f"{context}: the ledger refused it ({result!r}) but every item should pass")

    def resolve(self, key: str | None, transfer_id: int, post: bool, amount: int | None, result: Result) -> None:
        """Post (all, or ``amount`` of a two-posting hold) or void a pending transfer."""
        context = f"{'post' if post else 'void'} of transfer {transfer_id} (amount {amount})"
        if amount is not None and amount <= 0:
            expect_error(result, InvalidTransfer, context)  # refused before the key is looked at
            return
        fingerprint = ("post" if post else "void", transfer_id, amount)
        if self._replayed(key, fingerprint, result, context):
            return
        target = self.transfers.get(transfer_id)
        if target is None:
            expect_error(result, TransferNotFound, context)
            return
        if target.kind != "pending" or target.outcome is not None:
            expect_error(result, TransferNotPending, context)
            return
        hold = target.signed_legs()
        held = target.held()
        if post and amount is not None and (len(hold) != 2 or amount > held):
            expect_error(result, InvalidTransfer, context)
            return
        if not post:
            legs: list[PhasedLeg] = [(c, a, Phase.RELEASE) for c, a in hold]
            committed: list[Leg] = []
        elif amount is None or amount == held:
            legs = [(c, a, Phase.COMMIT) for c, a in hold]
            committed = hold
        else:
            sign = [1 if a > 0 else -1 for _, a in hold]
            committed = [(hold[i][0], sign[i] * amount) for i in range(2)]
            legs = [(c, a, Phase.COMMIT) for c, a in committed] + [
                (hold[i][0], sign[i] * (held - amount), Phase.RELEASE) for i in range(2)
            ]
        error, after = self._effect(legs)
        assert error is None, f"{context}: the model refuses its own resolution ({error})"
        done = expect_success(result, context)
        assert (done.id, done.kind) == (transfer_id, "pending"), context
        assert done.status == ("posted" if post else "voided"), f"{context}: status {done.status}"
        assert done.resolved_by is not None, context
        assert done.resolved_by not in self.transfers, f"{context}: event id {done.resolved_by} was given out before"
        self._apply(after)
        target.outcome = "posted" if post else "voided"
        target.resolved_by = done.resolved_by
        target.committed = committed
        target.posted_amount = sum(a for _, a in committed if a > 0)
        assert done.posted_amount == target.posted_amount, f"{context}: posted_amount {done.posted_amount}"
        self.transfers[done.resolved_by] = ModelTransfer(
            done.resolved_by, "post" if post else "void", legs, pending_id=transfer_id
        )
        self._remember(key, fingerprint, done)

    def expire(self, pending_ids: Iterable[int], events: dict[int, int]) -> None:
        """The expiry sweep voided ``pending_ids``; ``events`` maps each to its void event's id."""
        for pid in pending_ids:
            target = self.transfers[pid]
            legs = [(c, a, Phase.RELEASE) for c, a in target.signed_legs()]
            error, after = self._effect(legs)
            assert error is None
            self._apply(after)
            target.outcome = "expired"
            target.resolved_by = events[pid]
            self.transfers[events[pid]] = ModelTransfer(events[pid], "void", legs, pending_id=pid)

    def reverse(self, key: str | None, transfer_id: int, result: Result) -> None:
        context = f"reversal of transfer {transfer_id}"
        fingerprint = ("reverse", transfer_id)
        if self._replayed(key, fingerprint, result, context):
            return
        target = self.transfers.get(transfer_id)
        if target is None:
            expect_error(result, TransferNotFound, context)
            return
        if target.status != "posted" or target.reversed_by is not None:
            expect_error(result, TransferNotReversible, context)
            return
        moved = target.signed_legs() if target.kind == "transfer" else target.committed
        if not moved:  # a hold posted with amount 0 moved nothing: there is nothing to reverse
            expect_error(result, TransferNotReversible, context)
            return
        legs = [(code, -amount, Phase.POSTED) for code, amount in moved]
        error, after = self._effect(legs)
        if error is not None:
            expect_error(result, error, context)
            return
        done = expect_success(result, context)
        assert (done.kind, done.status, done.reverses_id) == ("transfer", "posted", transfer_id), context
        self._check_postings(done, legs, context)
        assert done.id not in self.transfers
        self._apply(after)
        target.reversed_by = done.id
        self.transfers[done.id] = ModelTransfer(done.id, "transfer", legs, reverses_id=transfer_id)
        self._remember(key, fingerprint, done)

    # ------------------------------------------------------------------------------------------ checks
    def assert_balances(self, accounts: dict[str, Account]) -> None:
        assert set(accounts) == set(self.accounts), f"accounts {sorted(accounts)} != model {sorted(self.accounts)}"
        for code, acc in self.accounts.items():
            b: Balance = accounts[code].balance
            got = (b.posted, b.pending_debits, b.pending_credits, b.available, b.version)
            assert got == acc.balance(), f"account {code}: ledger {got} != model {acc.balance()}"
            assert accounts[code].closed == acc.closed, f"account {code}: closed {accounts[code].closed}"
            if acc.no_overdraft:
                assert b.available >= 0, f"no_overdraft account {code} is at {b.available}"

    def assert_trial_balance(self) -> None:
        assert sum(a.posted * a.normal for a in self.accounts.values()) == 0
        assert sum(a.pending_debits for a in self.accounts.values()) == sum(
            a.pending_credits for a in self.accounts.values()
        )

    def assert_transfer(self, data: dict[str, Any]) -> None:
        """Compare one ``transfer_json`` document (or ``Transfer.to_dict()``) with the model."""
        model = self.transfers[int(data["id"])].expected_json()
        got = {k: data.get(k) for k in model}
        got["postings"] = list(got["postings"])
        assert got == model, f"transfer {data['id']}: ledger {got} != model {model}"
