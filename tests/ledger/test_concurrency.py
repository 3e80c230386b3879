"""Concurrency tests on the real database: many writers at once, each on its own pooled connection.

* a storm of random transfers, holds, posts, voids, reversals and replays on a few accounts, some of them
  ``no_overdraft`` with little money: afterwards every balance equals the sum of what the successful
  operations did, money is conserved, no guarded account is below zero, every version counts its postings,
  the audit chain verifies and no deadlock (SQLSTATE 40P01) ever reached a caller;
* one idempotency key sent twenty times at once (transfer, post, reversal): exactly one effect, one id;
* many workers posting and voiding the same hold at once: exactly one resolution, the rest refused;
* set-based bulk chunks (payments and holds, then a bulk post racing online voids) while online transfers
  touch the same households and the hot program fund;
* batches of online transfers (``transfer_batch``) racing single transfers on the same hot fund.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from adapters.postgres.database import Database
from ledger import audit
from ledger.bulk import BulkTransfer, bulk_resolve, bulk_transfer
from ledger.engine import Ledger
from ledger.errors import AppError, InsufficientFunds, TransferNotPending, TransferNotReversible
from ledger.models import AccountSpec, NormalBalance, Phase, PostingSpec, Transfer, TransferRequest

DEADLOCK = "40P01"
DEBIT, CREDIT = NormalBalance.DEBIT, NormalBalance.CREDIT
Leg = tuple[str, int]


def request(legs: Sequence[Leg], pending: bool = False) -> TransferRequest:
    postings = tuple(PostingSpec(code, debit=a) if a > 0 else PostingSpec(code, credit=-a) for code, a in legs)
    return TransferRequest(postings, "PEN", pending=pending)


@dataclass
class Effects:
    """Expected balances, summed from what each successful operation did (order does not matter)."""

    normal: dict[str, int]
    posted: Counter[str] = field(default_factory=Counter)
    pending_debits: Counter[str] = field(default_factory=Counter)
    pending_credits: Counter[str] = field(default_factory=Counter)
    version: Counter[str] = field(default_factory=Counter)

    def apply(self, legs: Sequence[Leg], phase: Phase) -> None:
        for code, amount in legs:
            if phase in (Phase.POSTED, Phase.COMMIT):
                self.posted[code] += amount * self.normal[code]
            pending = self.pending_debits if amount > 0 else self.pending_credits
            if phase is Phase.HOLD:
                pending[code] += abs(amount)
            if phase in (Phase.COMMIT, Phase.RELEASE):
                pending[code] -= abs(amount)
            self.version[code] += 1

    def resolve(self, hold: Sequence[Leg], post: bool, amount: int | None) -> list[Leg]:
        """Apply a post (all, or ``amount`` of a two-posting hold) or a void; return the legs it moved."""
        held = sum(a for _, a in hold if a > 0)
        if not post:
            self.apply(hold, Phase.RELEASE)
            return []
        if amount is None or amount == held:
            self.apply(hold, Phase.COMMIT)
            return list(hold)
        committed = [(code, amount if a > 0 else -amount) for code, a in hold]
        self.apply(committed, Phase.COMMIT)
        self.apply([(code, (held - amount) if a > 0 else -(held - amount)) for code, a in hold], Phase.RELEASE)
        return committed

    async def assert_matches(self, ledger: Ledger) -> None:
        accounts = await ledger.get_accounts(list(self.normal))
        for code in self.normal:
            b = accounts[code].balance
            got = (b.posted, b.pending_debits, b.pending_credits, b.version)
            expected = (self.posted[code], self.pending_debits[code], self.pending_credits[code], self.version[code])
            assert got == expected, f"account {code}: ledger {got} != sum of the operations {expected}"


@dataclass
class Outcomes:
    """What the workers met: counts per operation and outcome, deadlocks and unexpected errors."""

    counts: Counter[str] = field(default_factory=Counter)
    deadlocks: list[BaseException] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    async def attempt(
        self, label: str, call: Awaitable[Transfer], expected: tuple[type[AppError], ...] = ()
    ) -> Transfer | AppError | None:
        """Run one ledger call: its answer, an expected named condition, or None (recorded as a problem)."""
        try:
            result = await call
        except AppError as e:
            if type(e) in expected:
                self.counts[f"{label}: {type(e).__name__}"] += 1
                return e
            self.unexpected.append(f"{label}: {type(e).__name__}: {e}")
            return None
        except asyncpg.PostgresError as e:
            self.record(e)
            return None
        self.counts[f"{label}: {'replayed' if result.replayed else 'ok'}"] += 1
        return result

    def record(self, error: asyncpg.PostgresError) -> None:
        """A database error that reached the caller untranslated: a deadlock, or something unexpected."""
        if getattr(error, "sqlstate", None) == DEADLOCK:
            self.deadlocks.append(error)
        else:
            self.unexpected.append(f"{type(error).__name__}: {error}")

    def assert_clean(self) -> None:
        assert not self.deadlocks, f"{len(self.deadlocks)} deadlocks reached callers: {self.deadlocks[:3]}"
        assert not self.unexpected, f"unexpected errors: {self.unexpected[:5]}"


async def open_accounts(ledger: Ledger, specs: Sequence[AccountSpec]) -> dict[str, int]:
    """Open accounts; returns their ids."""
    return {spec.code: (await ledger.create_account(spec)).id for spec in specs}


async def fund(ledger: Ledger, effects: Effects, source: str, target: str, amount: int) -> None:
    """Move ``amount`` into ``target`` (on its normal side) from ``source``, which may go negative."""
    sign = effects.normal[target]
    legs = [(target, sign * amount), (source, -sign * amount)]
    await ledger.transfer(request(legs), f"fund-{target}")
    effects.apply(legs, Phase.POSTED)


async def assert_sealed_and_verified(conn: asyncpg.Connection[Any]) -> None:
    await audit.seal(conn)
    report = await audit.verify(conn)
    assert report.ok, report.problems[:5]
    assert report.sealed == report.transfers


async def assert_versions_count_postings(conn: asyncpg.Connection[Any]) -> None:
    bad = await conn.fetch(
        """select a.code, a.version, count(p.*) as postings
             from ledger.accounts a left join ledger.postings p on p.account_id = a.id
            group by a.id having a.version <> count(p.*)"""
    )
    assert not bad, [dict(r) for r in bad]


@contextlib.asynccontextmanager
async def connections(db: Database, n: int) -> AsyncIterator[list[Any]]:
    """``n`` pooled connections held at once, so the calls made on them really run together."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(db.connection()) for _ in range(n)]


