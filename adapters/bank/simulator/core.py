"""The simulated bank's state and rules, without HTTP: accounts, credit batches, settlement, statements.

State changes happen only through :meth:`SimulatedBank.execute` with a *command* (a JSON-able dict). A
successful command is handed to the journal, and replaying the journal's commands on a fresh bank with the
same seed rebuilds exactly the same state, because every random choice is a hash of the seed and of facts in
the commands. That is how the simulator survives a restart (``store.py``) and why a run is reproducible.

Bulk data is kept in columns (``array`` and ``bytearray``, one entry per account, item or statement line)
rather than one Python object each: a million households, a million items and a few million statement lines
fit in a few hundred megabytes and settle in seconds.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from adapters.bank.simulator import ids
from adapters.bank.simulator.clock import DEFAULT_START, SimClock
from adapters.bank.simulator.faults import SettlementFaults
from adapters.bank.simulator.households import HOUR, BehaviourModel, Households
from adapters.bank.simulator.rng import hash_ints, mix64, unit
from services.identifiers import BN_BANK_CODE

FUNDING: Final = 0
"""Account number 0 is the program's funding account."""
MAX_ACCOUNTS: Final = 10_000_000
MAX_SECONDS: Final = 50 * 366 * 86400
"""The simulated clock covers 50 years (scheduled moves pack their due second into 32 bits)."""

# Item states and reasons, as stored in the columns.
PENDING, CREDITED, REJECTED = 0, 1, 2
STATUS_NAMES: Final = ("pending", "credited", "rejected")
REASON_NAMES: Final = (
    None,
    "account_closed",
    "account_not_found",
    "dni_mismatch",
    "amount_limit",
    "duplicate_reference",
    "processing_error",
)
R_CLOSED, R_NOT_FOUND, R_DNI, R_LIMIT, R_DUPLICATE, R_PROCESSING = 1, 2, 3, 4, 5, 6
LINE_TYPES: Final = (
    "program_credit",
    "program_debit",
    "withdrawal_agent",
    "withdrawal_atm",
    "withdrawal_branch",
    "deposit",
    "fee",
    "reversal",
)
EVENT_TYPES: Final = ("credit_items.settled", "batch.settled")
BATCH_RECEIVED, BATCH_PROCESSING, BATCH_SETTLED = "received", "processing", "settled"

_DOUBLED = str.maketrans("0123456789", "0246813579")  # digit -> digit sum of twice the digit


def _check_digit(digits: str) -> int:
    """A CCI group check digit (weights 1, 2, 1, 2... from the left, digit sums of the products)."""
    total = sum((digits[0::2] + digits[1::2].translate(_DOUBLED)).encode()) - 48 * len(digits)
    return (10 - total % 10) % 10


