"""What households do with their money, calibrated to the Juntos savings pilot, deterministic for a seed.

Each account gets a profile from a hash of (seed, account): *near* or *far* from a pay point, *saver* or not.
When a program credit lands, the account's next moves are scheduled on the simulated clock:

- a withdrawal of everything above the household's savings target (sometimes in two installments), at an
  agent, an ATM or a branch; far households go later and prefer agents and branches;
- a saver raises its target by a share of the credit (so it keeps that share on the account);
- occasionally a deposit (savers), a fee, or an ATM failure that is withdrawn and immediately reversed.

Calibration (``docs/bank-api.md``): in the Juntos savings pilot 21% of users used their savings accounts,
savers' average balance was 5.7% of the *monthly* transfer (S/ 5.70 of S/ 100; Juntos pays S/ 200 per
bimester), and users closer to a bank agency saved more. With the defaults, 0.60 × 25% (near) + 0.40 × 15%
(far) = 21% of households are savers; a saver keeps 3.0% (near) or 1.8% (far) of each credit, 2.66% on
average (S/ 5.31 of S/ 200), and 2% of savers also deposit S/ 10 to S/ 30 after a credit (S/ 0.40 on
average): S/ 5.71 per saver per round.

Scheduled moves are packed into 64-bit integers (due second, kind, account) in per-hour buckets, so a
million pending moves cost 8 MB and advancing the clock touches only the buckets that come due.

A settlement's credits are kept as they are and reacted to (targets raised, moves scheduled) only when the
clock first reaches a second at which one of their moves could be due, or anything reads what the reactions
change (see :meth:`Households.react`). The earliest move a credit can cause is ``min_delay`` after it, and
nothing else changes what a reaction computes, so the world is the one reacting at once would make,
however the clock is advanced; but a payment run, whose lookups move the clock by minutes, no longer pays
for a week of households' plans while it waits for its batches.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from adapters.bank.simulator.rng import (
    M1,
    MASK64,
    from_lanes,
    hash_ints,
    lane_constant,
    mix64,
    mix64_lanes,
    mix64_many,
    to_lanes,
)

if TYPE_CHECKING:
    from adapters.bank.simulator.core import SimulatedBank

FAR: Final = 1
SAVER: Final = 2

WITHDRAW: Final = 1
WITHDRAW_PART: Final = 2
DEPOSIT: Final = 3
FEE: Final = 4

HOUR: Final = 3600
DAY: Final = 86400
_ACCOUNT_BITS: Final = 28
_ACCOUNT_MASK: Final = (1 << _ACCOUNT_BITS) - 1
_U16: Final = 1.0 / 65536.0


@dataclass(frozen=True)
class BehaviourModel:
    """The household behaviour parameters (shares are probabilities; delays in days unless named)."""

    far_share: float = 0.40
    saver_share_near: float = 0.25
    saver_share_far: float = 0.15
    keep_share_near: float = 0.030
    keep_share_far: float = 0.018
    min_keep: int = 1_00
    near_delay_min_hours: float = 1.0
    near_delay_mean_days: float = 1.0
    near_delay_max_days: float = 10.0
    far_delay_min_days: float = 2.0
    far_delay_mean_days: float = 6.0
    far_delay_max_days: float = 30.0
    split_share: float = 0.15
    split_gap_days: tuple[int, int] = (1, 7)
    deposit_share_savers: float = 0.02
    deposit_amounts: tuple[int, int] = (10_00, 30_00)
    fee_share: float = 0.01
    fee_amount: int = 6_00
    atm_failure_share: float = 0.01
    near_channels: tuple[float, float] = (0.45, 0.40)  # ATM, agent; the rest at a branch
    far_channels: tuple[float, float] = (0.10, 0.60)

    @property
    def saver_share(self) -> float:
        """The expected share of savers among all households."""
        return (1 - self.far_share) * self.saver_share_near + self.far_share * self.saver_share_far


def _credit_hashes(salt: int, accounts: Sequence[int], counts: Sequence[int]) -> tuple[list[int], list[int]]:
    """The two hashes of each credit: ``h1 = mix64((salt ^ account << 20 ^ count) & MASK64)`` and
    ``h2 = ((h1 ^ h1 >> 29) * M1) & MASK64``, computed a lane at a time for many credits."""
    n = len(accounts)
    if n < 64:
        first = [mix64((salt ^ (a << 20) ^ c) & MASK64) for a, c in zip(accounts, counts, strict=True)]
        return first, [((h ^ (h >> 29)) * M1) & MASK64 for h in first]
    mask = lane_constant(MASK64, n)
    keys = (lane_constant(salt, n) ^ (to_lanes(accounts) << 20) ^ to_lanes(counts)) & mask  # accounts < 2**28
    h1 = mix64_lanes(keys, n)
    h2 = (((h1 ^ (h1 >> 29)) & mask) * M1) & mask
    return from_lanes(h1, n), from_lanes(h2, n)


def _move_hashes(salt: int, moves: Sequence[int]) -> list[int]:
    """The hash of each packed move: ``mix64(mix64(salt ^ account) ^ due ^ kind << 60)``, a lane at a time."""
    n = len(moves)
    if n < 64:
        return [
            mix64(mix64(salt ^ (p & _ACCOUNT_MASK)) ^ (p >> 32) ^ (((p >> _ACCOUNT_BITS) & 0xF) << 60)) for p in moves
        ]
    packed = to_lanes(moves)
    accounts = packed & lane_constant(_ACCOUNT_MASK, n)
    due = (packed >> 32) & lane_constant(0xFFFFFFFF, n)
    kinds = ((packed >> _ACCOUNT_BITS) & lane_constant(0xF, n)) << 60
    return from_lanes(mix64_lanes(mix64_lanes(accounts ^ lane_constant(salt, n), n) ^ due ^ kinds, n), n)


@functools.lru_cache(maxsize=8)
def _first_withdrawal_delays(m: BehaviourModel) -> tuple[array[int], array[int]]:
    """Seconds from a credit to the first withdrawal, near and far, for each of the 65,536 values of ``u``.

    The delay is a function of a 16-bit draw only, so it is computed once per model for every draw, with
    exactly the expression (and floating-point operations) that each credit would otherwise evaluate:
    ``min(minimum - log(1 - u) * mean * DAY, maximum)`` seconds, truncated.
    """
    near_min, near_mean, near_max = m.near_delay_min_hours * HOUR, m.near_delay_mean_days, m.near_delay_max_days * DAY
    far_min, far_mean, far_max = m.far_delay_min_days * DAY, m.far_delay_mean_days, m.far_delay_max_days * DAY
    log = math.log
    near = array("q", [int(min(near_min - log(1.0 - k * _U16) * near_mean * DAY, near_max)) for k in range(65536)])
    far = array("q", [int(min(far_min - log(1.0 - k * _U16) * far_mean * DAY, far_max)) for k in range(65536)])
    return near, far


class Households:
    """Schedules and runs the households' moves on the bank's accounts.

    Args:
        bank: the simulated bank whose arrays this reads and whose ``append_line`` it calls.
        seed: the simulation seed.
        model: the behaviour parameters.
    """

    def __init__(self, bank: SimulatedBank, seed: int, model: BehaviourModel) -> None:
        self.bank = bank
        self.seed = seed
        self.model = model
        self.buckets: dict[int, array[int]] = {}
        self.bucket_heap: list[int] = []
        # Credits not reacted to yet, (accounts, amounts, second), in the order they landed.
        self._credits: list[tuple[Sequence[int], Sequence[int], int]] = []
        near, far = _first_withdrawal_delays(model)
        self.min_delay: int = min(HOUR, min(near), min(far))
        """The least time from a credit to a move it causes (a fee comes an hour after at the earliest)."""
        self._profile_salt = hash_ints(seed, 0x9F0F11E)
        self._credit_salt = hash_ints(seed, 0xC8ED17)
        self._move_salt = hash_ints(seed, 0x30BE)

    # --- profiles ------------------------------------------------------------------------------------

    def profile(self, account: int) -> int:
        """The profile bits (``FAR``, ``SAVER``) of an account, a pure function of (seed, account)."""
        return self.profiles(account, account + 1)[0]

    def profiles(self, first: int, end: int) -> bytes:
        """The profile bits of accounts ``first`` to ``end - 1`` (see :meth:`profile`), one byte each.

        The hashes are computed a lane at a time (:func:`~adapters.bank.simulator.rng.mix64_many`): at a
        million accounts a call per account costs more than everything else.
        """
        m = self.model
        salt = self._profile_salt
        far_share, saver_far, saver_near = m.far_share, m.saver_share_far, m.saver_share_near
        to_unit = 1.0 / (1 << 53)
        out = bytearray(max(0, end - first))
        for k, h in enumerate(mix64_many([salt ^ account for account in range(first, end)])):
            far = (h >> 11) * to_unit < far_share
            if (h & 0xFFFF) * _U16 < (saver_far if far else saver_near):
                out[k] = FAR | SAVER if far else SAVER
            elif far:
                out[k] = FAR
        return bytes(out)

    # --- scheduling ----------------------------------------------------------------------------------

    def pending_count(self) -> int:
        """How many moves are scheduled (every credit reacted to first)."""
        self.react()
        return sum(len(b) for b in self.buckets.values())

    @property
    def unreacted_credits(self) -> int:
        """How many credits are waiting for their reaction (see :meth:`react`)."""
        return sum(len(accounts) for accounts, _, _ in self._credits)

    def next_due_hour(self) -> int | None:
        """The earliest hour with scheduled moves, or in which a credit not reacted to yet could cause one;
        None if neither."""
        hour = self.bucket_heap[0] if self.bucket_heap else None
        if self._credits:
            first = (self._credits[0][2] + self.min_delay) // HOUR
            if hour is None or first < hour:
                return first
        return hour

    def schedule(self, due: int, kind: int, account: int) -> None:
        """Schedule one move; ``due`` must be at least an hour after the instant being processed."""
        hour = due // HOUR
        bucket = self.buckets.get(hour)
        if bucket is None:
            bucket = self.buckets[hour] = array("q")
            heapq.heappush(self.bucket_heap, hour)
        bucket.append(due << 32 | kind << _ACCOUNT_BITS | account)

    def take_due(self, hour: int, until: int) -> list[int]:
        """Remove and return, sorted, the packed moves of bucket ``hour`` due at or before ``until``.

        ``hour`` is :meth:`next_due_hour`: the credits not reacted to yet are reacted to first if one of
        their moves could be due by ``until``.
        """
        if self._credits and until >= self._credits[0][2] + self.min_delay:
            self.react()
        bucket = self.buckets.get(hour)
        if bucket is None:
            return []
        moves = sorted(bucket)
        limit = (until + 1) << 32
        if moves[-1] < limit:
            del self.buckets[hour]
            heapq.heappop(self.bucket_heap)  # the caller takes buckets in heap order
            return moves
        cut = bisect.bisect_left(moves, limit)
        self.buckets[hour] = array("q", moves[cut:])
        return moves[:cut]

    def on_credit(self, account: int, amount: int, t: int) -> None:
        """A program credit landed at second ``t``: raise a saver's target and schedule the moves."""
        self.on_credits((account,), (amount,), t)

    def on_credits(self, accounts: Sequence[int], amounts: Sequence[int], t: int) -> None:
        """Program credits landed at second ``t`` (in this order, at or after every credit before them): kept,
        and reacted to by :meth:`react` when the clock or a reader needs it. ``accounts`` and ``amounts`` are
        kept as they are: the caller must not change them afterwards."""
        if not accounts:
            return
        self._credits.append((accounts, amounts, t))

    def react(self) -> None:
        """React to every credit kept by :meth:`on_credits`, in the order they landed.

        Called before anything reads what a reaction changes: the scheduled moves (:meth:`take_due` once one
        of them could be due, :meth:`pending_count`, :meth:`export`), the savings targets (:meth:`run_many`,
        an account's closing) and the credit counts (the savings figures).
        """
        credits, self._credits = self._credits, []
        for accounts, amounts, t in credits:
            self._react(accounts, amounts, t)

    def _react(self, accounts: Sequence[int], amounts: Sequence[int], t: int) -> None:
        """The reaction to program credits that landed at second ``t`` (in this order): for each, raise a
        saver's target and schedule the moves.

        One loop: the hashes of all the credits computed at once (:func:`~adapters.bank.simulator.rng.mix64_lanes`)
        and :meth:`schedule` written inline; the same arithmetic, credit by credit, as reacting to each alone
        (tests/adapters/bank/test_bank_sim_bulk.py).
        """
        bank = self.bank
        m = self.model
        acc_credits, acc_profile, acc_target = bank.acc_credits, bank.acc_profile, bank.acc_target
        salt = self._credit_salt
        buckets, heap = self.buckets, self.bucket_heap
        keep_far, keep_near, min_keep = m.keep_share_far, m.keep_share_near, m.min_keep
        near_delays, far_delays = _first_withdrawal_delays(m)
        split_share, (gap_low, gap_high) = m.split_share, m.split_gap_days
        deposit_share, fee_share = m.deposit_share_savers, m.fee_share
        withdraw, withdraw_part = WITHDRAW << _ACCOUNT_BITS, WITHDRAW_PART << _ACCOUNT_BITS

        def put(due: int, packed: int) -> None:
            hour = due // HOUR
            bucket = buckets.get(hour)
            if bucket is None:
                bucket = buckets[hour] = array("q")
                heapq.heappush(heap, hour)
            bucket.append(packed)

        # Each credit's hashes depend on how many credits its account had before: counted in order (an account
        # may be credited twice in one settlement).
        counts: list[int] = []
        for account in accounts:
            n = acc_credits[account]
            acc_credits[account] = n + 1
            counts.append(n)
        first_hashes, second_hashes = _credit_hashes(salt, accounts, counts)
        for account, amount, h1, h2 in zip(accounts, amounts, first_hashes, second_hashes, strict=True):
            p = acc_profile[account]
            far = p & FAR
            if p & SAVER:
                share = (keep_far if far else keep_near) * (0.5 + (h1 & 0xFFFF) * _U16)
                keep = int(amount * share)
                if keep < min_keep:
                    keep = min_keep  # max(min_keep, keep)
                acc_target[account] += keep if keep < amount else amount  # min(keep, amount)
            due = t + (far_delays if far else near_delays)[(h1 >> 16) & 0xFFFF]
            if ((h1 >> 32) & 0xFFFF) * _U16 < split_share:
                put(due, due << 32 | withdraw_part | account)
                later = due + (gap_low + (h2 & 0xFFFF) % (gap_high - gap_low + 1)) * DAY
                put(later, later << 32 | withdraw | account)
            else:
                hour = due // HOUR
                bucket = buckets.get(hour)
                if bucket is None:
                    bucket = buckets[hour] = array("q")
                    heapq.heappush(heap, hour)
                bucket.append(due << 32 | withdraw | account)
            if p & SAVER and ((h1 >> 48) & 0xFFFF) * _U16 < deposit_share:
                when = due + (1 + ((h2 >> 16) & 0xFFFF) % 14) * DAY
                put(when, when << 32 | DEPOSIT << _ACCOUNT_BITS | account)
            if ((h2 >> 32) & 0xFFFF) * _U16 < fee_share:
                when = max(t + HOUR, due - 60)
                put(when, when << 32 | FEE << _ACCOUNT_BITS | account)

    # --- running -------------------------------------------------------------------------------------

    def run(self, packed: int) -> None:
        """Carry out one scheduled move (its due second is the bank's current instant)."""
        self.run_many((packed,))

    def run_many(self, moves: Sequence[int]) -> None:
        """Carry out scheduled moves in the order given (:meth:`run` for each, in one loop).

        Each move posts its statement lines exactly as :meth:`SimulatedBank.append_line` would, with the
        columns bound once for the whole loop, and the moves' hashes computed together (:func:`_move_hashes`).
        The credits not reacted to yet are reacted to first: the moves run at or after them (the clock runs in
        time order) and read the targets they raise.
        """
        if self._credits:
            self.react()
        bank = self.bank
        m = self.model
        acc_status, acc_balance, acc_target = bank.acc_status, bank.acc_balance, bank.acc_target
        acc_profile, acc_last_line = bank.acc_profile, bank.acc_last_line
        ln_acct, ln_type, ln_amount, ln_balance = bank.ln_acct, bank.ln_type, bank.ln_amount, bank.ln_balance
        ln_time, ln_ref, ln_prev = bank.ln_time, bank.ln_ref, bank.ln_prev
        salt = self._move_salt
        deposit_low, deposit_high = m.deposit_amounts
        deposit_steps = (deposit_high - deposit_low) // 10_00 + 1
        fee_amount, atm_failure = m.fee_amount, m.atm_failure_share
        far_channels, near_channels = m.far_channels, m.near_channels
        lt_deposit, lt_fee, lt_atm = bank.LT_DEPOSIT, bank.LT_FEE, bank.LT_WITHDRAWAL_ATM
        lt_agent, lt_branch, lt_reversal = bank.LT_WITHDRAWAL_AGENT, bank.LT_WITHDRAWAL_BRANCH, bank.LT_REVERSAL
        schedule = self.schedule

        def post(account: int, line_type: int, amount: int, t: int, ref: int) -> int:
            seq = len(ln_type)
            balance = acc_balance[account] + amount
            acc_balance[account] = balance
            ln_acct.append(account)
            ln_type.append(line_type)
            ln_amount.append(amount)
            ln_balance.append(balance)
            ln_time.append(t)
            ln_ref.append(ref)
            ln_prev.append(acc_last_line[account])
            acc_last_line[account] = seq
            return seq

        for packed, h in zip(moves, _move_hashes(salt, moves), strict=True):
            account = packed & _ACCOUNT_MASK
            if acc_status[account]:
                continue  # closed: nothing happens any more
            kind = (packed >> _ACCOUNT_BITS) & 0xF
            t = packed >> 32
            if kind == DEPOSIT:
                amount = deposit_low + (h % deposit_steps) * 10_00
                post(account, lt_deposit, amount, t, -1)
                acc_target[account] += amount
                continue
            balance = acc_balance[account]
            if kind == FEE:
                if balance >= fee_amount:
                    post(account, lt_fee, -fee_amount, t, -1)
                    acc_target[account] = min(acc_target[account], balance - fee_amount)
                continue
            available = balance - acc_target[account]
            if available <= 0:
                continue
            amount = available
            if kind == WITHDRAW_PART:
                half = (available // 2) // 10_00 * 10_00
                if half > 0:
                    amount = half
            u = (h & 0xFFFF) * _U16
            atm_share, agent_share = far_channels if acc_profile[account] & FAR else near_channels
            if u < atm_share:
                line = post(account, lt_atm, -amount, t, -1)
                if ((h >> 16) & 0xFFFF) * _U16 < atm_failure:
                    # The ATM did not dispense: the bank reverses the withdrawal; the household tries again later.
                    post(account, lt_reversal, amount, t, line)
                    schedule(t + HOUR, kind, account)
            elif u < atm_share + agent_share:
                post(account, lt_agent, -amount, t, -1)
            else:
                post(account, lt_branch, -amount, t, -1)

    # --- persistence ---------------------------------------------------------------------------------

    def export(self) -> tuple[list[list[int]], array[int]]:
        """The schedule as (hour, count) pairs and the concatenated packed moves (every credit reacted to)."""
        self.react()
        index: list[list[int]] = []
        moves = array("q")
        for hour in sorted(self.buckets):
            bucket = self.buckets[hour]
            index.append([hour, len(bucket)])
            moves.extend(bucket)
        return index, moves

    def restore(self, index: list[list[int]], moves: array[int]) -> None:
        """Load a schedule written by :meth:`export`."""
        self._credits = []
        self.buckets = {}
        offset = 0
        for hour, count in index:
            self.buckets[hour] = moves[offset : offset + count]
            offset += count
        self.bucket_heap = sorted(self.buckets)