# ------------------------------------------------------------------------------------------- the storm
STORM_ACCOUNTS = [
    AccountSpec("equity", "PEN", CREDIT),  # where the money comes from; the workers never touch it
    AccountSpec("fund", "PEN", DEBIT, no_overdraft=True, hot=True),
    AccountSpec("wallet-1", "PEN", DEBIT, no_overdraft=True),
    AccountSpec("wallet-2", "PEN", DEBIT, no_overdraft=True),
    AccountSpec("wallet-3", "PEN", DEBIT, no_overdraft=True),
    AccountSpec("savings", "PEN", CREDIT, no_overdraft=True),
    AccountSpec("clearing", "PEN", DEBIT),
]
STORM_FUNDING = {"fund": 3_000_00, "wallet-1": 400_00, "wallet-2": 200_00, "savings": 300_00}
WORKERS = 16
OPERATIONS_PER_WORKER = 25


@dataclass
class Storm:
    """State the storm's workers share (one event loop: no locking needed)."""

    effects: Effects
    outcomes: Outcomes = field(default_factory=Outcomes)
    holds: dict[int, list[Leg]] = field(default_factory=dict)  # every hold ever made, by id
    reversible: dict[int, list[Leg]] = field(default_factory=dict)  # posted transfers and what they moved


async def storm_worker(db: Database, storm: Storm, number: int) -> None:
    rng = random.Random(number)
    codes = [spec.code for spec in STORM_ACCOUNTS if spec.code != "equity"]
    out, effects = storm.outcomes, storm.effects
    sent: list[tuple[str, str, Any]] = []  # (operation, key, arguments) for replays
    async with db.connection() as conn:
        ledger = Ledger(conn, actor=f"worker-{number}")
        for step in range(OPERATIONS_PER_WORKER):
            key = f"w{number}-{step}"
            roll = rng.random()
            if roll < 0.1 and sent:
                op, key, args = rng.choice(sent)
            elif roll < 0.4:
                a, b, c = rng.sample(codes, 3)
                x, y = rng.randint(1, 150_00), rng.randint(1, 150_00)
                op, args = "transfer", ([(a, x + y), (b, -x), (c, -y)] if rng.random() < 0.5 else [(a, x), (b, -x)])
            elif roll < 0.6:
                a, b = rng.sample(codes, 2)
                amount = rng.randint(1, 200_00)
                op, args = "hold", [(a, amount), (b, -amount)]
            elif roll < 0.75 and storm.holds:
                hold_id = rng.choice(list(storm.holds))
                held = sum(a for _, a in storm.holds[hold_id] if a > 0)
                op, args = "post", (hold_id, None if rng.random() < 0.5 else rng.randint(1, held))
            elif roll < 0.85 and storm.holds:
                op, args = "void", rng.choice(list(storm.holds))
            elif storm.reversible:
                op, args = "reverse", rng.choice(list(storm.reversible))
            else:
                continue
            sent.append((op, key, args))
            if op in ("transfer", "hold"):
                result = await out.attempt(op, ledger.transfer(request(args, op == "hold"), key), (InsufficientFunds,))
                if isinstance(result, Transfer) and not result.replayed:
                    effects.apply(args, Phase.HOLD if op == "hold" else Phase.POSTED)
                    (storm.holds if op == "hold" else storm.reversible)[result.id] = list(args)
            elif op in ("post", "void"):
                hold_id, amount = args if op == "post" else (args, None)
                call = ledger.post(hold_id, key, amount=amount) if op == "post" else ledger.void(hold_id, key)
                result = await out.attempt(op, call, (TransferNotPending,))
                if isinstance(result, Transfer) and not result.replayed:
                    moved = effects.resolve(storm.holds[hold_id], op == "post", amount)
                    held = sum(a for _, a in storm.holds[hold_id] if a > 0)
                    if op == "post" and amount in (None, held):
                        storm.reversible[hold_id] = moved
            else:
                target = args
                expected = (TransferNotReversible, InsufficientFunds)
                result = await out.attempt(op, ledger.reverse(target, key), expected)
                if isinstance(result, Transfer) and not result.replayed:
                    back = [(code, -amount) for code, amount in storm.reversible[target]]
                    effects.apply(back, Phase.POSTED)
                    assert [(p["account"], p.get("debit") or -p["credit"]) for p in result.postings] == back
                    storm.reversible[result.id] = back