class SimError(Exception):
    """A request the bank refuses, rendered as the interface's error envelope.

    Args:
        status: HTTP status.
        type: error type (``invalid_request_error``, ``idempotency_error``...).
        code: machine-readable code (``control_totals_mismatch``...).
        message: what went wrong, for people.
        param: the request field at fault, when there is one.
    """

    def __init__(self, status: int, type: str, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.param = param


def not_found(what: str, ident: str, param: str | None = None) -> SimError:
    """A 404 ``resource_missing`` error."""
    return SimError(404, "invalid_request_error", "resource_missing", f"no such {what}: {ident}", param)


@dataclass(frozen=True)
class SimConfig:
    """The parameters that define a simulated world; fixed when its state folder is created."""

    seed: int = 0
    start: datetime = DEFAULT_START
    item_amount_limit: int = 5_000_00
    program_name: str = "Programa Juntos"
    behaviour: BehaviourModel = field(default_factory=BehaviourModel)

    def to_json(self) -> dict[str, Any]:
        """The parameters as JSON (for ``sim.json``)."""
        return {
            "seed": self.seed,
            "start": self.start.isoformat(),
            "item_amount_limit": self.item_amount_limit,
            "program_name": self.program_name,
        }


@dataclass(slots=True)
class SimBatch:
    """A credit batch's bookkeeping; its items are a contiguous range of the item columns."""

    seq: int
    reference: str
    description: str | None
    created_at: int
    start: int
    count: int
    control_amount: int
    tranches: list[list[int]]  # [settle second, items settled once it runs], increasing
    reject_ppm: int
    idempotency_key: str | None = None
    settled: int = 0
    credited_count: int = 0
    credited_amount: int = 0
    rejected_count: int = 0
    rejected_amount: int = 0
    hold: int = 0
    settled_at: int = -1

    @property
    def status(self) -> str:
        """``received``, ``processing`` or ``settled``."""
        if self.settled == 0:
            return BATCH_RECEIVED
        return BATCH_SETTLED if self.settled == self.count else BATCH_PROCESSING


@dataclass(slots=True)
class IdempotencyRecord:
    """The first answer to a request, kept under its idempotency key."""

    fingerprint: str
    status: int
    body: bytes
    op: str


@dataclass
class Stats:
    """Counters that tests and operators read at ``/sim/stats``."""

    replays: int = 0
    idempotency_conflicts: int = 0
    batch_reference_conflicts: int = 0
    refused_batches: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    webhook_deliveries: int = 0
    webhook_failures: int = 0


ACCOUNT_COLUMNS: Final = (
    ("acc_dni", "I"),
    ("acc_ubigeo", "I"),
    ("acc_opened", "q"),
    ("acc_closed", "q"),
    ("acc_balance", "q"),
    ("acc_target", "q"),
    ("acc_last_line", "q"),
    ("acc_credits", "I"),
)
ITEM_COLUMNS: Final = (
    ("item_batch", "I"),
    ("item_acct", "q"),
    ("item_dni", "I"),
    ("item_amount", "q"),
    ("item_settled", "q"),
    ("item_line", "q"),
)
LINE_COLUMNS: Final = (
    ("ln_acct", "I"),
    ("ln_amount", "q"),
    ("ln_balance", "q"),
    ("ln_time", "q"),
    ("ln_ref", "q"),
    ("ln_prev", "q"),
)
BYTE_COLUMNS: Final = ("acc_status", "acc_profile", "item_status", "item_reason", "ln_type", "ev_state")


class SimulatedBank:
    """The simulated Banco de la Nación.

    Args:
        config: the world's parameters (seed, start, item limit, behaviour).
        settlement: the settlement faults in force (changed later by a ``set_faults`` command).
        journal: called with every successful state-changing command (not while replaying).
    """

    LT_PROGRAM_CREDIT, LT_PROGRAM_DEBIT, LT_WITHDRAWAL_AGENT, LT_WITHDRAWAL_ATM = 0, 1, 2, 3
    LT_WITHDRAWAL_BRANCH, LT_DEPOSIT, LT_FEE, LT_REVERSAL = 4, 5, 6, 7

    def __init__(
        self,
        config: SimConfig,
        settlement: SettlementFaults | None = None,
        journal: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.seed = config.seed
        self.clock = SimClock(config.start)
        self.settlement = settlement or SettlementFaults()
        self.journal = journal
        self.now = 0
        self.stats = Stats()
        self.households = Households(self, config.seed, config.behaviour)
        for name, code in (*ACCOUNT_COLUMNS, *ITEM_COLUMNS, *LINE_COLUMNS):
            setattr(self, name, array(code))
        self.acc_dni: array[int]
        self.acc_ubigeo: array[int]
        self.acc_opened: array[int]
        self.acc_closed: array[int]
        self.acc_balance: array[int]
        self.acc_target: array[int]
        self.acc_last_line: array[int]
        self.acc_credits: array[int]
        self.item_batch: array[int]
        self.item_acct: array[int]
        self.item_dni: array[int]
        self.item_amount: array[int]
        self.item_settled: array[int]
        self.item_line: array[int]
        self.ln_acct: array[int]
        self.ln_amount: array[int]
        self.ln_balance: array[int]
        self.ln_time: array[int]
        self.ln_ref: array[int]
        self.ln_prev: array[int]
        self.acc_status = bytearray()
        self.acc_profile = bytearray()
        self.item_status = bytearray()
        self.item_reason = bytearray()
        self.ln_type = bytearray()
        self.ev_state = bytearray()  # per event: 0 to deliver, 1 delivered
        self.acc_name: list[str] = []
        self.item_ref: list[str] = []
        self.line_refs: dict[int, str] = {}  # our reference on funding deposits
        self.batches: list[SimBatch] = []
        self.events: list[tuple[int, int, int, int, int, dict[str, Any]]] = []
        self.idempotency: dict[str, IdempotencyRecord] = {}
        self.dni_index: dict[int, int] = {}
        self.batch_by_ref: dict[str, int] = {}
        self.credited_refs: dict[str, int] = {}
        self.settle_heap: list[tuple[int, int, int]] = []
        self._office_checks: dict[str, str] = {}
        self.held_total = 0
        self._add_account(0, config.program_name, 150101, 0)  # the funding account, at the Lima head office

    # --- commands ------------------------------------------------------------------------------------

    def execute(self, cmd: dict[str, Any], *, replaying: bool = False) -> tuple[int, bytes, bool]:
        """Apply a command; return (HTTP status, JSON body, whether it was an idempotent replay).

        A command with an idempotency ``key`` seen before returns the first answer when its ``fingerprint``
        matches, and fails with 409 ``idempotency_key_reused`` when it does not. A failing command changes
        nothing and is not journaled.
        """
        key = cmd.get("key")
        if key is not None:
            record = self.idempotency.get(key)
            if record is not None:
                if record.fingerprint != cmd["fingerprint"] or record.op != cmd["op"]:
                    self.stats.idempotency_conflicts += 1
                    raise SimError(
                        409,
                        "idempotency_error",
                        "idempotency_key_reused",
                        f"Idempotency-Key {key!r} was already used with a different request",
                    )
                self.stats.replays += 1
                return record.status, record.body, True
        handler = getattr(self, "_op_" + cmd["op"], None)
        if handler is None:
            raise ValueError(f"unknown command {cmd['op']!r}")
        status, result = handler(cmd)
        body = orjson.dumps(result)
        if key is not None:
            self.idempotency[key] = IdempotencyRecord(cmd["fingerprint"], status, body, cmd["op"])
        if self.journal is not None and not replaying:
            self.journal(cmd)
        return status, body, False

    def _op_open_account(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        dni = int(cmd["dni"])
        existing = self.dni_index.get(dni)
        if existing is not None:
            raise SimError(
                409,
                "invalid_request_error",
                "account_exists",
                f"the titular already has an open account: {ids.ACCOUNT.encode(existing)}",
                "dni",
            )
        self._check_capacity(1)
        seq = self._add_account(dni, cmd["name"], int(cmd["ubigeo"]), self.now)
        return 201, self.account_json(seq)

    def _op_bulk_accounts(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        rows = cmd["rows"]
        self._check_capacity(len(rows))
        out = []
        index = self.dni_index
        for dni_text, name, ubigeo in rows:
            dni = int(dni_text)
            seq = index.get(dni)
            created = seq is None
            if seq is None:
                seq = self._add_account(dni, name, int(ubigeo), self.now)
            number, cci = self.account_codes(seq)
            out.append(
                {
                    "dni": dni_text,
                    "account_id": ids.ACCOUNT.encode(seq),
                    "account_number": number,
                    "cci": cci,
                    "created": created,
                }
            )
        return 200, {"object": "list", "data": out, "has_more": False, "next_cursor": None}

    def _op_close_account(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        seq = int(cmd["account"])
        if seq == FUNDING:
            raise SimError(409, "invalid_request_error", "account_not_closable", "the funding account cannot be closed")
        if self.acc_status[seq]:
            raise SimError(409, "invalid_request_error", "account_closed", "the account is already closed")
        balance = self.acc_balance[seq]
        if balance > 0:
            self.append_line(seq, self.LT_WITHDRAWAL_BRANCH, -balance, self.now, -1)  # paid out at closing
        self.acc_target[seq] = 0
        self.acc_status[seq] = 1
        self.acc_closed[seq] = self.now
        self.dni_index.pop(self.acc_dni[seq], None)
        return 200, self.account_json(seq)

    def _op_deposit_funding(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        line = self.append_line(FUNDING, self.LT_DEPOSIT, int(cmd["amount"]), self.now, -1)
        if cmd.get("reference"):
            self.line_refs[line] = cmd["reference"]
        return 200, self.funding_json()

    def _op_set_faults(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.settlement = SettlementFaults.from_json(cmd["settlement"])
        return 200, {"settlement": self.settlement.to_json()}

    def _op_webhooks_delivered(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for seq in cmd["events"]:
            self.ev_state[seq] = 1
        return 200, {"delivered": len(cmd["events"])}

    def _op_advance(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        target = int(cmd["to"])
        if target < self.now:
            raise SimError(409, "invalid_request_error", "clock_backwards", "the clock only moves forward")
        if target > MAX_SECONDS:
            raise SimError(422, "invalid_request_error", "parameter_invalid", "the simulation covers at most 50 years")
        self._run_until(target)
        return 200, self.clock_json()

    def _op_submit_batch(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = cmd["body"]
        reference: str = body["reference"]
        items: list[list[Any]] = body["items"]
        count = len(items)
        total = 0
        for item in items:
            total += item[2]
        if count != body["control_count"] or total != body["control_amount"]:
            self.stats.refused_batches += 1
            raise SimError(
                422,
                "invalid_request_error",
                "control_totals_mismatch",
                f"control totals do not match the items: declared {body['control_count']} items and "
                f"{body['control_amount']} céntimos, found {count} items and {total} céntimos; "
                "the batch was refused whole",
                "control_amount" if count == body["control_count"] else "control_count",
            )
        for i, item in enumerate(items):
            cci = item[4]
            if cci is not None and cci[:3] != BN_BANK_CODE:
                raise SimError(
                    422,
                    "invalid_request_error",
                    "parameter_invalid",
                    f"bank code {cci[:3]} is not Banco de la Nación ({BN_BANK_CODE})",
                    f"items[{i}].cci",
                )
        existing = self.batch_by_ref.get(reference)
        if existing is not None:
            self.stats.batch_reference_conflicts += 1
            raise SimError(
                409,
                "invalid_request_error",
                "batch_reference_exists",
                f"a batch with reference {reference!r} exists: {ids.BATCH.encode(existing)}",
                "reference",
            )
        available = self.acc_balance[FUNDING] - self.held_total
        if total > available:
            raise SimError(
                409,
                "invalid_request_error",
                "insufficient_funds",
                f"the funding account's available balance ({available} céntimos) does not cover the batch "
                f"({total} céntimos)",
            )
        seq = len(self.batches)
        start = len(self.item_ref)
        batch = SimBatch(
            seq=seq,
            reference=reference,
            description=body.get("description"),
            created_at=self.now,
            start=start,
            count=count,
            control_amount=total,
            tranches=self._settlement_plan(seq, count),
            reject_ppm=int(self.settlement.reject_rate * 1_000_000),
            idempotency_key=cmd.get("key"),
            hold=total,
        )
        resolve = self.resolve_account
        for ref, dni, amount, number, cci in items:
            acct = resolve(number, cci)
            self.item_ref.append(ref)
            self.item_batch.append(seq)
            self.item_acct.append(acct)
            self.item_dni.append(int(dni))
            self.item_amount.append(amount)
        self.item_settled.extend(array("q", [-1]) * count)
        self.item_line.extend(array("q", [-1]) * count)
        self.item_status.extend(bytes(count))
        self.item_reason.extend(bytes(count))
        self.batches.append(batch)
        self.batch_by_ref[reference] = seq
        self.held_total += total
        for index, (when, _) in enumerate(batch.tranches):
            heapq.heappush(self.settle_heap, (when, seq, index))
        return 201, self.batch_json(seq)

    # --- rules ---------------------------------------------------------------------------------------

    def _check_capacity(self, n: int) -> None:
        if len(self.acc_name) + n > MAX_ACCOUNTS:
            raise SimError(409, "invalid_request_error", "capacity_exceeded", f"at most {MAX_ACCOUNTS} accounts")

    def _add_account(self, dni: int, name: str, ubigeo: int, t: int) -> int:
        seq = len(self.acc_name)
        self.acc_name.append(name)
        self.acc_dni.append(dni)
        self.acc_ubigeo.append(ubigeo)
        self.acc_opened.append(t)
        self.acc_closed.append(-1)
        self.acc_balance.append(0)
        self.acc_target.append(0)
        self.acc_last_line.append(-1)
        self.acc_credits.append(0)
        self.acc_status.append(0)
        self.acc_profile.append(self.households.profile(seq) if seq != FUNDING else 0)
        if seq != FUNDING:
            self.dni_index[dni] = seq
        return seq

    def _settlement_plan(self, seq: int, count: int) -> list[list[int]]:
        f = self.settlement
        h = hash_ints(self.seed, 0xBA7C, seq)
        low, high = f.settle_delay_seconds
        delay = low + int((high - low) * unit(h))
        h = mix64(h)
        if unit(h) < f.late_batch_rate:
            low_h, high_h = f.late_delay_hours
            delay = int((low_h + (high_h - low_h) * unit(mix64(h))) * HOUR)
        first = self.now + max(1, delay)
        h = mix64(mix64(h))
        if count > 1 and unit(h) < f.split_batch_rate:
            part = max(1, min(count - 1, int(count * (0.3 + 0.5 * unit(mix64(h))))))
            return [[first, part], [first + HOUR * (1 + int(5 * unit(mix64(mix64(h))))), count]]
        return [[first, count]]

    def resolve_account(self, number: str | None, cci: str | None) -> int:
        """The account seq for an account number or a BN CCI, or -1 if there is no such account."""
        if cci is not None:
            number = cci[6:18]
            if cci[3:6] != number[2:5]:
                return -1
        assert number is not None
        if not number.startswith("04"):
            return -1
        seq = int(number[5:])
        if not 0 < seq < len(self.acc_name):
            return -1
        ubigeo = self.acc_ubigeo[seq]
        if int(number[2:5]) != ubigeo // 10000 * 10 + (ubigeo // 100) % 10:
            return -1
        return seq

    def office(self, seq: int) -> str:
        """The 3-digit office of an account: department and a province digit of its ubigeo."""
        if seq == FUNDING:
            return "001"
        ubigeo = self.acc_ubigeo[seq]
        return f"{ubigeo // 10000:02d}{(ubigeo // 100) % 10}"

    def account_codes(self, seq: int) -> tuple[str, str]:
        """(account number, CCI) of an account."""
        office = self.office(seq)
        number = f"00{office}{seq:07d}" if seq == FUNDING else f"04{office}{seq:07d}"
        first = self._office_checks.get(office)
        if first is None:
            first = self._office_checks[office] = str(_check_digit(BN_BANK_CODE + office))
        return number, f"{BN_BANK_CODE}{office}{number}{first}{_check_digit(number)}"

    def append_line(self, acct: int, line_type: int, amount: int, t: int, ref: int) -> int:
        """Post a statement line and move the account's balance; return the line's seq."""
        seq = len(self.ln_type)
        balance = self.acc_balance[acct] + amount
        self.acc_balance[acct] = balance
        self.ln_acct.append(acct)
        self.ln_type.append(line_type)
        self.ln_amount.append(amount)
        self.ln_balance.append(balance)
        self.ln_time.append(t)
        self.ln_ref.append(ref)
        self.ln_prev.append(self.acc_last_line[acct])
        self.acc_last_line[acct] = seq
        return seq

    def _run_until(self, target: int) -> None:
        """Run every settlement and household move due up to ``target``, in time order."""
        households = self.households
        heap = self.settle_heap
        while True:
            next_batch = heap[0][0] if heap else math.inf
            next_hour = households.next_due_hour()
            next_move = next_hour * HOUR if next_hour is not None else math.inf
            first = min(next_batch, next_move)
            if first > target:
                break
            hour = int(first) // HOUR
            until = min(target, hour * HOUR + HOUR - 1)
            moves = households.take_due(hour, until) if next_hour == hour else []
            settlements: list[tuple[int, int, int]] = []
            while heap and heap[0][0] <= until:
                settlements.append(heapq.heappop(heap))
            run = households.run
            i = 0
            for when, batch_seq, index in settlements:
                limit = when << 32  # moves due strictly before a settlement run first
                while i < len(moves) and moves[i] < limit:
                    self.now = moves[i] >> 32
                    run(moves[i])
                    i += 1
                self.now = when
                batch = self.batches[batch_seq]
                self._settle(batch, batch.tranches[index][1], when)
            for packed in moves[i:]:
                self.now = packed >> 32
                run(packed)
            if until == target:
                break  # whatever is left in this hour is due after the target
        self.now = target

    def _settle(self, b: SimBatch, upto: int, t: int) -> None:
        """Settle a batch's items up to index ``upto``: credit or reject each, once."""
        if upto <= b.settled:
            return
        first, end = b.start + b.settled, b.start + upto
        limit = self.config.item_amount_limit
        acc_status, acc_dni = self.acc_status, self.acc_dni
        item_acct, item_dni, item_amount, item_ref = (
            self.item_acct,
            self.item_dni,
            self.item_amount,
            self.item_ref,
        )
        item_status, item_reason, item_settled, item_line = (
            self.item_status,
            self.item_reason,
            self.item_settled,
            self.item_line,
        )
        credited_refs = self.credited_refs
        append_line = self.append_line
        on_credit = self.households.on_credit
        reject_ppm = b.reject_ppm
        reject_salt = hash_ints(self.seed, 0x2E1EC7)
        credited_n = credited_amount = rejected_n = rejected_amount = 0
        for i in range(first, end):
            a = item_acct[i]
            amount = item_amount[i]
            ref = item_ref[i]
            if a < 0:
                reason = R_NOT_FOUND
            elif acc_status[a]:
                reason = R_CLOSED
            elif item_dni[i] != acc_dni[a]:
                reason = R_DNI
            elif amount > limit:
                reason = R_LIMIT
            elif ref in credited_refs:
                reason = R_DUPLICATE
            elif reject_ppm and mix64(reject_salt ^ i) % 1_000_000 < reject_ppm:
                reason = R_PROCESSING
            else:
                reason = 0
            item_settled[i] = t
            if reason:
                item_status[i] = REJECTED
                item_reason[i] = reason
                rejected_n += 1
                rejected_amount += amount
            else:
                item_status[i] = CREDITED
                credited_refs[ref] = i
                item_line[i] = append_line(a, 0, amount, t, i)
                on_credit(a, amount, t)
                credited_n += 1
                credited_amount += amount
        if credited_amount:
            append_line(FUNDING, self.LT_PROGRAM_DEBIT, -credited_amount, t, b.seq)
        b.hold -= credited_amount + rejected_amount
        self.held_total -= credited_amount + rejected_amount
        b.credited_count += credited_n
        b.credited_amount += credited_amount
        b.rejected_count += rejected_n
        b.rejected_amount += rejected_amount
        b.settled = upto
        if upto == b.count:
            b.settled_at = t
        batch = self.batch_json(b.seq)
        self._event(0, b.seq, first, end, t, batch)
        if upto == b.count:
            self._event(1, b.seq, 0, 0, t, batch)

    def _event(self, kind: int, batch: int, first: int, end: int, t: int, batch_json: dict[str, Any]) -> None:
        self.events.append((kind, batch, first, end, t, batch_json))
        self.ev_state.append(0)

    # --- views (JSON objects of the interface) -------------------------------------------------------

    def account_json(self, seq: int) -> dict[str, Any]:
        """The interface's ``account`` object."""
        number, cci = self.account_codes(seq)
        closed = self.acc_closed[seq]
        return {
            "id": ids.ACCOUNT.encode(seq),
            "object": "account",
            "account_number": number,
            "cci": cci,
            "dni": f"{self.acc_dni[seq]:08d}",
            "name": self.acc_name[seq],
            "ubigeo": f"{self.acc_ubigeo[seq]:06d}",
            "status": "closed" if self.acc_status[seq] else "open",
            "balance": self.acc_balance[seq],
            "opened_at": self.clock.iso(self.acc_opened[seq]),
            "closed_at": self.clock.iso(closed) if closed >= 0 else None,
        }

    def funding_json(self) -> dict[str, Any]:
        """The interface's ``funding_account`` object."""
        number, cci = self.account_codes(FUNDING)
        holds = [
            {
                "id": ids.HOLD.encode(b.seq),
                "batch_id": ids.BATCH.encode(b.seq),
                "amount": b.hold,
                "created_at": self.clock.iso(b.created_at),
            }
            for b in self.batches
            if b.hold
        ]
        held = sum(b.hold for b in self.batches if b.hold)
        balance = self.acc_balance[FUNDING]
        return {
            "id": ids.ACCOUNT.encode(FUNDING),
            "object": "funding_account",
            "account_number": number,
            "cci": cci,
            "name": self.acc_name[FUNDING],
            "balance": balance,
            "held": held,
            "available": balance - held,
            "holds": holds,
        }

    def batch_json(self, seq: int) -> dict[str, Any]:
        """The interface's ``credit_batch`` object."""
        b = self.batches[seq]
        return {
            "id": ids.BATCH.encode(seq),
            "object": "credit_batch",
            "reference": b.reference,
            "status": b.status,
            "description": b.description,
            "item_count": b.count,
            "control_amount": b.control_amount,
            "credited_count": b.credited_count,
            "credited_amount": b.credited_amount,
            "rejected_count": b.rejected_count,
            "rejected_amount": b.rejected_amount,
            "pending_count": b.count - b.settled,
            "created_at": self.clock.iso(b.created_at),
            "settled_at": self.clock.iso(b.settled_at) if b.settled_at >= 0 else None,
        }

    def item_json(self, i: int) -> dict[str, Any]:
        """The interface's ``credit_item`` object."""
        status = self.item_status[i]
        acct = self.item_acct[i]
        line = self.item_line[i]
        settled = self.item_settled[i]
        return {
            "id": ids.ITEM.encode(i),
            "object": "credit_item",
            "batch_id": ids.BATCH.encode(self.item_batch[i]),
            "reference": self.item_ref[i],
            "account_id": ids.ACCOUNT.encode(acct) if acct >= 0 else None,
            "amount": self.item_amount[i],
            "status": STATUS_NAMES[status],
            "reason": REASON_NAMES[self.item_reason[i]],
            "settled_at": self.clock.iso(settled) if settled >= 0 else None,
            "statement_line_id": ids.LINE.encode(line) if line >= 0 else None,
        }

    def items_json(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """:meth:`item_json` for many items, column by column (a page of 1,000 is built in a few ms)."""
        item_id, account_id, line_id, iso = (
            ids.ITEM.encode,
            ids.ACCOUNT.encode,
            ids.LINE.encode,
            self.clock.iso,
        )
        acct_col, line_col, settled_col, batch_col = (
            self.item_acct,
            self.item_line,
            self.item_settled,
            self.item_batch,
        )
        status_col, reason_col, ref_col, amount_col = (
            self.item_status,
            self.item_reason,
            self.item_ref,
            self.item_amount,
        )
        batch_ids = {b: ids.BATCH.encode(b) for b in {batch_col[i] for i in indices}}
        return [
            {
                "id": item_id(i),
                "object": "credit_item",
                "batch_id": batch_ids[batch_col[i]],
                "reference": ref_col[i],
                "account_id": account_id(a) if (a := acct_col[i]) >= 0 else None,
                "amount": amount_col[i],
                "status": STATUS_NAMES[status_col[i]],
                "reason": REASON_NAMES[reason_col[i]],
                "settled_at": iso(t) if (t := settled_col[i]) >= 0 else None,
                "statement_line_id": line_id(n) if (n := line_col[i]) >= 0 else None,
            }
            for i in indices
        ]

    def line_json(self, seq: int) -> dict[str, Any]:
        """The interface's ``statement_line`` object."""
        line_type = self.ln_type[seq]
        ref = self.ln_ref[seq]
        t = self.ln_time[seq]
        reference = None
        reverses = None
        if line_type == self.LT_PROGRAM_CREDIT:
            reference = self.item_ref[ref]
        elif line_type == self.LT_PROGRAM_DEBIT:
            reference = self.batches[ref].reference
        elif line_type == self.LT_REVERSAL:
            reverses = ids.LINE.encode(ref)
        elif seq in self.line_refs:
            reference = self.line_refs[seq]
        return {
            "id": ids.LINE.encode(seq),
            "object": "statement_line",
            "account_id": ids.ACCOUNT.encode(self.ln_acct[seq]),
            "value_date": self.clock.date_iso(t),
            "posted_at": self.clock.iso(t),
            "type": LINE_TYPES[line_type],
            "amount": self.ln_amount[seq],
            "balance_after": self.ln_balance[seq],
            "reference": reference,
            "reverses": reverses,
        }

    def event_json(self, seq: int) -> dict[str, Any]:
        """The interface's ``event`` object (its items as they are now: final, so unchanged)."""
        kind, _batch, first, end, t, batch_json = self.events[seq]
        return {
            "id": ids.EVENT.encode(seq),
            "object": "event",
            "type": EVENT_TYPES[kind],
            "created_at": self.clock.iso(t),
            "data": {"batch": batch_json, "items": self.items_json(range(first, end))},
        }

    def clock_json(self) -> dict[str, Any]:
        """The simulated clock's state."""
        return {
            "now": self.clock.iso(self.now),
            "seconds": self.now,
            "pending_settlements": len(self.settle_heap),
            "pending_household_moves": self.households.pending_count(),
        }

    # --- queries -------------------------------------------------------------------------------------

    def account_seq(self, account_id: str, *, allow_funding: bool = False) -> int:
        """The seq of an account id; 404 if unknown (the funding account only when allowed)."""
        seq = ids.ACCOUNT.decode(account_id)
        if seq is None or seq >= len(self.acc_name) or (seq == FUNDING and not allow_funding):
            raise not_found("account", account_id)
        return seq

    def batch_seq(self, batch_id: str) -> int:
        """The seq of a batch id; 404 if unknown."""
        seq = ids.BATCH.decode(batch_id)
        if seq is None or seq >= len(self.batches):
            raise not_found("credit batch", batch_id)
        return seq

    def item_seq(self, item_id: str) -> int:
        """The seq of an item id; 404 if unknown."""
        seq = ids.ITEM.decode(item_id)
        if seq is None or seq >= len(self.item_ref):
            raise not_found("credit item", item_id)
        return seq

    def account_lines(self, seq: int) -> list[int]:
        """Every statement line seq of one account, oldest first."""
        out = []
        line = self.acc_last_line[seq]
        prev = self.ln_prev
        while line >= 0:
            out.append(line)
            line = prev[line]
        out.reverse()
        return out

    def stats_json(self) -> dict[str, Any]:
        """Counters: accounts, items by status, lines, events, replays, conflicts, faults."""
        counts = [0, 0, 0]
        for status in (PENDING, CREDITED, REJECTED):
            counts[status] = self.item_status.count(status)
        return {
            "seed": self.seed,
            "now": self.clock.iso(self.now),
            "accounts": len(self.acc_name) - 1,
            "open_accounts": len(self.dni_index),
            "batches": len(self.batches),
            "items": {"total": len(self.item_ref), **dict(zip(STATUS_NAMES, counts, strict=True))},
            "statement_lines": len(self.ln_type),
            "events": len(self.events),
            "events_undelivered": self.ev_state.count(0),
            "pending_household_moves": self.households.pending_count(),
            "replays": self.stats.replays,
            "idempotency_conflicts": self.stats.idempotency_conflicts,
            "batch_reference_conflicts": self.stats.batch_reference_conflicts,
            "refused_batches": self.stats.refused_batches,
            "faults_injected": dict(self.stats.faults),
            "webhook_deliveries": self.stats.webhook_deliveries,
            "webhook_failures": self.stats.webhook_failures,
            "settlement_faults": self.settlement.to_json(),
        }
