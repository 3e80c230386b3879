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
"""

from __future__ import annotations

import bisect
import heapq
import math
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from adapters.bank.simulator.rng import MASK64, hash_ints, mix64, unit

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
        self._profile_salt = hash_ints(seed, 0x9F0F11E)
        self._credit_salt = hash_ints(seed, 0xC8ED17)
        self._move_salt = hash_ints(seed, 0x30BE)

    # --- profiles ------------------------------------------------------------------------------------

    def profile(self, account: int) -> int:
        """The profile bits (``FAR``, ``SAVER``) of an account, a pure function of (seed, account)."""
        m = self.model
        h = mix64(self._profile_salt ^ account)
        far = unit(h) < m.far_share
        saver = (h & 0xFFFF) * _U16 < (m.saver_share_far if far else m.saver_share_near)
        return (FAR if far else 0) | (SAVER if saver else 0)

    # --- scheduling ----------------------------------------------------------------------------------

    def pending_count(self) -> int:
        """How many moves are scheduled."""
        return sum(len(b) for b in self.buckets.values())

    def next_due_hour(self) -> int | None:
        """The earliest hour with scheduled moves, or None."""
        return self.bucket_heap[0] if self.bucket_heap else None

    def schedule(self, due: int, kind: int, account: int) -> None:
        """Schedule one move; ``due`` must be at least an hour after the instant being processed."""
        hour = due // HOUR
        bucket = self.buckets.get(hour)
        if bucket is None:
            bucket = self.buckets[hour] = array("q")
            heapq.heappush(self.bucket_heap, hour)
        bucket.append(due << 32 | kind << _ACCOUNT_BITS | account)

    def take_due(self, hour: int, until: int) -> list[int]:
        """Remove and return, sorted, the packed moves of bucket ``hour`` due at or before ``until``."""
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
        bank = self.bank
        m = self.model
        n = bank.acc_credits[account]
        bank.acc_credits[account] = n + 1
        p = bank.acc_profile[account]
        h1 = mix64((self._credit_salt ^ (account << 20) ^ n) & MASK64)
        h2 = ((h1 ^ (h1 >> 29)) * 0xBF58476D1CE4E5B9) & MASK64
        far = p & FAR
        if p & SAVER:
            share = (m.keep_share_far if far else m.keep_share_near) * (0.5 + (h1 & 0xFFFF) * _U16)
            keep = max(m.min_keep, int(amount * share))
            bank.acc_target[account] += min(keep, amount)
        u = ((h1 >> 16) & 0xFFFF) * _U16
        if far:
            delay = m.far_delay_min_days * DAY - math.log(1.0 - u) * m.far_delay_mean_days * DAY
            delay = min(delay, m.far_delay_max_days * DAY)
        else:
            delay = m.near_delay_min_hours * HOUR - math.log(1.0 - u) * m.near_delay_mean_days * DAY
            delay = min(delay, m.near_delay_max_days * DAY)
        due = t + int(delay)
        schedule = self.schedule
        if ((h1 >> 32) & 0xFFFF) * _U16 < m.split_share:
            low, high = m.split_gap_days
            schedule(due, WITHDRAW_PART, account)
            schedule(due + (low + (h2 & 0xFFFF) % (high - low + 1)) * DAY, WITHDRAW, account)
        else:
            schedule(due, WITHDRAW, account)
        if p & SAVER and ((h1 >> 48) & 0xFFFF) * _U16 < m.deposit_share_savers:
            schedule(due + (1 + ((h2 >> 16) & 0xFFFF) % 14) * DAY, DEPOSIT, account)
        if ((h2 >> 32) & 0xFFFF) * _U16 < m.fee_share:
            schedule(max(t + HOUR, due - 60), FEE, account)

    # --- running -------------------------------------------------------------------------------------

    def run(self, packed: int) -> None:
        """Carry out one scheduled move (its due second is the bank's current instant)."""
        bank = self.bank
        account = packed & _ACCOUNT_MASK
        kind = (packed >> _ACCOUNT_BITS) & 0xF
        t = packed >> 32
        if bank.acc_status[account]:
            return  # closed: nothing happens any more
        m = self.model
        h = mix64(mix64(self._move_salt ^ account) ^ t ^ (kind << 60))
        if kind == DEPOSIT:
            low, high = m.deposit_amounts
            amount = low + (h % ((high - low) // 10_00 + 1)) * 10_00
            bank.append_line(account, bank.LT_DEPOSIT, amount, t, -1)
            bank.acc_target[account] += amount
            return
        balance = bank.acc_balance[account]
        if kind == FEE:
            if balance >= m.fee_amount:
                bank.append_line(account, bank.LT_FEE, -m.fee_amount, t, -1)
                bank.acc_target[account] = min(bank.acc_target[account], balance - m.fee_amount)
            return
        available = balance - bank.acc_target[account]
        if available <= 0:
            return
        amount = available
        if kind == WITHDRAW_PART:
            half = (available // 2) // 10_00 * 10_00
            if half > 0:
                amount = half
        u = (h & 0xFFFF) * _U16
        atm_share, agent_share = m.far_channels if bank.acc_profile[account] & FAR else m.near_channels
        if u < atm_share:
            line = bank.append_line(account, bank.LT_WITHDRAWAL_ATM, -amount, t, -1)
            if ((h >> 16) & 0xFFFF) * _U16 < m.atm_failure_share:
                # The ATM did not dispense: the bank reverses the withdrawal; the household tries again later.
                bank.append_line(account, bank.LT_REVERSAL, amount, t, line)
                self.schedule(t + HOUR, kind, account)
        elif u < atm_share + agent_share:
            bank.append_line(account, bank.LT_WITHDRAWAL_AGENT, -amount, t, -1)
        else:
            bank.append_line(account, bank.LT_WITHDRAWAL_BRANCH, -amount, t, -1)

    # --- persistence ---------------------------------------------------------------------------------

    def export(self) -> tuple[list[list[int]], array[int]]:
        """The schedule as (hour, count) pairs and the concatenated packed moves."""
        index: list[list[int]] = []
        moves = array("q")
        for hour in sorted(self.buckets):
            bucket = self.buckets[hour]
            index.append([hour, len(bucket)])
            moves.extend(bucket)
        return index, moves

    def restore(self, index: list[list[int]], moves: array[int]) -> None:
        """Load a schedule written by :meth:`export`."""
        self.buckets = {}
        offset = 0
        for hour, count in index:
            self.buckets[hour] = moves[offset : offset + count]
            offset += count
        self.bucket_heap = sorted(self.buckets)