async def test_a_storm_of_concurrent_operations_conserves_money(db: Database) -> None:
    async with db.connection() as conn:
        ledger = Ledger(conn, actor="setup")
        await open_accounts(ledger, STORM_ACCOUNTS)
        effects = Effects({spec.code: spec.normal_balance.sign for spec in STORM_ACCOUNTS})
        for code, amount in STORM_FUNDING.items():
            await fund(ledger, effects, "equity", code, amount)
        money = sum(effects.posted[c] * effects.normal[c] for c in effects.normal if c != "equity")

        storm = Storm(effects)
        await asyncio.gather(*(storm_worker(db, storm, n) for n in range(WORKERS)))

        out = storm.outcomes
        out.assert_clean()
        total = sum(out.counts.values())
        assert total >= 300, out.counts
        for op in ("transfer", "hold", "post", "void", "reverse"):
            assert out.counts[f"{op}: ok"] > 0, f"no {op} succeeded: {out.counts}"
        assert out.counts["transfer: InsufficientFunds"] + out.counts["hold: InsufficientFunds"] > 0, out.counts
        assert out.counts["post: TransferNotPending"] + out.counts["void: TransferNotPending"] > 0, out.counts

        await effects.assert_matches(ledger)
        accounts = await ledger.get_accounts(list(effects.normal))
        for spec in STORM_ACCOUNTS:
            if spec.no_overdraft:
                assert accounts[spec.code].balance.available >= 0, accounts[spec.code]
        in_accounts = sum(a.balance.posted * a.normal_balance.sign for c, a in accounts.items() if c != "equity")
        assert in_accounts == money, f"the workers' accounts hold {in_accounts}, {money} was put in"
        assert sum(a.balance.posted * a.normal_balance.sign for a in accounts.values()) == 0
        assert sum(a.balance.pending_debits for a in accounts.values()) == sum(
            a.balance.pending_credits for a in accounts.values()
        )
        await assert_versions_count_postings(conn)
        await assert_sealed_and_verified(conn)


