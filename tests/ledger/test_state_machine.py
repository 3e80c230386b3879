"""Stateful property test: random sequences of ledger operations, on the real engine and on a reference model.

Hypothesis drives a :class:`~hypothesis.stateful.RuleBasedStateMachine` whose rules open and close accounts
(either normal side, with or without ``no_overdraft``, hot or not), write posted and pending transfers of
two to four legs, post holds (in full or in part), void them, let the expiry sweep void them, reverse
transfers, replay idempotency keys, reuse keys with other requests, and try transfers that must fail
(overdrafts, unknown or closed accounts, unknown transfers). Every step runs on a real PostgreSQL database
and on :class:`tests.ledger._model.LedgerModel`; after every step the balances (posted, pending debits and
credits, available, version) of every account, every transfer's status and links, the number of transfers
and stored keys, and the trial balance must agree. Each example ends by sealing the audit chain and
verifying it, by reading every transfer back, every account's statement, and the balances as they were at
earlier steps (``balance(as_of=...)``).

Hypothesis state machines are synchronous, so the async ledger calls run on an event loop of their own in
a background thread; each example gets its own database cloned from the migrated template. The examples
are derandomized (the same on every run); set ``LEDGER_MACHINE_SHRINK=1`` to have Hypothesis shrink a
failure to its smallest sequence (minutes: every attempt clones a database).

The plain tests at the end are sequences the machine found, kept as readable examples.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import threading
from collections.abc import Coroutine, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from adapters.postgres.database import init_connection
from ledger import audit
from ledger.bulk import void_expired
from ledger.engine import Ledger
from ledger.errors import AppError, InvalidTransfer, TransferNotReversible
from ledger.models import Account, AccountSpec, NormalBalance, PostingSpec, Transfer, TransferRequest
from tests.ledger._model import LedgerModel, Leg, Result

T = TypeVar("T")

MACHINE_SETTINGS = settings(
    max_examples=35,
    stateful_step_count=45,
    derandomize=True,  # the same examples on every run: a failure here is reproducible
    database=None,
    # Shrinking replays hundreds of examples, each on a fresh database: minutes. Set LEDGER_MACHINE_SHRINK=1
    # to get the smallest failing sequence when investigating a failure.
    phases=tuple(Phase) if os.environ.get("LEDGER_MACHINE_SHRINK") else (Phase.explicit, Phase.generate),
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
MAX_ACCOUNTS = 8
UNKNOWN_TRANSFER = 10**12
amounts = st.integers(min_value=3, max_value=400_00)


class LoopThread:
    """An event loop running in a daemon thread; synchronous code submits coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ledger-machine-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Databases:
    """Fresh databases cloned from the migrated template, one per example.

    A clone costs from 30 ms on an idle server to several hundred on a busy one, and concurrent clones share
    their checkpoints, so the databases are cloned up front, several at a time; used ones are dropped in the
    background. Every method runs on the background loop.
    """

    _numbers = itertools.count(1)

    def __init__(self, server_url: str, template: str) -> None:
        self.server_url = server_url
        self.template = template
        self._ready: list[str] = []
        self._drops: set[asyncio.Task[None]] = set()

    def _url(self, name: str) -> str:
        parts = urlsplit(self.server_url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))

    async def _clone(self) -> str:
        name = f"{self.template}_machine_{os.getpid()}_{next(self._numbers)}"
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(f'create database "{name}" template "{self.template}" strategy file_copy')
        finally:
            await conn.close()
        return self._url(name)

    async def prepare(self, count: int, parallel: int = 8) -> None:
        """Clone ``count`` databases now, several at a time (concurrent clones share their checkpoints)."""
        limit = asyncio.Semaphore(parallel)

        async def clone() -> str:
            async with limit:
                return await self._clone()

        self._ready.extend(await asyncio.gather(*(clone() for _ in range(count))))

    async def create(self) -> str:
        """A fresh database's URL."""
        return self._ready.pop(0) if self._ready else await self._clone()

    async def _drop(self, url: str) -> None:
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(f'drop database if exists "{urlsplit(url).path.lstrip("/")}" with (force)')
        finally:
            await conn.close()

    def drop(self, url: str) -> None:
        task = asyncio.create_task(self._drop(url))
        self._drops.add(task)
        task.add_done_callback(self._drops.discard)

    async def settle(self) -> None:
        """Wait for the background drops: sealing stops at the oldest transaction still running on the server,
        in any database, so seal after this."""
        if self._drops:
            await asyncio.wait(self._drops)

    async def close(self) -> None:
        """Drop the databases no example used, and wait for every drop."""
        for url in self._ready:
            self.drop(url)
        self._ready.clear()
        await asyncio.gather(*self._drops)


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def databases(pg_server_url: str, template_url: str, loop_thread: LoopThread) -> Iterator[Databases]:
    """A source of fresh migrated databases, driven from the background loop."""
    source = Databases(pg_server_url, urlsplit(template_url).path.lstrip("/"))
    loop_thread.run(source.prepare(MACHINE_SETTINGS.max_examples + 10))
    try:
        yield source
    finally:
        loop_thread.run(source.close())


