"""Executing a payment run exactly once, through crashes and bank faults.

Every step is recorded in the database before anything leaves the process, and ``execute`` (or
``resume``: the same thing) reads those records and continues each batch from where it is; it never trusts
memory:

1. **Hold** (one transaction): for every *planned* batch, a pending ledger transfer moves the batch total
   from the program fund to its in-transit account (bulk path, one chunk key per run); batches become
   *held*. The fund's ``no_overdraft`` guard refuses a run it cannot cover.
2. **Submit**: a batch is marked *submitting* (attempt + 1) and committed, then sent with control totals
   and the idempotency key ``run:<run>:batch:<n>``. An unknown outcome (timeout after sending) is resolved
   by looking the batch up by our reference and resending only if the bank never saw it, with the same key
   and the same content (``submit_or_recover``). The acknowledgement makes it *acknowledged*.
3. **Settle**, beside submission (a batch is settled as soon as the bank has settled it, while later
   batches are still being sent): acknowledged batches are polled; when a batch is settled its items are
   checked against our snapshot (every reference ours, once, with our amount; contradictions are incidents
   that keep the batch open, the others settle, then the execution stops naming it) and applied, several
   batches per transaction: each batch's hold is posted for exactly the credited total (the rest is
   released to the fund), the credited items move from in-transit to each household's savings account (bulk
   path: one transfer per batch, as the bank posts it, with a posting per household), each payment's
   outcome is recorded (an append-only row, once: its primary key), rejected payments release their
   entitlements to accrue again, and the batch is *closed*.

A session advisory lock makes a second executor of the same run wait; the states above make even two
executors safe, and every ledger write has a key derived from the run, so a replay changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import structlog

from ledger import bulk
from ledger.db import Connection
from ledger.engine import Ledger, Resolution
from ledger.errors import AppError, InsufficientFunds
from ledger.models import NormalBalance
from services.collector import batch_collector
from services.db import DatabasePort
from services.payments import repository as repo
from services.payments.errors import (
    RunBusy,
    RunIncident,
    RunNotApproved,
    RunNotFunded,
    RunStateError,
    resume_hint,
    show_hint,
    still_creating,
)
from services.payments.programs_link import program_context
from services.ports.bank import (
    MAX_BATCH_ITEMS,
    BankAmbiguousError,
    BankPermanentError,
    BankPort,
    BankRetryableError,
    Batch,
    BatchStatus,
    ItemOutcome,
    ItemStatus,
    RejectReason,
    RenderedCreditBatch,
    submit_or_recover,
)

log = structlog.get_logger(__name__)
_LOCK_CLASS = 0x5041  # advisory lock namespace of payment runs


class Progress(Protocol):
    """Where an executor reports progress (the CLI shows bars; tests and the API ignore it)."""

    def start(self, phase: str, total: int) -> None: ...

    def advance(self, phase: str, amount: int = 1) -> None: ...


class NoProgress:
    def start(self, phase: str, total: int) -> None:
        return None

    def advance(self, phase: str, amount: int = 1) -> None:
        return None


MAX_SETTLE_GROUP = bulk.MAX_CHUNK // MAX_BATCH_ITEMS
"""The most settled batches one ledger transaction applies: their credits are one bulk chunk."""
_OPEN_AHEAD_BATCHES = 20  # batches whose households' accounts are opened per transaction, ahead of settlement


@dataclass(frozen=True)
class ExecuteOptions:
    """Tuning of an execution.

    Attributes:
        concurrency: bank requests in flight (batch submissions or lookups).
        settle_group: settled batches applied per ledger transaction.
        apply_workers: ledger transactions applying settled groups at once (each on its own connection).
        poll_interval: seconds to wait after a polling round that applied nothing (while batches are still
            being submitted: until the next acknowledgement, at most this long, at least 50 ms).
        settle_timeout: once every batch is submitted, stop waiting for the bank after this many seconds
            without a batch settled (resume later).
        submit_rounds: passes over unsubmitted batches before giving up for now.
        lock_wait: seconds to wait for another executor of the same run.
    """

    concurrency: int = 8
    settle_group: int = 10
    apply_workers: int = 4
    poll_interval: float = 0.2
    settle_timeout: float = 3600.0
    submit_rounds: int = 6
    lock_wait: float = 600.0

    def __post_init__(self) -> None:
        if not 1 <= self.settle_group <= MAX_SETTLE_GROUP:
            raise ValueError(
                f"settle_group must be 1 to {MAX_SETTLE_GROUP} (a group's credits are one ledger chunk of at most "
                f"{bulk.MAX_CHUNK:,} legs, {MAX_BATCH_ITEMS:,} a batch), got {self.settle_group}"
            )

    @classmethod
    def from_settings(cls, settings: Any) -> ExecuteOptions:
        """Options from ``CCT_RUN_*`` settings."""
        return cls(
            concurrency=settings.run_concurrency,
            settle_group=settings.run_settle_group,
            apply_workers=settings.run_apply_workers,
            poll_interval=settings.run_poll_seconds,
        )


@dataclass
class _Settled:
    batch: dict[str, Any]
    bank: Batch
    # Plain tuples, not models: a batch's items wait for their group to be applied, and a tuple of strings
    # and numbers leaves the collector's lists at its first collection, where a model with its dictionary,
    # field set and time zone would be walked (and promoted) as four objects.
    items: list[ItemOutcome] = field(default_factory=list)
    payments: list[Mapping[str, Any]] = field(default_factory=list)  # our snapshot, read by the check


@dataclass
class _Checked:
    """A settled batch whose items agree with the snapshot, as the ledger and the outcomes need it."""

    settled: _Settled
    outcomes: list[tuple[int, str, str | None, str]]  # payment, status, reason, the bank's item
    credited_ids: list[int]
    credited_amounts: list[int]
    credited_accounts: list[int | None]  # each credited household's ledger account, None if not opened yet
    rejected_ids: list[int]
    rejected_total: int

    @property
    def batch_no(self) -> int:
        return int(self.settled.batch["batch_no"])

    @property
    def totals(self) -> tuple[int, int, int, int, int]:
        """batch number, credited count and total, rejected count and total."""
        ids, amounts = self.credited_ids, self.credited_amounts
        return (self.batch_no, len(ids), sum(amounts), len(self.rejected_ids), self.rejected_total)


_STATUS_TEXT: dict[ItemStatus, str] = {s: s.value for s in ItemStatus}


class RunExecutor:
    """Executes (or resumes) one approved run.

    Args:
        db: pooled connections and units of work.
        bank: the bank port.
        run_id: the run.
        actor: who executes (recorded).
        progress: progress sink.
        options: tuning.
    """

    def __init__(
        self,
        db: DatabasePort,
        bank: BankPort,
        run_id: int,
        actor: str,
        progress: Progress | None = None,
        options: ExecuteOptions | None = None,
    ) -> None:
        self.db = db
        self.bank = bank
        self.run_id = run_id
        self.actor = actor
        self.progress = progress or NoProgress()
        self.options = options or ExecuteOptions()
        self.log = log.bind(run=run_id)
        self._mismatched: set[int] = set()  # batches whose items contradict the snapshot (incidents)
        self._refused: dict[int, str] = {}  # batches the bank refused in this execution -> why (incidents)
        self._acknowledged = asyncio.Event()  # a batch was acknowledged (settlement has work)
        self._transit: int | None = None  # the program's in-transit account, read once per execution

    async def execute(self) -> dict[str, Any]:
        """Run every remaining step; returns the run. Safe to call again at any time (it resumes)."""
        self._mismatched = set()
        self._refused = {}
        self._acknowledged = asyncio.Event()
        self._transit = None
        with batch_collector():
            async with self._locked():
                run = await self._start()
                if run["status"] in ("settled", "closed"):
                    return run
                await self._hold(run)
                await self._submit_and_settle(run)
                done = await self._finish()
                if self._refused:
                    first = min(self._refused)
                    raise RunIncident(
                        f"run {self.run_id}: the bank refused batch(es) {sorted(self._refused)[:20]} (batch "
                        f"{first}: {self._refused[first]}); everything else is settled. Recorded as incidents: "
                        f"see {show_hint(self.run_id)}; once the cause is fixed (e.g. the bank's funding account "
                        f"topped up), {resume_hint(self.run_id)} sends them again",
                        run=self.run_id,
                        batches=sorted(self._refused)[:20],
                    )
                return done

    async def _submit_and_settle(self, run: dict[str, Any]) -> None:
        """Submission and settlement side by side: a batch is settled as soon as the bank has settled it, while
        later batches are still being sent. Submitting is mostly the bank's and this process's work,
        settling mostly the database's, so together they use both. A failure stops both (what was done stays
        done; ``resume`` continues) and is raised as itself, an application error (which says what to do)
        before others; any other failure of the same moment is logged."""
        submitted = asyncio.Event()

        async def submit() -> None:
            try:
                await self._submit_all(run)
            finally:
                submitted.set()
                self._acknowledged.set()  # wakes settlement for its last round

        error: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as steps:
                steps.create_task(submit())
                steps.create_task(self._settle_all(run, submitted))
                steps.create_task(self._open_accounts(run))
        except BaseExceptionGroup as group:
            error, others = _first_error(group)
            for other in others:
                self.log.error("run.concurrent_failure", error=repr(other))
        if error is not None:
            raise error  # outside the handler: its own cause and context, not the group's

    # ------------------------------------------------------------------------------------------- steps
    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """Hold the run's advisory lock (one execution at a time, across processes) for the block.

        The lock lives on a session kept for the whole execution. While another execution holds it, each try
        takes a connection only for the try: a caller waiting its turn does not keep one of the pool's
        connections from the execution it waits for.
        """
        deadline = time.monotonic() + self.options.lock_wait
        while True:
            async with self.db.session() as conn:
                if await conn.fetchval("select pg_try_advisory_lock($1, $2)", _LOCK_CLASS, self.run_id):
                    try:
                        yield
                    finally:
                        await conn.execute("select pg_advisory_unlock($1, $2)", _LOCK_CLASS, self.run_id)
                    return
            if time.monotonic() > deadline:
                raise RunBusy(
                    f"run {self.run_id} is being executed by another process; try again later", run=self.run_id
                )
            await asyncio.sleep(0.2)

    async def _start(self) -> dict[str, Any]:
        async with self.db.unit_of_work() as conn:
            run = await repo.lock_run(conn, self.run_id)
            if run["status"] == "creating":
                raise still_creating(run)
            if run["status"] == "created":
                raise RunNotApproved(
                    f"run {self.run_id} is not approved yet; an approver must approve it "
                    f"(`cct-ledger runs approve {self.run_id}`, POST /v1/payment-runs/{self.run_id}/approve)",
                    run=self.run_id,
                )
            if run["status"] == "approved":
                await conn.execute(
                    """update payments.runs set status = 'executing', executed_by = $2,
                              execution_started_at = clock_timestamp() where id = $1""",
                    self.run_id,
                    self.actor,
                )
                await repo.event(conn, self.run_id, self.actor, "execution_started", {})
                run["status"] = "executing"
            elif run["status"] == "executing":
                await repo.event(conn, self.run_id, self.actor, "execution_resumed", {})
            return run

    async def _hold(self, run: dict[str, Any]) -> None:
        async with self.db.unit_of_work() as conn:
            planned = await conn.fetch(
                """select batch_no, total from payments.batches where run_id = $1 and status = 'planned'
                    order by batch_no for update""",
                self.run_id,
            )
            if not planned:
                return
            ctx = await program_context(conn, run["program"], run["period"])
            accounts = await Ledger(conn).get_accounts([ctx.fund_account, ctx.in_transit_account])
            fund, transit = accounts[ctx.fund_account].id, accounts[ctx.in_transit_account].id
            self.progress.start("hold", len(planned))
            hold_ids: list[int | None] = []
            try:
                # One bulk chunk per MAX_CHUNK batches (a run of small batches can have more), all in this
                # transaction: the run is held whole or not at all.
                for k, first in enumerate(range(0, len(planned), bulk.MAX_CHUNK)):
                    result = await bulk.bulk_transfer(
                        conn,
                        [bulk.BulkTransfer(fund, transit, r["total"]) for r in planned[first : first + bulk.MAX_CHUNK]],
                        key=f"run:{self.run_id}:holds" + (f":{k}" if k else ""),
                        currency=run["currency"],
                        pending=True,
                        description=f"{run['program']} {run['period']} run {self.run_id}: batch hold",
                        actor=self.actor,
                    )
                    hold_ids += result.transfer_ids
            except InsufficientFunds as e:
                raise RunNotFunded(
                    f"run {self.run_id}: {ctx.fund_account} cannot hold the run ({e.detail}); record an appropriation "
                    "and execute again",
                    run=self.run_id,
                ) from e
            await conn.execute(
                """update payments.batches b set hold_transfer_id = h.transfer_id, status = 'held'
                     from unnest($2::int[], $3::bigint[]) as h(batch_no, transfer_id)
                    where b.run_id = $1 and b.batch_no = h.batch_no""",
                self.run_id,
                [r["batch_no"] for r in planned],
                hold_ids,
            )
            await repo.event(conn, self.run_id, self.actor, "held", {"batches": len(planned)})
            self.progress.advance("hold", len(planned))

    async def _open_accounts(self, run: dict[str, Any]) -> None:
        """Open the run's households' ledger accounts that do not exist yet, ahead of their credits.

        A program's first run opens an account per household, about 15 µs of the database's work each. In
        settlement that work waits on the database, which is then the busy side; while batches are being
        sent the database is mostly idle and this process is busy. So this task opens them then, a slice of
        batches per transaction in the order batches are sent, with no per-account work in this process.
        Settlement then finds the accounts; one it reaches first it opens itself, as before. An account
        opened for a payment the bank rejects stays open with no postings, for the household's next payment.
        Idempotent: a resumed execution finds the accounts and opens none.
        """
        async with self.db.connection() as conn:
            last = await conn.fetchval("select max(batch_no) from payments.batches where run_id = $1", self.run_id)
        for first in range(0, (last or 0) + 1, _OPEN_AHEAD_BATCHES):
            async with self.db.unit_of_work() as conn:
                await bulk.open_selected_accounts(
                    conn,
                    _RUN_HOUSEHOLD_ACCOUNTS,
                    self.run_id,
                    first,
                    first + _OPEN_AHEAD_BATCHES,
                    *_HOUSEHOLD_ACCOUNT,
                    currency=run["currency"],
                    normal=NormalBalance.CREDIT,
                    no_overdraft=True,
                )

    async def _submit_all(self, run: dict[str, Any]) -> None:
        todo = [b["batch_no"] for b in await self._batches(("held", "submitting"))]
        total = run["batches_count"]
        self.progress.start("submit", total)
        self.progress.advance("submit", total - len(todo))
        gate = asyncio.Semaphore(self.options.concurrency)
        for round_no in range(self.options.submit_rounds):
            if not todo:
                return

            async def one(batch_no: int) -> int | None:
                async with gate:
                    ok = await self._submit(batch_no)
                if ok:
                    self.progress.advance("submit")
                    return None
                return None if batch_no in self._refused else batch_no  # refused: not sent again this time

            # A task group, not gather: if one submission fails the others are cancelled, none outlives execute.
            async with asyncio.TaskGroup() as sending:
                tasks = [sending.create_task(one(n)) for n in todo]
            todo = [n for n in (t.result() for t in tasks) if n is not None]
            if todo:
                await asyncio.sleep(min(0.5 * 2**round_no, 10.0))
        if todo:
            raise RunStateError(
                f"run {self.run_id}: {len(todo)} batch(es) could not be submitted (the bank is unavailable or the "
                f"outcome is unknown); nothing is lost: resume it later with {resume_hint(self.run_id)}",
                run=self.run_id,
                batches=todo[:20],
            )

    async def _submit(self, batch_no: int) -> bool:
        async with self.db.connection() as conn:
            # One statement (its own transaction): the attempt is counted and the batch's items rendered.
            batch = await repo.mark_submitting(conn, self.run_id, batch_no)
        if batch is None:
            self._acknowledged.set()
            return True  # acknowledged meanwhile
        if (batch["items_count"], batch["items_total"]) != (batch["item_count"], batch["total"]):
            raise RunIncident(f"run {self.run_id} batch {batch_no}: snapshot totals changed", run=self.run_id)
        # The batch as sent: rendered from the snapshot, so a resend carries exactly the same content. The
        # snapshot was validated when the registry was imported (DNI and CCI check digits); the bank validates
        # what it receives all the same.
        credit_batch = RenderedCreditBatch(batch["reference"], batch["item_count"], batch["total"], batch["items"])
        try:
            ack = await submit_or_recover(self.bank, credit_batch, idempotency_key=batch["idempotency_key"])
        except (BankAmbiguousError, BankRetryableError) as e:
            self.log.warning("run.submit_deferred", batch=batch_no, error=e.type)
            return False
        except BankPermanentError as e:
            # Recorded, and the rest of the run goes on: the other batches are sent and settled, and the run
            # stops with this one named once everything else is done (see execute).
            async with self.db.unit_of_work() as conn:
                await repo.incident(
                    conn, self.run_id, "submit_refused", {"error": e.type, "detail": e.detail}, batch_no
                )
            self.log.error("run.submit_refused", batch=batch_no, error=e.type)
            self._refused[batch_no] = e.detail
            return False
        async with self.db.connection() as conn:  # one statement, its own transaction
            await conn.execute(
                """update payments.batches set status = 'acknowledged', bank_batch_id = $3,
                          acknowledged_at = clock_timestamp()
                    where run_id = $1 and batch_no = $2 and status = 'submitting'""",
                self.run_id,
                batch_no,
                ack.id,
            )
        self._acknowledged.set()
        return True

    async def _settle_all(self, run: dict[str, Any], submitted: asyncio.Event) -> None:
        """Apply every acknowledged batch the bank has settled, until submission is over and none is left."""
        self.progress.start("settle", run["payments_count"])
        self.progress.advance("settle", await self._settled_items())
        deadline = time.monotonic() + self.options.settle_timeout
        gate = asyncio.Semaphore(self.options.concurrency)
        workers = asyncio.Semaphore(self.options.apply_workers)
        # Back-pressure: a batch's items are read only when there is room for them, and the room is given
        # back once their group is applied. Without it a fast bank's results pile up ahead of the ledger
        # (every item of the run in memory at once).
        room = asyncio.Semaphore(
            self.options.settle_group * (self.options.apply_workers + 1) + self.options.concurrency
        )

        async def look(batch: dict[str, Any], into: asyncio.Queue[_Settled | None]) -> None:
            """Put the batch with its items on ``into`` once the bank has settled it, else None (not settled
            yet, or the bank is unavailable for now). A settled batch keeps its room until it is applied."""
            settled: _Settled | None = None
            await room.acquire()
            try:
                async with gate:
                    found = await self.bank.get_batch(batch["bank_batch_id"])
                    if found.status is BatchStatus.SETTLED:
                        settled = _Settled(batch, found, [o async for o in self.bank.iter_batch_outcomes(found.id)])
            except BankRetryableError as e:
                self.log.warning("run.poll_failed", batch=batch["batch_no"], error=e.type)
            finally:
                if settled is None:
                    room.release()
            into.put_nowait(settled)

        async def apply(group: list[_Settled], into: set[int]) -> None:
            try:
                async with workers:
                    into.update(await self._apply(run, group))
            finally:
                for _ in group:
                    room.release()

        while True:
            # Both read before the batches: a batch acknowledged after this read wakes the wait below, and
            # is found by the next round.
            last_round = submitted.is_set()
            self._acknowledged.clear()
            pending = [b for b in await self._batches(("acknowledged",)) if b["batch_no"] not in self._mismatched]
            if not pending:
                if last_round:
                    if self._mismatched:
                        raise RunIncident(
                            f"run {self.run_id}: the bank's items of batch(es) {sorted(self._mismatched)[:20]} do "
                            "not match the payments sent (recorded as incidents); they stay open, everything "
                            f"else is settled: see {show_hint(self.run_id)}; once the bank corrects "
                            f"its report, {resume_hint(self.run_id)} settles them",
                            run=self.run_id,
                            batches=sorted(self._mismatched)[:20],
                        )
                    return
                await self._acknowledged.wait()  # set by each acknowledgement and when submission ends
                continue

            # Apply as results arrive, a group per transaction, up to `apply_workers` transactions at once,
            # while the other lookups are still in flight. Groups hold different batches; a failure cancels
            # the others (each is one transaction: applied whole or not at all) and resuming redoes them.
            applied: set[int] = set()
            buffer: list[_Settled] = []

            # One task group for lookups and applications: a failure cancels both, nothing outlives it.
            async with asyncio.TaskGroup() as tasks:
                # Each lookup hands its result over a queue and keeps nothing: holding the lookups' tasks
                # (as a list given to as_completed is held) would keep every looked-up batch's items until
                # the round ends (measured: the run's peak from 313 to 485 MB at 200,000 households),
                # defeating the back-pressure above.
                arrived: asyncio.Queue[_Settled | None] = asyncio.Queue()
                for b in pending:
                    tasks.create_task(look(b, arrived))
                for _ in pending:
                    settled = await arrived.get()
                    if settled is None:
                        continue
                    buffer.append(settled)
                    if len(buffer) >= self.options.settle_group:
                        tasks.create_task(apply(buffer, applied))
                        buffer = []
                if buffer:
                    tasks.create_task(apply(buffer, applied))
            if applied or not last_round:
                # The timeout counts once everything is submitted, from the last batch settled.
                deadline = time.monotonic() + self.options.settle_timeout
            if applied:
                continue
            if time.monotonic() > deadline:
                raise RunStateError(
                    f"run {self.run_id}: {len(pending)} batch(es) not settled by the bank yet; resume it "
                    f"later with {resume_hint(self.run_id)}",
                    run=self.run_id,
                )
            if last_round:
                await asyncio.sleep(self.options.poll_interval)  # the bank has not settled them yet
            else:  # the next acknowledgement, or the bank, whichever comes first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._acknowledged.wait(), max(self.options.poll_interval, 0.05))

    async def _apply(self, run: dict[str, Any], group: list[_Settled]) -> set[int]:
        """Apply settled batches in one transaction; returns the batch numbers closed."""
        checked: list[_Checked] = []
        async with self.db.connection() as conn:
            # The group's payments in one read, not one per batch: every round trip waits its turn on an
            # event loop busy with the bank's work (tens of milliseconds each while batches are being sent).
            snapshot = await repo.settlement_payments(
                conn, self.run_id, [s.batch["batch_no"] for s in group], _HOUSEHOLD_ACCOUNT
            )
            if self._transit is None:
                ctx = await program_context(conn, run["program"], run["period"])
                self._transit = (await Ledger(conn).get_account(ctx.in_transit_account)).id
        transit = self._transit
        for s in group:
            s.payments = snapshot.get(s.batch["batch_no"], [])
            found = await self._check(s)
            if found is not None:
                checked.append(found)
        if not checked:
            return set()
        async with self.db.unit_of_work() as conn:
            led = Ledger(conn, self.actor)
            numbers = [c.batch_no for c in checked]
            still_open = {
                r["batch_no"]
                for r in await conn.fetch(
                    """select batch_no from payments.batches where run_id = $1 and batch_no = any($2)
                        and status = 'acknowledged' for update""",
                    self.run_id,
                    numbers,
                )
            }
            checked = [c for c in checked if c.batch_no in still_open]
            if not checked:
                return set(numbers)
            numbers = [c.batch_no for c in checked]  # those still to apply name the credits' key
            credited_ids = [pid for c in checked for pid in c.credited_ids]
            settled_count = sum(len(c.outcomes) for c in checked)
            credited_text = _STATUS_TEXT[ItemStatus.CREDITED]
            rejected = [pid for c in checked for pid in c.rejected_ids]
            totals = [c.totals for c in checked]
            # The outcomes first, with the credits' transfer ids reserved: everything up to the ledger's
            # balance move runs beside the other group's transaction; from there to the commit this one
            # holds the in-transit account, which every group moves. Each batch's credited payments are one
            # transfer (the bank's batch credit): the in-transit account debited once with the batch's
            # credited total, each household's account credited with its payment.
            splits: list[bulk.Split] = []
            transfer_ids: list[int] = []
            transfer_of: dict[int, int] = {}  # batch number -> its credit transfer
            if credited_ids:
                # The accounts were found with the snapshot; those not opened yet (see _open_accounts) are
                # opened here.
                accounts = [a for c in checked for a in c.credited_accounts]
                missing = [k for k, account in enumerate(accounts) if account is None]
                if missing:
                    household_of = {p["id"]: p["household_id"] for c in checked for p in c.settled.payments}
                    opened = await bulk.ensure_account_ids(
                        conn,
                        [household_account(household_of[credited_ids[k]]) for k in missing],
                        currency=run["currency"],
                        normal=NormalBalance.CREDIT,
                        no_overdraft=True,
                    )
                    for k, account in zip(missing, opened, strict=True):
                        accounts[k] = account
                ids = cast(list[int], accounts)  # each found or opened
                credited = [c for c in checked if c.credited_ids]
                first = 0
                for c in credited:
                    n = len(c.credited_ids)
                    legs = list(zip(ids[first : first + n], c.credited_amounts, strict=True))
                    splits.append(bulk.Split(transit, legs, {"run": self.run_id, "batch": c.batch_no}))
                    first += n
                transfer_ids = await bulk.reserve_transfer_ids(conn, len(splits))
                transfer_of = {c.batch_no: tid for c, tid in zip(credited, transfer_ids, strict=True)}
            # The batch's row lock above makes a second outcome for a payment a bug, never a replay.
            records: list[repo.Outcome] = []
            for c in checked:
                transfer = transfer_of.get(c.batch_no)
                records.extend((p, st, rs, i, transfer if st == credited_text else None) for p, st, rs, i in c.outcomes)
            await repo.write_outcomes(conn, records)
            await repo.release_entitlements(conn, rejected)
            await repo.close_batches(conn, self.run_id, totals)
            if splits:
                result = await bulk.bulk_split(
                    conn,
                    splits,
                    key=f"run:{self.run_id}:batch-credits:{numbers[0]}-{numbers[-1]}:{len(credited_ids)}",
                    currency=run["currency"],
                    description=f"{run['program']} {run['period']}",
                    actor=self.actor,
                    transfer_ids=transfer_ids,
                )
                if result.transfer_ids != transfer_ids:  # the same key was written before, by other ids
                    raise RunIncident(
                        f"run {self.run_id}: the ledger already holds credits under the key of batches "
                        f"{numbers[0]}-{numbers[-1]} for other payments; nothing of this group was applied. Resume "
                        f"with {resume_hint(self.run_id)}; if this error comes back, report it with the run",
                        run=self.run_id,
                    )
            # Last, the holds, in one statement: they lock the program's fund and in-transit accounts (hot,
            # shared by every group), so another group's transaction waits for them only from here to the
            # commit, one round trip to the database rather than one per batch.
            credited_by_batch = {t[0]: t[2] for t in totals}
            resolutions = []
            for c in checked:
                hold, n = c.settled.batch["hold_transfer_id"], c.batch_no
                if credited_by_batch[n] > 0:
                    resolutions.append(
                        Resolution(hold, f"run:{self.run_id}:batch:{n}:post", True, amount=credited_by_batch[n])
                    )
                else:
                    resolutions.append(
                        Resolution(hold, f"run:{self.run_id}:batch:{n}:void", False, reason="every item rejected")
                    )
            await led.resolve_many(resolutions)
        self.progress.advance("settle", settled_count)
        return set(numbers)

    async def _check(self, s: _Settled) -> _Checked | None:
        """Match the bank's items with our snapshot (``s.payments``), in one pass over the items; a
        contradiction is recorded as an incident (None: the batch stays open)."""
        # Each payment by its reference exactly as we sent it (repo.payment_reference, inlined: a thousand a
        # batch); anything else is not one of ours.
        prefix = repo.payment_reference_prefix(self.run_id)
        payments = {f"{prefix}{p['id']}": p for p in s.payments}
        seen: dict[int, ItemOutcome] = {}  # payment -> the bank's item for it
        checked = _Checked(s, [], [], [], [], [], 0)
        outcomes, credited_ids, credited_amounts = checked.outcomes, checked.credited_ids, checked.credited_amounts
        credited_accounts, rejected_ids = checked.credited_accounts, checked.rejected_ids
        rejected_total = 0
        credited, pending = _STATUS_TEXT[ItemStatus.CREDITED], _STATUS_TEXT[ItemStatus.PENDING]
        duplicate = RejectReason.DUPLICATE_REFERENCE.value
        problems: list[dict[str, Any]] = []
        for item in s.items:
            reference, item_id, item_amount, status, reason = item
            payment = payments.get(reference)
            if payment is None:
                problems.append({"reference": reference, "problem": "not a payment of this batch"})
                continue
            pid = payment["id"]
            earlier = seen.get(pid)
            if earlier is not None:
                # The same item listed twice is counted once; anything else (another item, or the same item
                # with another status, reason or amount) leaves the payment's outcome in doubt.
                if earlier != item:
                    problems.append({"reference": reference, "problem": "reported twice, with different content"})
                continue
            amount = payment["amount"]
            if item_amount != amount:
                problems.append({"reference": reference, "problem": f"amount {item_amount} != {amount}"})
            elif status == pending:
                problems.append({"reference": reference, "problem": "still pending in a settled batch"})
            elif reason == duplicate:
                # The bank says it credited this reference before, in an item we do not know of: the household
                # was paid, so the payment must not be released to be paid again.
                problems.append({"reference": reference, "problem": "rejected as already credited by another item"})
            else:
                seen[pid] = item
                outcomes.append((pid, status, reason, item_id))
                if status == credited:
                    credited_ids.append(pid)
                    credited_amounts.append(amount)
                    credited_accounts.append(payment["account_id"])
                else:
                    rejected_ids.append(pid)
                    rejected_total += amount
        checked.rejected_total = rejected_total
        if len(seen) < len(s.payments) and not problems:
            missing = sorted(p["id"] for p in s.payments if p["id"] not in seen)
            problems.append(
                {"problem": f"{len(missing)} payment(s) missing from the bank's items", "first": missing[:5]}
            )
        bank = s.bank
        counted = (len(credited_ids), sum(credited_amounts), len(rejected_ids), rejected_total)
        reported = (bank.credited_count, bank.credited_amount, bank.rejected_count, bank.rejected_amount)
        if not problems and counted != reported:
            # The batch's own counters are the bank's second statement of the same outcomes.
            problems.append(
                {
                    "problem": "the items do not add up to the batch's counters (credited count and amount, "
                    "rejected count and amount)",
                    "items": list(counted),
                    "batch": list(reported),
                }
            )
        if not problems:
            return checked
        async with self.db.unit_of_work() as c:
            await repo.incident(c, self.run_id, "settlement_mismatch", {"problems": problems[:50]}, s.batch["batch_no"])
        self.log.error("run.incident", batch=s.batch["batch_no"], problems=len(problems))
        self._mismatched.add(s.batch["batch_no"])
        return None

    async def _finish(self) -> dict[str, Any]:
        async with self.db.unit_of_work() as conn:
            run = await repo.lock_run(conn, self.run_id)
            open_batches = await conn.fetchval(
                "select count(*) from payments.batches where run_id = $1 and status <> 'closed'", self.run_id
            )
            if open_batches == 0 and run["status"] == "executing":
                # From the batches' totals, written with their payments' outcomes in the same transactions.
                summary = await conn.fetchrow(
                    """select coalesce(sum(credited_count), 0)::bigint as credited,
                              coalesce(sum(credited_total), 0)::bigint as credited_total,
                              coalesce(sum(rejected_count), 0)::bigint as rejected
                         from payments.batches where run_id = $1""",
                    self.run_id,
                )
                assert summary is not None
                await conn.execute(
                    "update payments.runs set status = 'settled', settled_at = clock_timestamp() where id = $1",
                    self.run_id,
                )
                await repo.event(conn, self.run_id, self.actor, "settled", dict(summary))
            return await repo.get_run(conn, self.run_id)

    # ----------------------------------------------------------------------------------------- helpers
    async def _batches(self, statuses: tuple[str, ...]) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            return await repo.batches(conn, self.run_id, statuses)

    async def _settled_items(self) -> int:
        async with self.db.connection() as conn:
            n: int = await conn.fetchval(
                "select coalesce(sum(item_count), 0)::bigint from payments.batches "
                "where run_id = $1 and status = 'closed'",
                self.run_id,
            )
            return n


CANCELLED = "cancelled"
"""The reason recorded for the payments of a refused batch cancelled by an operator."""


async def refused_batch(conn: Connection, run_id: int, batch_no: int) -> Mapping[str, Any]:
    """The batch, if the bank refused it and it is still open (what :func:`cancel_refused_batch` may cancel).

    Raises:
        RunNotFound: no such run.
        RunStateError: no such batch, or not one the bank refused and still open.
    """
    await repo.get_run(conn, run_id)  # RunNotFound
    batch: Mapping[str, Any] | None = await conn.fetchrow(
        "select * from payments.batches where run_id = $1 and batch_no = $2", run_id, batch_no
    )
    if batch is None:
        raise RunStateError(f"run {run_id} has no batch {batch_no}", run=run_id)
    refused = await conn.fetchval(
        "select count(*) from payments.incidents where run_id = $1 and batch_no = $2 and kind = 'submit_refused'",
        run_id,
        batch_no,
    )
    if batch["status"] != "submitting" or not refused:
        raise RunStateError(
            f"run {run_id} batch {batch_no} is {batch['status']}"
            + ("" if refused else " and the bank never refused it")
            + "; only a batch the bank refused can be cancelled (resume the run to go on)",
            run=run_id,
        )
    return batch


async def cancel_refused_batch(
    db: DatabasePort, bank: BankPort, run_id: int, batch_no: int, actor: str, reason: str
) -> dict[str, Any]:
    """Cancel a batch the bank refused: its hold returns to the fund, its payments are rejected (reason
    ``cancelled``) and their entitlements accrue to the next run; the run can then settle. Returns the run.

    Only a batch still being submitted with a ``submit_refused`` incident, and only once the bank confirms it
    has no batch with its reference (a refusal that was in fact accepted is settled by resuming, not
    cancelled). Runs under the run's lock: no execution runs meanwhile.

    Raises:
        RunNotFound, RunBusy: no such run, or it is being executed.
        RunStateError: no such batch, or it is not a refused batch, or the bank has it.
    """
    if not reason.strip():
        raise RunStateError("say why the batch is cancelled (it is recorded in the run's events)", run=run_id)
    executor = RunExecutor(db, bank, run_id, actor, options=ExecuteOptions(lock_wait=0.0))
    async with executor._locked():
        async with db.connection() as conn:
            batch = await refused_batch(conn, run_id, batch_no)
        found = await bank.get_batch_by_reference(batch["reference"])
        if found is not None:
            raise RunStateError(
                f"the bank has batch {batch['reference']} ({found.id}, {found.status.value}): it was accepted "
                f"after all; {resume_hint(run_id)} settles it",
                run=run_id,
                bank_batch_id=found.id,
            )
        async with db.unit_of_work() as conn:
            still = await conn.fetchval(
                """select status from payments.batches where run_id = $1 and batch_no = $2 for update""",
                run_id,
                batch_no,
            )
            if still != "submitting":  # pragma: no cover - the run's lock keeps executions out
                raise RunStateError(f"run {run_id} batch {batch_no} is {still} now", run=run_id)
            payments = (await repo.batches_payments(conn, run_id, [batch_no])).get(batch_no, [])
            ids = [p["id"] for p in payments]
            total = sum(p["amount"] for p in payments)
            rejected = _STATUS_TEXT[ItemStatus.REJECTED]
            await repo.write_outcomes(conn, [(pid, rejected, CANCELLED, "", None) for pid in ids])
            await repo.release_entitlements(conn, ids)
            await repo.close_batches(conn, run_id, [(batch_no, 0, 0, len(ids), total)])
            await Ledger(conn, actor).resolve_many(
                [
                    Resolution(
                        batch["hold_transfer_id"],
                        f"run:{run_id}:batch:{batch_no}:void",
                        False,
                        reason=f"refused by the bank, cancelled: {reason.strip()}"[:200],
                    )
                ]
            )
            await repo.event(
                conn,
                run_id,
                actor,
                "batch_cancelled",
                {"batch": batch_no, "reason": reason.strip(), "payments": len(ids), "total": total},
            )
        return await executor._finish()


def _first_error(group: BaseExceptionGroup[BaseException]) -> tuple[BaseException, list[BaseException]]:
    """The error to report from a group of concurrent steps, and the others: an application error first if
    there is one (it says what to do), else the first."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(group)
    chosen = next((e for e in leaves if isinstance(e, AppError)), leaves[0])
    return chosen, [e for e in leaves if e is not chosen]


_HOUSEHOLD_ACCOUNT = ("household:", ":savings")


def household_account(household_id: str) -> str:
    """The ledger account of a household's savings: ``household:<id>:savings``."""
    return f"{_HOUSEHOLD_ACCOUNT[0]}{household_id}{_HOUSEHOLD_ACCOUNT[1]}"


# The household accounts of a slice of a run's batches (see RunExecutor._open_accounts), codes as
# household_account writes them.
_RUN_HOUSEHOLD_ACCOUNTS = """
select $4::text || p.household_id || $5::text from payments.payments p
 where p.run_id = $1 and p.batch_no >= $2 and p.batch_no < $3
"""