# ------------------------------------------------------------------------------------ idempotency race
@pytest.mark.parametrize("operation", ["transfer", "post", "reverse"])
async def test_one_key_sent_twenty_times_at_once_has_one_effect(db: Database, operation: str) -> None:
    async with db.connection() as conn:
        ledger = Ledger(conn, actor="setup")
        await open_accounts(ledger, [AccountSpec("program", "PEN", CREDIT), AccountSpec("household", "PEN", DEBIT)])
        payment = [("household", 200_00), ("program", -200_00)]
        target = None
        if operation != "transfer":
            target = (await ledger.transfer(request(payment, pending=operation == "post"), "setup")).id
        before = await conn.fetchval("select count(*) from ledger.transfers")

    async with connections(db, 20) as conns:

        def call(c: Any) -> Awaitable[Transfer]:
            led = Ledger(c, actor="client")
            if operation == "transfer":
                return led.transfer(request(payment), "the-key")
            assert target is not None
            return led.post(target, "the-key") if operation == "post" else led.reverse(target, "the-key")

        answers = await asyncio.gather(*(call(c) for c in conns))

    assert len({a.id for a in answers}) == 1, [a.id for a in answers]
    assert len({(a.resolved_by, a.status) for a in answers}) == 1
    assert sum(not a.replayed for a in answers) == 1
    async with db.connection() as conn:
        assert await conn.fetchval("select count(*) from ledger.transfers") == before + 1
        household = await Ledger(conn).balance("household")
        expected = {"transfer": 200_00, "post": 200_00, "reverse": 0}[operation]
        assert (household.posted, household.pending_debits) == (expected, 0)
        await assert_sealed_and_verified(conn)


# -------------------------------------------------------------------------------------- post vs void
ROUNDS = 8
RACERS = 16


async def resolve(conn: Any, hold_id: int, key: str, choice: int | str | None) -> Transfer | AppError:
    """Void the hold (``choice == "void"``) or post it (all when None, else that amount)."""
    ledger = Ledger(conn, actor=key)
    try:
        if isinstance(choice, str):
            return await ledger.void(hold_id, key)
        return await ledger.post(hold_id, key, amount=choice)
    except AppError as e:
        return e


