"""The simulated bank's state and rules, without HTTP: accounts, credit batches, settlement, statements.

State changes happen only through :meth:`SimulatedBank.execute` with a *command* (a JSON-able dict). A
successful command is handed to the journal, and replaying the journal's commands on a fresh bank with the
same seed rebuilds exactly the same state, because every random choice is a hash of the seed and of facts in
the commands. That is how the simulator survives a restart (``store.py``) and why a run is reproducible.

Bulk data is kept in columns (``array`` and ``bytearray``, one entry per account, item or statement line;
names and references in chunks the garbage collector does not walk, ``columns.py``) rather than one Python
object each: a million households, a million items and a few million statement lines fit in a few hundred
megabytes. Commands on many items (a batch, a bulk opening, a settlement, an hour of household moves) work a
column or a whole list at a time, and pages are written as JSON straight from the columns, so a million
items are submitted, settled and read back in seconds; each bulk path gives exactly what the one-at-a-time
definition next to it gives (``tests/adapters/bank/test_bank_sim_bulk.py``).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
import re
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from adapters.bank.simulator import ids
from adapters.bank.simulator.clock import DEFAULT_START, SimClock
from adapters.bank.simulator.columns import StringColumn
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
_JSON_PLAIN = re.compile(r'[^"\\\x00-\x1f]*')
"""Text that JSON writes between quotes as it is (no character to escape)."""
_REASONS_JSON: Final = tuple("null" if r is None else f'"{r}"' for r in REASON_NAMES)


@functools.cache
def _serial_sums() -> tuple[list[int], list[int]]:
    """Weighted digit sums of an account number's serial (its last 7 digits, weights 2, 1, 2, 1, 2, 1, 2).

    ``high[serial // 1000] + low[serial % 1000]``: the first 4 digits (weights 2, 1, 2, 1) and the last 3
    (weights 2, 1, 2), as :func:`_check_digit` counts them at positions 5 to 11 of the number.
    """
    doubled = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]
    high = [doubled[h // 1000] + h // 100 % 10 + doubled[h // 10 % 10] + h % 10 for h in range(10_000)]
    low = [doubled[x // 100] + x // 10 % 10 + doubled[x % 10] for x in range(1000)]
    return high, low


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
        journal: called with the JSON of every successful state-changing command (not while replaying).
    """

    LT_PROGRAM_CREDIT, LT_PROGRAM_DEBIT, LT_WITHDRAWAL_AGENT, LT_WITHDRAWAL_ATM = 0, 1, 2, 3
    LT_WITHDRAWAL_BRANCH, LT_DEPOSIT, LT_FEE, LT_REVERSAL = 4, 5, 6, 7

    def __init__(
        self,
        config: SimConfig,
        settlement: SettlementFaults | None = None,
        journal: Callable[[bytes], None] | None = None,
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
        self.acc_name = StringColumn()
        self.item_ref = StringColumn()
        self.line_refs: dict[int, str] = {}  # our reference on funding deposits
        self.batches: list[SimBatch] = []
        self.events: list[tuple[int, int, int, int, int, dict[str, Any]]] = []
        self.idempotency: dict[str, IdempotencyRecord] = {}
        self.dni_index: dict[int, int] = {}
        self.batch_by_ref: dict[str, int] = {}
        # References of credited items. A dict of strings (to None), not a set: the garbage collector never
        # tracks a dict of atomic values, while it walks every entry of a set at each full collection.
        self.credited_refs: dict[str, None] = {}
        self.settle_heap: list[tuple[int, int, int]] = []
        self._office_checks: dict[str, str] = {}
        self.held_total = 0
        self._add_account(0, config.program_name, 150101, 0)  # the funding account, at the Lima head office

    # --- commands ------------------------------------------------------------------------------------

    def execute(
        self, cmd: dict[str, Any], *, replaying: bool = False, encoded: bytes | None = None
    ) -> tuple[int, bytes, bool]:
        """Apply a command; return (HTTP status, JSON body, whether it was an idempotent replay).

        A handler returns its answer as a JSON-able object, or already rendered as JSON bytes (bulk answers).
        ``encoded`` is the command as JSON when the caller has it already (it goes to the journal as it is).

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
        body = result if isinstance(result, bytes) else orjson.dumps(result)
        if key is not None:
            self.idempotency[key] = IdempotencyRecord(cmd["fingerprint"], status, body, cmd["op"])
        if self.journal is not None and not replaying:
            self.journal(encoded if encoded is not None else orjson.dumps(cmd))
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

    def _op_bulk_accounts(self, cmd: dict[str, Any]) -> tuple[int, bytes]:
        rows: Sequence[Sequence[str]] = cmd["rows"]  # lists when replayed from the journal, else tuples
        self._check_capacity(len(rows))
        index = self.dni_index
        first = len(self.acc_name)
        dnis = list(map(int, [row[0] for row in rows]))
        if index.keys().isdisjoint(dnis) and len(set(dnis)) == len(dnis):
            # Only new titulars, each once (seeding a world): every row opens an account, in order.
            seqs: Sequence[int] = range(first, first + len(rows))
            created = [True] * len(rows)
            index.update(zip(dnis, seqs, strict=True))
            self._add_accounts(first, dnis, [row[1] for row in rows], [int(row[2]) for row in rows], self.now)
        else:
            seq = first
            seqs = []
            created = []
            new_dni: list[int] = []
            new_name: list[str] = []
            new_ubigeo: list[int] = []
            for dni, (_, name, ubigeo) in zip(dnis, rows, strict=True):
                existing = index.get(dni)
                if existing is None:
                    index[dni] = seq
                    seqs.append(seq)
                    created.append(True)
                    new_dni.append(dni)
                    new_name.append(name)
                    new_ubigeo.append(int(ubigeo))
                    seq += 1
                else:
                    seqs.append(existing)
                    created.append(False)
            self._add_accounts(first, new_dni, new_name, new_ubigeo, self.now)
        numbers, ccis = self.accounts_codes(seqs)
        data = ",".join(
            [
                f'{{"dni":"{row[0]}","account_id":"{account_id}","account_number":"{number}","cci":"{cci}",'
                f'"created":{"true" if new else "false"}}}'
                for row, account_id, number, cci, new in zip(
                    rows, ids.ACCOUNT.encode_many(seqs), numbers, ccis, created, strict=True
                )
            ]
        )
        return 200, f'{{"object":"list","data":[{data}],"has_more":false,"next_cursor":null}}'.encode()

    def _op_close_account(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        seq = int(cmd["account"])
        if seq == FUNDING:
            raise SimError(409, "invalid_request_error", "account_not_closable", "the funding account cannot be closed")
        if self.acc_status[seq]:
            raise SimError(409, "invalid_request_error", "account_closed", "the account is already closed")
        self.households.react()  # the account's credits raised its target before it closed
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
        if cmd.get("brief"):
            # A lookup's advance (``Simulator.auto_advance``) needs no answer; the clock's state counts the
            # households' pending moves, which would make them react to every credit before its time.
            return 200, {"seconds": self.now}
        return 200, self.clock_json()

    def _op_submit_batch(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = cmd["body"]
        reference: str = body["reference"]
        items: Sequence[Sequence[Any]] = body["items"]
        count = len(items)
        refs, dnis, amounts, numbers, ccis = zip(*items, strict=True) if items else ((),) * 5
        total = sum(amounts)
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
        for i, cci in enumerate(ccis):
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
        self.item_ref.extend(refs)
        self.item_batch.extend(array("I", [seq]) * count)
        self.item_acct.extend(self.resolve_accounts(numbers, ccis))
        self.item_dni.extend(map(int, dnis))
        self.item_amount.extend(amounts)
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

    def _add_accounts(self, first: int, dnis: list[int], names: list[str], ubigeos: list[int], t: int) -> None:
        """Append accounts ``first``, ``first + 1``... (their DNIs are already in ``dni_index``)."""
        n = len(dnis)
        if not n:
            return
        assert first == len(self.acc_name) != FUNDING
        self.acc_name.extend(names)
        self.acc_dni.extend(dnis)
        self.acc_ubigeo.extend(ubigeos)
        self.acc_opened.extend(array("q", [t]) * n)
        self.acc_closed.extend(array("q", [-1]) * n)
        self.acc_balance.extend(array("q", [0]) * n)
        self.acc_target.extend(array("q", [0]) * n)
        self.acc_last_line.extend(array("q", [-1]) * n)
        self.acc_credits.extend(array("I", [0]) * n)
        self.acc_status.extend(bytes(n))
        self.acc_profile.extend(self.households.profiles(first, first + n))

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

    def next_settlement(self, batch: int | None = None) -> int | None:
        """When the next settlement is due (simulated second): of batch seq ``batch``, or of any batch when
        None; None when nothing is left to settle."""
        if batch is None:
            return self.settle_heap[0][0] if self.settle_heap else None
        b = self.batches[batch]
        return next((when for when, upto in b.tranches if upto > b.settled), None)

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

    def resolve_accounts(self, numbers: Sequence[str | None], ccis: Sequence[str | None]) -> list[int]:
        """:meth:`resolve_account` for the items of a batch (their account numbers and CCIs, one of each None)."""
        known = len(self.acc_name)
        ubigeo_col = self.acc_ubigeo
        offices: dict[int, str] = {}  # ubigeo -> office, as the account number writes it
        out: list[int] = []
        for given, cci in zip(numbers, ccis, strict=True):
            if cci is not None:
                number = cci[6:18]
                if cci[3:6] != number[2:5]:
                    out.append(-1)
                    continue
            elif given is not None:
                number = given
            else:
                out.append(-1)
                continue
            if number[:2] != "04":
                out.append(-1)
                continue
            seq = int(number[5:])
            if not 0 < seq < known:
                out.append(-1)
                continue
            ubigeo = ubigeo_col[seq]
            office = offices.get(ubigeo)
            if office is None:
                office = offices[ubigeo] = f"{ubigeo // 10000 * 10 + (ubigeo // 100) % 10:03d}"
            out.append(seq if number[2:5] == office else -1)
        return out

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

    def accounts_codes(self, seqs: Sequence[int]) -> tuple[list[str], list[str]]:
        """(account numbers, CCIs) of many accounts: :meth:`account_codes` in one pass.

        An account number is ``04`` + office + a 7-digit serial, so the CCI's second check digit is the sum
        of the office's weighted digits and of the serial's, both from small tables (``_serial_sums``).
        """
        if any(seq == FUNDING or seq >= 10_000_000 for seq in (min(seqs, default=1), max(seqs, default=1))):
            codes = [self.account_codes(seq) for seq in seqs]
            return [c[0] for c in codes], [c[1] for c in codes]
        ubigeo_col = self.acc_ubigeo
        ubigeos = [ubigeo_col[seq] for seq in seqs]
        leads: dict[int, str] = {}  # ubigeo -> "04" + office
        heads: dict[int, str] = {}  # ubigeo -> the CCI's bank and office
        firsts: dict[int, str] = {}  # ubigeo -> the CCI's first check digit
        sums: dict[int, int] = {}  # ubigeo -> weighted digit sum of "04" + office
        for ubigeo in set(ubigeos):
            office = f"{ubigeo // 10000:02d}{(ubigeo // 100) % 10}"
            first = self._office_checks.get(office)
            if first is None:
                first = self._office_checks[office] = str(_check_digit(BN_BANK_CODE + office))
            lead = leads[ubigeo] = f"04{office}"
            heads[ubigeo] = BN_BANK_CODE + office
            firsts[ubigeo] = first
            sums[ubigeo] = sum((lead[0::2] + lead[1::2].translate(_DOUBLED)).encode()) - 48 * len(lead)
        high, low = _serial_sums()
        numbers = [f"{leads[u]}{seq:07d}" for u, seq in zip(ubigeos, seqs, strict=True)]
        ccis = [
            f"{heads[u]}{number}{firsts[u]}{(10 - (sums[u] + high[seq // 1000] + low[seq % 1000]) % 10) % 10}"
            for u, seq, number in zip(ubigeos, seqs, numbers, strict=True)
        ]
        return numbers, ccis

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
            run_many = households.run_many
            i = 0
            for when, batch_seq, index in settlements:
                limit = when << 32  # moves due strictly before a settlement run first
                j = bisect.bisect_left(moves, limit, i)
                if j > i:
                    self.now = moves[j - 1] >> 32
                    run_many(moves[i:j])
                    i = j
                self.now = when
                batch = self.batches[batch_seq]
                self._settle(batch, batch.tranches[index][1], when)
            if i < len(moves):
                self.now = moves[-1] >> 32
                run_many(moves[i:] if i else moves)
            if until == target:
                break  # whatever is left in this hour is due after the target
        self.now = target

    def _settle(self, b: SimBatch, upto: int, t: int) -> None:
        """Settle a batch's items up to index ``upto``: credit or reject each, once.

        One loop over the items with every column bound locally; the credits' statement lines are posted as
        :meth:`append_line` would (same seqs, balances and chains), and the households react to the credits
        afterwards, in item order (their reaction reads nothing the lines change).
        """
        if upto <= b.settled:
            return
        first, end = b.start + b.settled, b.start + upto
        limit = self.config.item_amount_limit
        acc_status, acc_dni, acc_balance, acc_last_line = (
            self.acc_status,
            self.acc_dni,
            self.acc_balance,
            self.acc_last_line,
        )
        item_acct, item_dni, item_amount = self.item_acct, self.item_dni, self.item_amount
        refs = self.item_ref[first:end]
        item_status, item_reason, item_line = self.item_status, self.item_reason, self.item_line
        credited_refs = self.credited_refs
        reject_ppm = b.reject_ppm
        reject_salt = hash_ints(self.seed, 0x2E1EC7)
        line = len(self.ln_type)
        accounts: list[int] = []
        amounts: list[int] = []
        items: list[int] = []
        balances: list[int] = []
        previous: list[int] = []
        rejected_n = rejected_amount = 0
        for i in range(first, end):
            a = item_acct[i]
            amount = item_amount[i]
            ref = refs[i - first]
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
                item_status[i] = CREDITED
                credited_refs[ref] = None
                balance = acc_balance[a] + amount
                acc_balance[a] = balance
                previous.append(acc_last_line[a])
                acc_last_line[a] = line
                item_line[i] = line
                line += 1
                accounts.append(a)
                amounts.append(amount)
                items.append(i)
                balances.append(balance)
                continue
            item_status[i] = REJECTED
            item_reason[i] = reason
            rejected_n += 1
            rejected_amount += amount
        self.item_settled[first:end] = array("q", [t]) * (end - first)
        credited_n = len(accounts)
        credited_amount = sum(amounts)
        if credited_n:
            self.ln_acct.extend(accounts)
            self.ln_type.extend(bytes(credited_n))  # LT_PROGRAM_CREDIT
            self.ln_amount.extend(amounts)
            self.ln_balance.extend(balances)
            self.ln_time.extend(array("q", [t]) * credited_n)
            self.ln_ref.extend(items)
            self.ln_prev.extend(previous)
            self.households.on_credits(accounts, amounts, t)
        if credited_amount:
            self.append_line(FUNDING, self.LT_PROGRAM_DEBIT, -credited_amount, t, b.seq)
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
        status_col, reason_col, amount_col = self.item_status, self.item_reason, self.item_amount
        low = min(indices, default=0)
        span = self.item_ref[low : max(indices, default=-1) + 1]
        batch_ids = {b: ids.BATCH.encode(b) for b in {batch_col[i] for i in indices}}
        return [
            {
                "id": item_id(i),
                "object": "credit_item",
                "batch_id": batch_ids[batch_col[i]],
                "reference": span[i - low],
                "account_id": account_id(a) if (a := acct_col[i]) >= 0 else None,
                "amount": amount_col[i],
                "status": STATUS_NAMES[status_col[i]],
                "reason": REASON_NAMES[reason_col[i]],
                "settled_at": iso(t) if (t := settled_col[i]) >= 0 else None,
                "statement_line_id": line_id(n) if (n := line_col[i]) >= 0 else None,
            }
            for i in indices
        ]

    def items_page(self, indices: Sequence[int], has_more: bool) -> bytes:
        """A page (``list`` object) of ``credit_item`` objects as JSON bytes.

        The bytes are those ``orjson`` writes for :meth:`items_json` in a page, written from the columns with
        one f-string per item instead of a dict per item, the ids made a page at a time
        (:meth:`~adapters.bank.simulator.ids.IdCodec.encode_many`). A page of a settled batch whose items
        were all credited (the usual page) has its constant parts written once. References never need
        escaping (the interface restricts them to letters, digits and ``_ . : / -``); should one ever need
        it, the page is written by ``orjson`` instead.
        """
        n = len(indices)
        if isinstance(indices, range) and indices.step == 1:
            first, end = indices.start, indices.stop
            refs = self.item_ref[first:end]
            accounts: Sequence[int] = self.item_acct[first:end]
            lines: Sequence[int] = self.item_line[first:end]
            statuses: Sequence[int] = self.item_status[first:end]
            settled: Sequence[int] = self.item_settled[first:end]
            amounts: Sequence[int] = self.item_amount[first:end]
            batches: Sequence[int] = self.item_batch[first:end]
        else:
            low = min(indices, default=0)
            span = self.item_ref[low : max(indices, default=-1) + 1]
            refs = [span[i - low] for i in indices]
            accounts = [self.item_acct[i] for i in indices]
            lines = [self.item_line[i] for i in indices]
            statuses = bytes([self.item_status[i] for i in indices])
            settled = [self.item_settled[i] for i in indices]
            amounts = [self.item_amount[i] for i in indices]
            batches = [self.item_batch[i] for i in indices]
        if not n or not _JSON_PLAIN.fullmatch("".join(refs)):
            objects = self.items_json(indices)
            cursor = objects[-1]["id"] if has_more and objects else None
            return orjson.dumps({"object": "list", "data": objects, "has_more": has_more, "next_cursor": cursor})
        iso = self.clock.iso
        item_ids = ids.ITEM.encode_many(indices)
        account_ids = ids.ACCOUNT.encode_many(accounts)
        line_ids = ids.LINE.encode_many(lines)
        if (
            statuses.count(CREDITED) == n  # credited: an account, a statement line, a settlement time
            and min(batches) == max(batches)
            and min(settled) == max(settled)
        ):
            head = f'","object":"credit_item","batch_id":"{ids.BATCH.encode(batches[0])}","reference":"'
            tail = f',"status":"credited","reason":null,"settled_at":"{iso(settled[0])}","statement_line_id":"'
            data = ",".join(
                [
                    f'{{"id":"{item}{head}{ref}","account_id":"{account}","amount":{amount}{tail}{line}"}}'
                    for item, ref, account, amount, line in zip(
                        item_ids, refs, account_ids, amounts, line_ids, strict=True
                    )
                ]
            )
        else:
            reasons_col = self.item_reason
            reasons = [_REASONS_JSON[reasons_col[i]] for i in indices]
            stamps: dict[int, str] = {t: f'"{iso(t)}"' for t in set(settled) if t >= 0}
            stamps[-1] = "null"
            batch_ids = {b: ids.BATCH.encode(b) for b in set(batches)}
            account_json = [f'"{text}"' if a >= 0 else "null" for text, a in zip(account_ids, accounts, strict=True)]
            line_json = [f'"{text}"' if x >= 0 else "null" for text, x in zip(line_ids, lines, strict=True)]
            data = ",".join(
                [
                    f'{{"id":"{item_ids[k]}","object":"credit_item","batch_id":"{batch_ids[batches[k]]}",'
                    f'"reference":"{refs[k]}","account_id":{account_json[k]},"amount":{amounts[k]},'
                    f'"status":"{STATUS_NAMES[statuses[k]]}","reason":{reasons[k]},'
                    f'"settled_at":{stamps[settled[k]]},"statement_line_id":{line_json[k]}}}'
                    for k in range(n)
                ]
            )
        next_cursor = f'"{item_ids[-1]}"' if has_more else "null"
        has_more_json = "true" if has_more else "false"
        return f'{{"object":"list","data":[{data}],"has_more":{has_more_json},"next_cursor":{next_cursor}}}'.encode()

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

    def savings_json(self, monthly_transfer: int = 100_00) -> dict[str, Any]:
        """What households kept in their accounts, as the savings pilot measured it.

        Over accounts that received at least one program credit: how many keep a balance, their average
        balance, and that average as a share of the monthly transfer (the pilot: 21% of users saved, keeping
        on average 5.7% of the monthly transfer), overall and by distance to a pay point.
        """
        from adapters.bank.simulator.households import FAR

        self.households.react()  # the credit counts
        groups = {"near": [0, 0, 0], "far": [0, 0, 0]}  # credited accounts, savers, savers' total balance
        balance, credits, profile = self.acc_balance, self.acc_credits, self.acc_profile
        for account in range(1, len(balance)):
            if not credits[account]:
                continue
            g = groups["far" if profile[account] & FAR else "near"]
            g[0] += 1
            if balance[account] > 0:
                g[1] += 1
                g[2] += balance[account]

        def summary(accounts: int, savers: int, total: int) -> dict[str, Any]:
            average = total // savers if savers else 0
            return {
                "accounts": accounts,
                "savers": savers,
                "saver_share": savers / accounts if accounts else 0.0,
                "average_saver_balance": average,
                "average_share_of_monthly_transfer": average / monthly_transfer if monthly_transfer else 0.0,
            }

        near, far = groups["near"], groups["far"]
        return {
            **summary(near[0] + far[0], near[1] + far[1], near[2] + far[2]),
            "monthly_transfer": monthly_transfer,
            "near": summary(*near),
            "far": summary(*far),
        }

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