async def _attempt(coro: Coroutine[Any, Any, T]) -> T | AppError:
    try:
        return await coro
    except AppError as e:
        return e


def _balanced_legs(data: st.DataObject, codes: list[str]) -> list[Leg]:
    """Two to four legs on ``codes`` (repeats allowed) that sum to zero."""
    n = data.draw(st.integers(min_value=2, max_value=4), label="legs")
    debits = data.draw(st.integers(min_value=1, max_value=n - 1), label="debit legs")
    debit_amounts = data.draw(st.lists(amounts, min_size=debits, max_size=debits), label="debit amounts")
    total = sum(debit_amounts)
    credits = n - debits
    cuts = sorted(
        data.draw(
            st.lists(st.integers(1, total - 1), min_size=credits - 1, max_size=credits - 1, unique=True),
            label="credit split",
        )
    )
    bounds = [0, *cuts, total]
    credit_amounts = [bounds[i + 1] - bounds[i] for i in range(credits)]
    signed = [*debit_amounts, *(-a for a in credit_amounts)]
    order = data.draw(st.permutations(range(n)), label="leg order")
    chosen = data.draw(st.lists(st.sampled_from(codes), min_size=n, max_size=n), label="accounts")
    return [(chosen[i], signed[order[i]]) for i in range(n)]