async def test_posts_and_voids_racing_on_one_hold_resolve_it_once(db: Database) -> None:
    specs = [AccountSpec("bank", "PEN", DEBIT), AccountSpec("household", "PEN", DEBIT, no_overdraft=True)]
    specs.append(AccountSpec("program", "PEN", CREDIT))
    effects = Effects({s.code: s.normal_balance.sign for s in specs})
    rng = random.Random(7)
    async with db.connection() as conn:
        ledger = Ledger(conn, actor="setup")
        await open_accounts(ledger, specs)
        await fund(ledger, effects, "program", "household", ROUNDS * 100_00)

    for round_no in range(ROUNDS):
        legs = [("bank", 100_00), ("household", -100_00)]
        async with db.connection() as conn:
            hold = await Ledger(conn).transfer(request(legs, pending=True), f"hold-{round_no}")
        effects.apply(legs, Phase.HOLD)
        options: list[int | str | None] = [None, 1, 40_00, 100_00, "void"]
        choices = [rng.choice(options) for _ in range(RACERS)]

        async with connections(db, RACERS) as conns:
            races = (resolve(c, hold.id, f"round-{round_no}-racer-{i}", choices[i]) for i, c in enumerate(conns))
            results = await asyncio.gather(*races)

        winners = [i for i, r in enumerate(results) if isinstance(r, Transfer)]
        assert len(winners) == 1, f"round {round_no}: {results}"
        losers = [r for r in results if not isinstance(r, Transfer)]
        assert all(type(r) is TransferNotPending for r in losers), losers
        winner, choice = results[winners[0]], choices[winners[0]]
        assert isinstance(winner, Transfer)
        post = not isinstance(choice, str)
        effects.resolve(legs, post, None if isinstance(choice, str) else choice)
        async with db.connection() as conn:
            final = await Ledger(conn).get_transfer(hold.id)
            assert final.status == ("posted" if post else "voided")
            assert final.resolved_by == winner.resolved_by
            assert await conn.fetchval("select count(*) from ledger.transfers where pending_id = $1", hold.id) == 1

    async with db.connection() as conn:
        ledger = Ledger(conn)
        await effects.assert_matches(ledger)
        assert (await ledger.balance("household")).available >= 0
        await assert_versions_count_postings(conn)
        await assert_sealed_and_verified(conn)


# ------------------------------------------------------------------------------ bulk chunks and online
HOUSEHOLDS = 600
CHUNK = 100
PAYMENT = 200_00


async def test_bulk_chunks_and_online_transfers_on_the_same_accounts(db: Database) -> None:
    specs = [
        AccountSpec("treasury", "PEN", CREDIT),
        AccountSpec("fund", "PEN", DEBIT, no_overdraft=True, hot=True),
        AccountSpec("bank", "PEN", DEBIT),
    ]
    households = [f"hh-{i:04d}" for i in range(HOUSEHOLDS)]
    specs += [AccountSpec(code, "PEN", DEBIT, no_overdraft=True) for code in households]
    effects = Effects({s.code: s.normal_balance.sign for s in specs})
    async with db.unit_of_work() as conn:
        ids = await open_accounts(Ledger(conn, actor="setup"), specs)
    async with db.connection() as conn:
        await fund(Ledger(conn), effects, "treasury", "fund", 2 * HOUSEHOLDS * PAYMENT)

    outcomes = Outcomes()
    pending_chunk: list[int] = []
    chunk_ready = asyncio.Event()
    bulk_done = asyncio.Event()
    voided_online: set[int] = set()
    bulk_posted: set[int] = set()
    holds: dict[int, list[Leg]] = {}

    async def bulk_worker(number: int, chunks: list[list[str]], pending: bool) -> None:
        for index, chunk in enumerate(chunks):
            rows = [BulkTransfer(ids[code], ids["fund"], PAYMENT) for code in chunk]
            try:
                async with db.unit_of_work() as conn:
                    key = f"bulk-{number}-{index}"
                    result = await bulk_transfer(conn, rows, key=key, currency="PEN", pending=pending)
            except asyncpg.PostgresError as e:
                outcomes.record(e)
                continue
            legs = [[(code, PAYMENT), ("fund", -PAYMENT)] for code in chunk]
            for tid, tlegs in zip(result.transfer_ids, legs, strict=True):
                effects.apply(tlegs, Phase.HOLD if pending else Phase.POSTED)
                if pending:
                    assert tid is not None
                    holds[tid] = tlegs
                    pending_chunk.append(tid)
            outcomes.counts[f"bulk {'hold' if pending else 'pay'} chunk"] += 1
        if pending:
            chunk_ready.set()
            await asyncio.sleep(0.05)  # let the online voiders start on these holds
            try:
                async with db.unit_of_work() as conn:
                    resolved = await bulk_resolve(conn, pending_chunk, key="bulk-post", post=True)
            except asyncpg.PostgresError as e:
                outcomes.record(e)
                return
            for pid, event_id in zip(pending_chunk, resolved.transfer_ids, strict=True):
                if event_id is not None:
                    bulk_posted.add(pid)
                    effects.resolve(holds[pid], True, None)
            outcomes.counts["bulk post chunk"] += 1

    async def online_worker(number: int) -> None:
        rng = random.Random(100 + number)
        step = 0
        async with db.connection() as conn:
            ledger = Ledger(conn, actor=f"online-{number}")
            while not bulk_done.is_set() or step < 30:
                step += 1
                key = f"online-{number}-{step}"
                household = rng.choice(households)
                roll = rng.random()
                if roll < 0.35:  # an extra payment from the hot fund
                    legs = [(household, 50_00), ("fund", -50_00)]
                elif roll < 0.6:  # a household withdraws at the bank (often more than it has)
                    legs = [("bank", 150_00), (household, -150_00)]
                elif roll < 0.75:  # money back to the fund
                    legs = [("fund", 10_00), (household, -10_00)]
                elif chunk_ready.is_set() and pending_chunk:
                    pid = rng.choice(pending_chunk)
                    result = await outcomes.attempt("void", ledger.void(pid, key), (TransferNotPending,))
                    if isinstance(result, Transfer):
                        voided_online.add(pid)
                        effects.resolve(holds[pid], False, None)
                    continue
                else:
                    other = rng.choice(households)
                    if other == household:
                        continue
                    legs = [(other, 5_00), (household, -5_00)]
                result = await outcomes.attempt("transfer", ledger.transfer(request(legs), key), (InsufficientFunds,))
                if isinstance(result, Transfer):
                    effects.apply(legs, Phase.POSTED)

    async def bulk() -> None:
        chunks = [households[i : i + CHUNK] for i in range(0, HOUSEHOLDS, CHUNK)]
        await asyncio.gather(
            bulk_worker(0, chunks[0:2], pending=False),
            bulk_worker(1, chunks[2:4], pending=False),
            bulk_worker(2, chunks[4:6], pending=True),
        )
        bulk_done.set()

    await asyncio.gather(bulk(), *(online_worker(n) for n in range(8)))

    outcomes.assert_clean()
    chunks = [outcomes.counts[f"bulk {kind} chunk"] for kind in ("pay", "hold", "post")]
    assert chunks == [4, 2, 1], outcomes.counts
    assert outcomes.counts["transfer: ok"] > 0, outcomes.counts
    assert outcomes.counts["transfer: InsufficientFunds"] > 0, outcomes.counts
    assert not (voided_online & bulk_posted), "a hold was both voided online and posted in bulk"
    assert voided_online | bulk_posted == set(pending_chunk), "a hold of the chunk was left unresolved"
    async with db.connection() as conn:
        ledger = Ledger(conn)
        await effects.assert_matches(ledger)
        accounts = await ledger.get_accounts(list(effects.normal))
        assert all(a.balance.available >= 0 for a in accounts.values() if a.no_overdraft)
        await assert_versions_count_postings(conn)
        await assert_sealed_and_verified(conn)