class LedgerMachine(RuleBasedStateMachine):
    """Random operations on the real ledger and on the reference model, compared after every step."""

    def __init__(self, databases: Databases, loop: LoopThread) -> None:
        super().__init__()
        self.databases = databases
        self.loop = loop
        self.url = self.loop.run(databases.create())
        self.conn: asyncpg.Connection[Any] = self.loop.run(self._connect())
        self.ledger = Ledger(self.conn, actor="state-machine")
        self.model = LedgerModel()
        self.key_numbers = itertools.count(1)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.expiring: set[int] = set()
        self.checkpoints: list[tuple[datetime, dict[str, tuple[int, int, int, int, int]]]] = []
        now: datetime = self.loop.run(self.conn.fetchval("select clock_timestamp()"))
        self.expires_at = now + timedelta(days=1)

    async def _connect(self) -> asyncpg.Connection[Any]:
        conn = await asyncpg.connect(self.url, server_settings={"timezone": "UTC"})
        await init_connection(conn)
        return conn

    def run(self, coro: Coroutine[Any, Any, T]) -> T | AppError:
        return self.loop.run(_attempt(coro))

    def fresh_key(self, data: st.DataObject) -> str | None:
        if data.draw(st.integers(0, 5), label="no key") == 0:
            return None
        return f"key-{next(self.key_numbers)}"

    # ---------------------------------------------------------------------------------------- dispatch
    def do(self, key: str | None, call: tuple[Any, ...]) -> Result:
        """Run one write on the ledger, check it against the model, and remember it for replays."""
        op = call[0]
        result: Result
        if op == "transfer":
            _, legs, pending, expires = call
            result = self.run(self.ledger.transfer(self.request(legs, pending, expires), key))
            self.model.transfer(key, legs, pending, expires, result)
            if expires and isinstance(result, Transfer) and not result.replayed:
                self.expiring.add(result.id)
        elif op in ("post", "void"):
            _, transfer_id, amount = call
            if op == "post":
                result = self.run(self.ledger.post(transfer_id, key, amount=amount))
            else:
                result = self.run(self.ledger.void(transfer_id, key))
            self.model.resolve(key, transfer_id, op == "post", amount, result)
        elif op == "reverse":
            _, transfer_id = call
            result = self.run(self.ledger.reverse(transfer_id, key))
            self.model.reverse(key, transfer_id, result)
        else:  # pragma: no cover - the rules build only the calls above
            raise AssertionError(op)
        if key is not None:
            self.calls.append((key, call))
        return result

    def request(self, legs: tuple[Leg, ...], pending: bool, expires: bool) -> TransferRequest:
        return TransferRequest(
            postings=tuple(PostingSpec(code, debit=a) if a > 0 else PostingSpec(code, credit=-a) for code, a in legs),
            currency="PEN",
            pending=pending,
            expires_at=self.expires_at if expires else None,
        )

    def codes(self) -> list[str]:
        return sorted(self.model.accounts)

    def guarded(self) -> list[str]:
        return [c for c, a in sorted(self.model.accounts.items()) if a.no_overdraft]

    def open(self, normal: NormalBalance, no_overdraft: bool, hot: bool) -> None:
        code = f"acc-{len(self.model.accounts)}"
        result = self.run(self.ledger.create_account(AccountSpec(code, "PEN", normal, no_overdraft, hot)))
        self.model.create_account(code, normal.sign, no_overdraft, hot, result)

    # ------------------------------------------------------------------------------------------- rules
    @initialize(
        specs=st.lists(st.tuples(st.sampled_from(NormalBalance), st.booleans(), st.booleans()), min_size=1, max_size=3)
    )
    def open_accounts(self, specs: list[tuple[NormalBalance, bool, bool]]) -> None:
        self.open(NormalBalance.CREDIT, no_overdraft=False, hot=True)  # a source of money: may go negative
        for normal, no_overdraft, hot in specs:
            self.open(normal, no_overdraft, hot)

    @precondition(lambda self: len(self.model.accounts) < MAX_ACCOUNTS)
    @rule(normal=st.sampled_from(NormalBalance), no_overdraft=st.booleans(), hot=st.booleans())
    def open_account(self, normal: NormalBalance, no_overdraft: bool, hot: bool) -> None:
        self.open(normal, no_overdraft, hot)

    @rule(data=st.data())
    def open_existing_account(self, data: st.DataObject) -> None:
        code = data.draw(st.sampled_from(self.codes()))
        result = self.run(self.ledger.create_account(AccountSpec(code, "PEN", NormalBalance.DEBIT)))
        self.model.create_account(code, 1, False, False, result)

    @rule(data=st.data())
    def close_account(self, data: st.DataObject) -> None:
        code = data.draw(st.sampled_from(self.codes()))
        self.model.close_account(code, self.run(self.ledger.close_account(code)))

    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        legs = _balanced_legs(data, self.codes())
        if data.draw(st.integers(0, 9), label="unknown account") == 0:
            legs[-1] = ("nobody", legs[-1][1])
        pending = data.draw(st.booleans(), label="pending")
        expires = pending and data.draw(st.booleans(), label="expires")
        self.do(self.fresh_key(data), ("transfer", tuple(legs), pending, expires))

    @rule(data=st.data(), size=st.integers(min_value=1, max_value=3))
    def transfer_batch(self, data: st.DataObject, size: int) -> None:
        """Several transfers in one call, all or nothing; an item may replay an earlier key or repeat one."""
        earlier = [(key, call) for key, call in self.calls if call[0] == "transfer"]
        items: list[tuple[str, tuple[Leg, ...], bool, bool]] = []
        for _ in range(size):
            choice = data.draw(st.integers(0, 9), label="item kind")
            if choice == 0 and earlier:
                key, (_, legs, pending, expires) = data.draw(st.sampled_from(earlier), label="replayed item")
            elif choice == 1 and items:
                key, legs, pending, expires = items[-1][0], items[-1][1], False, False
            else:
                key = f"key-{next(self.key_numbers)}"
                legs = tuple(_balanced_legs(data, self.codes()))
                pending = data.draw(st.booleans(), label="pending")
                expires = pending and data.draw(st.booleans(), label="expires")
            items.append((key, legs, pending, expires))
        batch = [(key, self.request(legs, pending, expires)) for key, legs, pending, expires in items]
        result = self.loop.run(_attempt(self.ledger.transfer_batch(batch)))
        self.model.transfer_batch(items, result)
        if isinstance(result, list):
            for (key, legs, pending, expires), answer in zip(items, result, strict=True):
                self.calls.append((key, ("transfer", legs, pending, expires)))
                if expires and not answer.replayed:
                    self.expiring.add(answer.id)

    @precondition(lambda self: any(a.no_overdraft for a in self.model.accounts.values()))
    @rule(data=st.data(), amount=amounts)
    def deposit(self, data: st.DataObject, amount: int) -> None:
        """Money into a no_overdraft account from one that may go negative."""
        target = data.draw(st.sampled_from(self.guarded()))
        sources = [c for c, a in sorted(self.model.accounts.items()) if not a.no_overdraft]
        source = data.draw(st.sampled_from(sources))
        sign = self.model.accounts[target].normal
        legs = ((target, sign * amount), (source, -sign * amount))
        self.do(self.fresh_key(data), ("transfer", legs, False, False))

    @precondition(lambda self: any(a.no_overdraft for a in self.model.accounts.values()))
    @rule(data=st.data(), extra=st.integers(min_value=0, max_value=3), pending=st.booleans())
    def spend_available(self, data: st.DataObject, extra: int, pending: bool) -> None:
        """Take exactly the available balance (allowed) or a little more (refused) out of a guarded account."""
        code = data.draw(st.sampled_from(self.guarded()))
        other = data.draw(st.sampled_from([c for c in self.codes() if c != code]))
        account = self.model.accounts[code]
        amount = max(account.available + extra, 1)
        sign = account.outflow_sign
        legs = ((code, sign * amount), (other, -sign * amount))
        self.do(self.fresh_key(data), ("transfer", legs, pending, False))

    @rule(data=st.data(), expires=st.booleans())
    def hold(self, data: st.DataObject, expires: bool) -> None:
        """A two-posting hold, within the available balance when the paying account is guarded."""
        funded = [c for c, a in sorted(self.model.accounts.items()) if not a.no_overdraft or a.available > 0]
        source = data.draw(st.sampled_from(funded), label="from")
        target = data.draw(st.sampled_from([c for c in self.codes() if c != source]), label="to")
        account = self.model.accounts[source]
        limit = account.available if account.no_overdraft and account.available > 0 else 400_00
        amount = data.draw(st.integers(min_value=1, max_value=limit), label="amount")
        sign = account.outflow_sign
        legs = ((source, sign * amount), (target, -sign * amount))
        self.do(self.fresh_key(data), ("transfer", legs, True, expires))

    def unresolved(self) -> list[int]:
        return sorted(i for i, t in self.model.transfers.items() if t.kind == "pending" and t.outcome is None)

    def reversible(self) -> list[int]:
        return sorted(i for i, t in self.model.transfers.items() if t.status == "posted" and not t.reversed_by)

    def any_transfer(self, data: st.DataObject) -> int:
        """Any transfer id (posted, pending, resolved, a post or void event), or one that does not exist."""
        return data.draw(st.sampled_from([*sorted(self.model.transfers), UNKNOWN_TRANSFER]), label="transfer")

    @precondition(lambda self: bool(self.unresolved()))
    @rule(data=st.data())
    def post_hold(self, data: st.DataObject) -> None:
        """Post a pending hold: everything, or part of a two-posting hold (zero and all included)."""
        transfer_id = data.draw(st.sampled_from(self.unresolved()), label="pending")
        target = self.model.transfers[transfer_id]
        partial = len(target.legs) == 2 and data.draw(st.integers(0, 3), label="partial") > 0
        amount = data.draw(st.integers(min_value=0, max_value=target.held()), label="amount") if partial else None
        self.do(self.fresh_key(data), ("post", transfer_id, amount))

    @precondition(lambda self: bool(self.unresolved()))
    @rule(data=st.data())
    def void_hold(self, data: st.DataObject) -> None:
        transfer_id = data.draw(st.sampled_from(self.unresolved()), label="pending")
        self.do(self.fresh_key(data), ("void", transfer_id, None))

    @rule(data=st.data(), post=st.booleans())
    def resolve_anything(self, data: st.DataObject, post: bool) -> None:
        """Post or void any transfer, with odd amounts: most are refused (not pending, not found, invalid)."""
        transfer_id = self.any_transfer(data)
        target = self.model.transfers.get(transfer_id)
        held = target.held() if target else 100
        amount = data.draw(st.sampled_from([None, -1, 0, held, held + 1]), label="amount") if post else None
        self.do(self.fresh_key(data), ("post" if post else "void", transfer_id, amount))

    @precondition(lambda self: bool(self.reversible()))
    @rule(data=st.data())
    def reverse_posted(self, data: st.DataObject) -> None:
        reversible = self.reversible()
        holds = [i for i in reversible if self.model.transfers[i].kind == "pending"]
        if holds and data.draw(st.booleans(), label="a posted hold"):
            reversible = holds
        transfer_id = data.draw(st.sampled_from(reversible), label="posted")
        self.do(self.fresh_key(data), ("reverse", transfer_id))

    @rule(data=st.data())
    def reverse_anything(self, data: st.DataObject) -> None:
        self.do(self.fresh_key(data), ("reverse", self.any_transfer(data)))

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """Send an earlier request again under its key: the first answer, or a first try if it had failed."""
        key, call = data.draw(st.sampled_from(self.calls))
        self.do(key, call)

    @precondition(lambda self: bool(self.model.keys))
    @rule(data=st.data())
    def reuse_key(self, data: st.DataObject) -> None:
        """Another request under a key already used: refused, whatever the request."""
        key = data.draw(st.sampled_from(sorted(self.model.keys)))
        original = self.model.keys[key][0]
        others: list[tuple[Any, ...]] = [
            ("reverse", UNKNOWN_TRANSFER),
            ("void", UNKNOWN_TRANSFER, None),
            ("post", original[1] if original[0] in ("post", "void") else UNKNOWN_TRANSFER, 1),
        ]
        if original[0] == "transfer":
            legs = original[1]
            doubled = tuple((code, 2 * amount) for code, amount in legs)
            others.append(("transfer", doubled, original[2], original[3]))
            others.append(("transfer", legs, not original[2], False))
        call = data.draw(st.sampled_from([c for c in others if c != original]))
        self.do(key, call)

    @rule()
    def expiry_sweep(self) -> None:
        """The sweep runs as if the expiry time had passed: every unresolved hold with an expiry is voided."""
        due = sorted(i for i in self.expiring if self.model.transfers[i].outcome is None)

        async def sweep() -> tuple[int, dict[int, int]]:
            async with self.conn.transaction():
                count = await void_expired(self.conn, now=self.expires_at + timedelta(seconds=1))
            events = {}
            for pid in due:
                t = await self.ledger.get_transfer(pid)
                assert t.status == "expired", f"swept transfer {pid} is {t.status}"
                assert t.resolved_by is not None
                events[pid] = t.resolved_by
            return count, events

        count, events = self.loop.run(sweep())
        assert count == len(due), f"the sweep voided {count} holds, the model expected {len(due)}"
        self.model.expire(due, events)

    # -------------------------------------------------------------------------------------- invariants
    @invariant()
    def ledger_agrees_with_model(self) -> None:
        async def read() -> tuple[dict[str, Account], asyncpg.Record]:
            accounts = await self.ledger.get_accounts(self.codes())
            totals = await self.conn.fetchrow(
                """select (select coalesce(sum(posted * normal_balance), 0) from ledger.accounts) as net,
                          (select coalesce(sum(pending_debits), 0) from ledger.accounts) as pd,
                          (select coalesce(sum(pending_credits), 0) from ledger.accounts) as pc,
                          (select count(*) from ledger.transfers) as transfers,
                          (select count(*) from ledger.idempotency_keys) as keys,
                          (select coalesce(jsonb_agg(ledger.transfer_json(id)), '[]') from unnest($1::bigint[]) id)
                              as documents,
                          clock_timestamp() as now""",
                sorted(self.model.transfers),
            )
            assert totals is not None
            return accounts, totals

        accounts, totals = self.loop.run(read())
        self.model.assert_balances(accounts)
        self.model.assert_trial_balance()
        assert totals["net"] == 0, f"trial balance: debits minus credits is {totals['net']}"
        assert totals["pd"] == totals["pc"], f"pending debits {totals['pd']} != pending credits {totals['pc']}"
        for document in totals["documents"]:
            assert document is not None, "a transfer the model knows is missing from the ledger"
            self.model.assert_transfer(document)
        count, keys = totals["transfers"], totals["keys"]
        assert count == len(self.model.transfers), f"{count} transfers, the model has {len(self.model.transfers)}"
        assert keys == len(self.model.keys), f"{keys} idempotency keys stored, the model has {len(self.model.keys)}"
        now = totals["now"]
        self.checkpoints.append((now, {c: a.balance() for c, a in self.model.accounts.items()}))

    def teardown(self) -> None:
        try:
            if sys.exc_info()[1] is None:  # only when every step passed: never mask the first failure
                self.loop.run(self.final_checks())
        finally:
            self.loop.run(self.conn.close())
            self.loop.loop.call_soon_threadsafe(self.databases.drop, self.url)

    async def final_checks(self) -> None:
        for transfer_id in sorted(self.model.transfers):
            self.model.assert_transfer((await self.ledger.get_transfer(transfer_id)).to_dict())
        for code, account in self.model.accounts.items():
            lines, cursor = await self.ledger.statement(code, limit=1_000)
            assert cursor is None
            assert [line.version for line in lines] == list(range(account.version, 0, -1)), f"statement of {code}"
            if lines:
                last = lines[0]
                got = (last.posted_after, last.pending_debits_after, last.pending_credits_after)
                assert got == account.balance()[:3], f"statement of {code} ends at {got}"
        for at, snapshot in self.checkpoints[:: max(1, len(self.checkpoints) // 8)]:
            for code, expected in snapshot.items():
                b = await self.ledger.balance(code, as_of=at)
                got = (b.posted, b.pending_debits, b.pending_credits, b.available, b.version)
                assert got == expected, f"balance of {code} as of {at.isoformat()}: {got} != {expected}"
        await self.databases.settle()
        sealed = await audit.seal(self.conn, block_size=16)
        assert sealed.transfers == len(self.model.transfers), f"sealed {sealed.transfers} transfers"
        report = await audit.verify(self.conn)
        assert report.ok, report.problems
        assert report.sealed == report.transfers == len(self.model.transfers)


def test_ledger_matches_reference_model(databases: Databases, loop_thread: LoopThread) -> None:
    run_state_machine_as_test(lambda: LedgerMachine(databases, loop_thread), settings=MACHINE_SETTINGS)


# Sequences the machine found, kept as plain examples so they fail on their own, with a readable story.


async def _household_hold(conn: asyncpg.Connection[Any]) -> tuple[Ledger, Transfer]:
    """A household holding S/ 100.00 paid out by the program, then a hold of all of it towards the bank."""
    ledger = Ledger(conn, actor="test")
    await ledger.create_account(AccountSpec("program", "PEN", NormalBalance.CREDIT))
    await ledger.create_account(AccountSpec("household", "PEN", NormalBalance.DEBIT, no_overdraft=True))
    await ledger.create_account(AccountSpec("bank", "PEN", NormalBalance.DEBIT))
    payout = (PostingSpec("household", debit=100_00), PostingSpec("program", credit=100_00))
    await ledger.transfer(TransferRequest(payout, "PEN"), "payout")
    withdrawal = (PostingSpec("bank", debit=100_00), PostingSpec("household", credit=100_00))
    hold = await ledger.transfer(TransferRequest(withdrawal, "PEN", pending=True), "withdrawal-hold")
    return ledger, hold


async def test_reversing_a_partly_posted_hold_moves_back_only_what_was_posted(conn: asyncpg.Connection[Any]) -> None:
    ledger, hold = await _household_hold(conn)
    await ledger.post(hold.id, "withdrawal-post", amount=30_00)  # S/ 30 left the household, S/ 70 released
    assert (await ledger.balance("household")).posted == 70_00

    reversal = await ledger.reverse(hold.id, "withdrawal-reversal")

    assert list(reversal.postings) == [{"account": "bank", "credit": 30_00}, {"account": "household", "debit": 30_00}]
    assert (await ledger.balance("household")).posted == 100_00  # back to what it had, not S/ 170
    assert (await ledger.balance("bank")).posted == 0


async def test_posting_zero_is_refused_and_moves_nothing(conn: asyncpg.Connection[Any]) -> None:
    ledger, hold = await _household_hold(conn)
    with pytest.raises(InvalidTransfer, match="void"):
        await ledger.post(hold.id, "withdrawal-post", amount=0)
    assert (await ledger.get_transfer(hold.id)).status == "pending"
    with pytest.raises(TransferNotReversible):
        await ledger.reverse(hold.id, "withdrawal-reversal")
    assert (await ledger.balance("household")).posted == 100_00
    assert (await ledger.balance("bank")).posted == 0


@pytest.mark.parametrize("amount", [None, 30_00])
async def test_posted_amount_is_an_integer_of_minor_units(conn: asyncpg.Connection[Any], amount: int | None) -> None:
    ledger, hold = await _household_hold(conn)
    posted = await ledger.post(hold.id, "withdrawal-post", amount=amount)
    again = await ledger.get_transfer(hold.id)

    expected = 100_00 if amount is None else amount
    for answer in (posted, again):
        assert answer.posted_amount == expected
        assert type(answer.posted_amount) is int, f"posted_amount is {answer.posted_amount!r}"