# ------------------------------------------------------------------------- batches and single transfers
async def test_transfer_batches_and_single_transfers_on_a_hot_fund_do_not_deadlock(db: Database) -> None:
    """The hot fund is opened first (the lowest id), as a program's fund is; households come after it."""
    specs = [
        AccountSpec("fund", "PEN", DEBIT, hot=True),
        *(AccountSpec(f"hh-{i}", "PEN", DEBIT) for i in range(4)),
    ]
    effects = Effects({s.code: s.normal_balance.sign for s in specs})
    async with db.connection() as conn:
        await open_accounts(Ledger(conn, actor="setup"), specs)
    outcomes = Outcomes()

    async def batcher(number: int) -> None:
        async with db.connection() as conn:
            ledger = Ledger(conn, actor=f"batch-{number}")
            for step in range(15):
                if outcomes.deadlocks:
                    break  # one is enough; each costs the server's deadlock_timeout
                items = [(f"b{number}-{step}-{i}", [(f"hh-{i}", 20_00), ("fund", -20_00)]) for i in range(4)]
                batch = [(key, request(legs)) for key, legs in items]
                try:
                    await ledger.transfer_batch(batch)
                except asyncpg.PostgresError as e:
                    outcomes.record(e)
                    continue
                outcomes.counts["batch: ok"] += 1
                for _, legs in items:
                    effects.apply(legs, Phase.POSTED)

    async def single(number: int) -> None:
        rng = random.Random(number)
        async with db.connection() as conn:
            ledger = Ledger(conn, actor=f"single-{number}")
            for step in range(30):
                if outcomes.deadlocks:
                    break
                legs = [("fund", 1_00), (f"hh-{rng.randrange(4)}", -1_00)]
                result = await outcomes.attempt("transfer", ledger.transfer(request(legs), f"s{number}-{step}"))
                if isinstance(result, Transfer):
                    effects.apply(legs, Phase.POSTED)

    await asyncio.gather(*(batcher(n) for n in range(3)), *(single(n) for n in range(6)))

    outcomes.assert_clean()
    async with db.connection() as conn:
        await effects.assert_matches(Ledger(conn))
        await assert_sealed_and_verified(conn)


async def batch(conn: Any, items: list[tuple[str, TransferRequest]], outcomes: Outcomes) -> list[Transfer] | None:
    try:
        answers = await Ledger(conn, actor="batch").transfer_batch(items)
    except asyncpg.PostgresError as e:
        outcomes.record(e)
        return None
    outcomes.counts["batch: ok"] += 1
    return answers


async def test_a_key_retried_alone_while_its_batch_is_in_flight(db: Database) -> None:
    """A client retries single transfers whose keys are inside a batch still running: replays, not deadlocks.

    No account is hot here, so every writer locks accounts in the same (id) order; only the idempotency keys'
    locks can cross.
    """
    specs = [AccountSpec("fund", "PEN", DEBIT), *(AccountSpec(f"hh-{i}", "PEN", DEBIT) for i in range(4))]
    async with db.connection() as conn:
        await open_accounts(Ledger(conn, actor="setup"), specs)
    outcomes = Outcomes()
    rounds = 20
    for round_no in range(rounds):
        if outcomes.deadlocks:
            break
        items = [(f"r{round_no}-{i}", request([(f"hh-{i}", 20_00), ("fund", -20_00)])) for i in range(4)]
        async with connections(db, 5) as conns:
            retries = (
                outcomes.attempt("retry", Ledger(c, actor="retry").transfer(req, key))
                for c, (key, req) in zip(conns[1:], items, strict=True)
            )
            answers, *_ = await asyncio.gather(batch(conns[0], items, outcomes), *retries)
        if answers is not None:
            assert [[p["account"] for p in a.postings] for a in answers] == [[f"hh-{i}", "fund"] for i in range(4)]

    outcomes.assert_clean()
    async with db.connection() as conn:
        per_key = await conn.fetchval("select count(*) from ledger.idempotency_keys")
        assert per_key == 4 * rounds
        assert await conn.fetchval("select count(*) from ledger.transfers") == 4 * rounds
        await assert_sealed_and_verified(conn)
