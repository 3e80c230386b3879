"""Online transfers in groups (``ledger.groups``, migration 0008) against the real database.

* a group writes exactly the rows the same transfers write one after the other (transfers, postings with
  their running balances and versions, balances, stored responses), holds and several legs on one account
  included;
* a group that holds any transfer the single path would refuse or replay writes nothing and says so;
* the overdraft rule applies after each transfer in the group's order, not to the group's net;
* ``TransferGroups``: concurrent callers are written together, each gets its own answer (a refusal or a
  replay in a group does not touch the others), the same key never goes twice into a group.
"""

from __future__ import annotations

import asyncio
import importlib
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from adapters.postgres.database import Database
from ledger.engine import Ledger
from ledger.errors import (
    AccountClosed,
    AccountNotFound,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidTransfer,
    PeriodClosed,
)
from ledger.groups import GroupedTransfer, TransferGroups, create_together
from ledger.models import AccountSpec, NormalBalance, PostingSpec, Transfer, TransferRequest

DEBIT, CREDIT = NormalBalance.DEBIT, NormalBalance.CREDIT
SIGNATURE: str = importlib.import_module("migrations.versions.0008_transfer_groups").SIGNATURE


def pay(legs: list[tuple[str, int]], **extra: Any) -> TransferRequest:
    postings = tuple(PostingSpec(c, debit=a) if a > 0 else PostingSpec(c, credit=-a) for c, a in legs)
    return TransferRequest(postings, extra.pop("currency", "PEN"), **extra)


async def chart(conn: asyncpg.Connection, prefix: str, funded: int = 1_000_00) -> None:
    """``<prefix>:src`` (credit-normal, may go negative), three guarded households funded with ``funded``."""
    led = Ledger(conn, "setup")
    await led.create_account(AccountSpec(f"{prefix}:src", "PEN", CREDIT))
    for h in ("a", "b", "c"):
        await led.create_account(AccountSpec(f"{prefix}:{h}", "PEN", DEBIT, no_overdraft=True))
        await led.transfer(pay([(f"{prefix}:{h}", funded), (f"{prefix}:src", -funded)]), f"{prefix}:fund:{h}")


def script(p: str) -> list[TransferRequest]:
    """A mix: plain, several legs on one account, a hold, business time and metadata."""
    return [
        pay([(f"{p}:a", -30_00), (f"{p}:b", 30_00)], description="one", metadata={"n": 1}),
        pay([(f"{p}:b", -5_00), (f"{p}:b", -6_00), (f"{p}:c", 11_00)]),
        pay([(f"{p}:c", -40_00), (f"{p}:a", 40_00)], pending=True, expires_at=datetime.now(UTC) + timedelta(days=1)),
        pay([(f"{p}:a", -1_00), (f"{p}:c", 1_00)], effective_at=datetime(2026, 1, 5, tzinfo=UTC)),
        pay([(f"{p}:c", -2_00), (f"{p}:b", 2_00)]),
    ]


async def rows(conn: asyncpg.Connection, ids: list[int], prefix: str) -> dict[str, Any]:
    """What the transfers wrote, with ids and record times replaced by their order and codes unprefixed."""
    order = {tid: n for n, tid in enumerate(ids)}
    transfers = await conn.fetch(
        """select id, kind, currency, effective_at, created_at, expires_at, description, metadata, actor, txid
             from ledger.transfers where id = any($1) order by id""",
        ids,
    )
    postings = await conn.fetch(
        """select p.transfer_id, a.code, p.version, p.leg, p.amount, p.phase, p.posted_after, p.pending_debits_after,
                  p.pending_credits_after, p.recorded_at
             from ledger.postings p join ledger.accounts a on a.id = p.account_id
            where p.transfer_id = any($1) order by p.transfer_id, p.leg""",
        ids,
    )
    balances = await conn.fetch(
        "select code, posted, pending_debits, pending_credits, version from ledger.accounts where code like $1 || ':%'",
        prefix,
    )
    strip = len(prefix) + 1
    return {
        "transfers": [
            (
                order[t["id"]],
                t["kind"],
                t["currency"],
                t["description"],
                t["metadata"],
                t["actor"],
                t["effective_at"] == t["created_at"],
                t["expires_at"] is not None,
            )
            for t in transfers
        ],
        "ids_ascend_in_order": [order[t["id"]] for t in transfers] == sorted(order.values()),
        "recorded_at_is_created_at": all(
            p["recorded_at"] == next(t["created_at"] for t in transfers if t["id"] == p["transfer_id"])
            for p in postings
        ),
        "postings": [
            (order[p["transfer_id"]], p["code"][strip:], *(p[k] for k in list(p.keys())[2:9])) for p in postings
        ],
        "balances": sorted((b["code"][strip:], *tuple(b)[1:]) for b in balances),
        "keys": await conn.fetchval(
            "select count(*) from ledger.idempotency_keys where key like $1 || ':t%'",
            prefix,
        ),
    }


async def test_a_group_writes_what_the_transfers_write_one_after_the_other(conn: asyncpg.Connection) -> None:
    await chart(conn, "one")
    await chart(conn, "grp")
    led = Ledger(conn, "ana")
    single = [await led.transfer(r, f"one:t{n}") for n, r in enumerate(script("one"))]
    items = [GroupedTransfer(r, f"grp:t{n}", "ana") for n, r in enumerate(script("grp"))]
    together = await create_together(conn, items)
    assert together is not None

    for s, g in zip(single, together, strict=True):  # the same answers, but for ids, times and codes
        assert (g.kind, g.status, g.actor, g.description, g.metadata, g.replayed) == (
            s.kind,
            s.status,
            s.actor,
            s.description,
            s.metadata,
            False,
        )
        assert [p["account"][4:] for p in g.postings] == [p["account"][4:] for p in s.postings]
    assert await rows(conn, [t.id for t in together], "grp") == await rows(conn, [t.id for t in single], "one")
    # one transaction: every transfer of the group has the same txid
    assert (
        await conn.fetchval(
            "select count(distinct txid) from ledger.transfers where id = any($1)", [t.id for t in together]
        )
        == 1
    )

    # each one's key replays it on the single path, with the same answer
    again = await led.transfer(items[2].request, "grp:t2")
    assert (again.id, again.replayed, again.status, again.postings) == (
        together[2].id,
        True,
        "pending",
        together[2].postings,
    )


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (lambda p: pay([(f"{p}:a", -2_000_00), (f"{p}:b", 2_000_00)]), InsufficientFunds),
        (lambda p: pay([(f"{p}:a", -1_00), (f"{p}:nobody", 1_00)]), AccountNotFound),
        (lambda p: pay([(f"{p}:a", -1_00), (f"{p}:usd", 1_00)]), CurrencyMismatch),
        (lambda p: pay([(f"{p}:a", -1_00), (f"{p}:closed", 1_00)]), AccountClosed),
        (
            lambda p: pay([(f"{p}:a", -1_00), (f"{p}:b", 1_00)], effective_at=datetime(2020, 3, 1, tzinfo=UTC)),
            PeriodClosed,
        ),
        (
            lambda p: pay(
                [(f"{p}:a", -1_00), (f"{p}:b", 1_00)], pending=True, expires_at=datetime(2020, 1, 1, tzinfo=UTC)
            ),
            InvalidTransfer,
        ),
    ],
)
async def test_a_group_the_single_path_would_refuse_in_part_writes_nothing(
    conn: asyncpg.Connection, bad: Any, error: type[Exception]
) -> None:
    p = "ref"
    await chart(conn, p)
    led = Ledger(conn, "setup")
    await led.create_account(AccountSpec(f"{p}:usd", "USD", DEBIT))
    await led.create_account(AccountSpec(f"{p}:closed", "PEN", DEBIT))
    await led.close_account(f"{p}:closed")
    await led.close_period("2020-Q1", datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 4, 1, tzinfo=UTC))
    before = await rows(conn, [], p), await conn.fetchval("select count(*) from ledger.transfers")
    good = pay([(f"{p}:a", -1_00), (f"{p}:b", 1_00)])
    items = [
        GroupedTransfer(good, "k1", "ana"),
        GroupedTransfer(bad(p), "k2", "ana"),
        GroupedTransfer(good, "k3", "ana"),
    ]

    assert await create_together(conn, items) is None
    assert (await rows(conn, [], p), await conn.fetchval("select count(*) from ledger.transfers")) == before
    assert await conn.fetchval("select count(*) from ledger.idempotency_keys where key in ('k1', 'k2', 'k3')") == 0
    with pytest.raises(error):  # alone, the transfer names its reason
        await Ledger(conn, "ana").transfer(items[1].request, "k2")


async def test_a_group_holding_a_used_key_writes_nothing(conn: asyncpg.Connection) -> None:
    await chart(conn, "key")
    first = pay([("key:a", -1_00), ("key:b", 1_00)])
    await Ledger(conn, "ana").transfer(first, "used")
    count = await conn.fetchval("select count(*) from ledger.transfers")
    items = [
        GroupedTransfer(pay([("key:b", -1_00), ("key:c", 1_00)]), "fresh", "ana"),
        GroupedTransfer(first, "used", "ana"),
    ]
    assert await create_together(conn, items) is None
    assert await conn.fetchval("select count(*) from ledger.transfers") == count
    with pytest.raises(ValueError, match="distinct"):
        await create_together(conn, [items[0], items[0]])


async def test_the_overdraft_rule_applies_after_each_transfer_in_order(conn: asyncpg.Connection) -> None:
    await chart(conn, "ord", funded=100_00)
    out = GroupedTransfer(pay([("ord:a", -150_00), ("ord:b", 150_00)]), "out", "ana")
    into = GroupedTransfer(pay([("ord:c", -100_00), ("ord:a", 100_00)]), "in", "ana")
    assert await create_together(conn, [out, into]) is None  # a would be at -50.00 between the two
    written = await create_together(conn, [into, out])
    assert written is not None
    assert (await Ledger(conn).balance("ord:a")).posted == 50_00
    versions = await conn.fetch(
        """select p.version, p.posted_after from ledger.postings p join ledger.accounts a on a.id = p.account_id
            where a.code = 'ord:a' and p.transfer_id = any($1) order by p.version""",
        [t.id for t in written],
    )
    assert [tuple(v) for v in versions] == [(2, 200_00), (3, 50_00)]


async def test_concurrent_callers_are_written_together_each_with_its_answer(db: Database) -> None:
    async with db.connection() as conn:
        await chart(conn, "cc", funded=100_00)
    groups = TransferGroups(db.connection, max_items=16)

    async def call(n: int, request: TransferRequest, key: str | None = None) -> Transfer | Exception:
        try:
            return await groups.transfer(request, key or f"cc:{n}", f"user-{n}")
        except Exception as e:
            return e

    small = pay([("cc:a", -1_00), ("cc:b", 1_00)])
    # One call overdraws, one names an unknown account, one reuses a key with another body, one repeats a
    # request with its key: the others are written all the same.
    calls = [call(n, small) for n in range(8)]
    calls += [
        call(8, pay([("cc:c", -500_00), ("cc:b", 500_00)])),
        call(9, pay([("cc:c", -1_00), ("cc:nobody", 1_00)])),
        call(10, pay([("cc:b", -2_00), ("cc:c", 2_00)]), key="cc:0"),
        call(11, small, key="cc:1"),
    ]
    results = await asyncio.gather(*calls)

    assert [type(r).__name__ for r in results[8:10]] == ["InsufficientFunds", "AccountNotFound"]
    written = [r for r in results[:8] if isinstance(r, Transfer)]
    assert len(written) == 8
    assert len({t.id for t in written}) == 8
    assert [t.actor for t in written] == [f"user-{n}" for n in range(8)]
    # the key's second use is answered after the first is written: a conflict, and a replay
    assert isinstance(results[10], IdempotencyConflict)
    replay = results[11]
    assert isinstance(replay, Transfer)
    assert (replay.replayed, replay.id) == (True, written[1].id)
    async with db.connection() as conn:
        led = Ledger(conn)
        assert (await led.balance("cc:a")).posted == 92_00
        assert (await led.balance("cc:b")).posted == 108_00
        assert (await led.balance("cc:c")).posted == 100_00
    stats = groups.stats
    # The first group held the refusals, the second the keys used again: each of their transfers went alone.
    assert (stats.grouped, stats.fallbacks) == (0, 2)
    assert stats.alone == 12  # every call was taken once, the repeated keys after the first

    # Without a refusal, the callers waiting together are written together, each with its own key and actor.
    again = await asyncio.gather(*(call(20 + n, small) for n in range(6)))
    assert (stats.grouped, stats.fallbacks, stats.sizes.get(6)) == (6, 2, 1)
    assert [t.actor for t in again if isinstance(t, Transfer)] == [f"user-{20 + n}" for n in range(6)]
    async with db.connection() as conn:
        assert (await Ledger(conn).balance("cc:a")).posted == 86_00


async def test_a_caller_gone_before_its_group_fell_back_is_not_written(db: Database) -> None:
    async with db.connection() as conn:
        await chart(conn, "gone", funded=100_00)
    groups = TransferGroups(db.connection, max_items=8, workers=1)
    small = pay([("gone:a", -1_00), ("gone:b", 1_00)])
    stays = asyncio.create_task(groups.transfer(small, "gone:stays", "ana"))
    leaves = asyncio.create_task(groups.transfer(small, "gone:leaves", "ana"))
    refused = asyncio.create_task(groups.transfer(pay([("gone:a", -900_00), ("gone:b", 900_00)]), "gone:no", "ana"))
    while groups.stats.groups == 0:  # the worker has taken the three and is writing them as one
        await asyncio.sleep(0)
    leaves.cancel()
    assert not (await stays).replayed
    with pytest.raises(InsufficientFunds):
        await refused
    with pytest.raises(asyncio.CancelledError):
        await leaves
    async with db.connection() as conn:
        keys = await conn.fetch(
            "select key from ledger.idempotency_keys where key like 'gone:%' and key not like 'gone:fund:%'"
        )
    assert [k["key"] for k in keys] == ["gone:stays"]


async def test_callers_under_load_share_groups(db: Database) -> None:
    async with db.connection() as conn:
        await chart(conn, "load", funded=10_000_00)
        led = Ledger(conn, "setup")  # and a hot account (a program fund: locked after the others)
        await led.create_account(AccountSpec("load:hot", "PEN", DEBIT, no_overdraft=True, hot=True))
        await led.transfer(pay([("load:hot", 10_000_00), ("load:src", -10_000_00)]), "load:fund:hot")
    groups = TransferGroups(db.connection, max_items=8, workers=2)
    codes = ["load:a", "load:b", "load:c", "load:hot"]

    async def client(n: int) -> list[Transfer]:
        out = []
        for i in range(10):
            src, dst = codes[(n + i) % 4], codes[(n + i + 1) % 4]
            out.append(await groups.transfer(pay([(src, -(n + 1)), (dst, n + 1)]), f"load:{n}:{i}", "bench"))
        return out

    async def single(n: int) -> list[Transfer]:  # alongside, one transfer per transaction, the other way
        out = []
        async with db.connection() as conn:
            led = Ledger(conn, "single")
            for i in range(10):
                src, dst = codes[(n + i + 1) % 4], codes[(n + i) % 4]
                out.append(await led.transfer(pay([(src, -(n + 1)), (dst, n + 1)]), f"load:single:{n}:{i}"))
        return out

    results = await asyncio.gather(*(client(n) for n in range(12)), *(single(n) for n in range(3)))
    assert sum(len(r) for r in results) == 150
    assert all(not t.replayed for r in results for t in r)
    assert groups.stats.grouped > 60  # most were written in groups
    assert groups.stats.fallbacks == 0
    assert max(groups.stats.sizes) <= 8
    async with db.connection() as conn:
        total = await conn.fetchval(
            "select sum(posted) from ledger.accounts where code = any($1)",
            codes,
        )
        versions = await conn.fetch(
            """select a.code, a.version, count(p.*) as n from ledger.accounts a
                 join ledger.postings p on p.account_id = a.id where a.code = any($1) group by a.code, a.version""",
            codes,
        )
    assert total == 4 * 10_000_00  # money moved among the four, none made or lost
    assert all(v["version"] == v["n"] for v in versions)


async def test_callers_right_after_a_worker_ends_are_taken(db: Database) -> None:
    """Two callers in a loop with one worker: the worker answers their group, looks at the queue (empty) and
    ends; the callers' next calls come before its task has finished, and must start a worker, not wait for
    the ending one."""
    async with db.connection() as conn:
        await chart(conn, "seq")
    groups = TransferGroups(db.connection, max_items=8, workers=1)
    request = pay([("seq:a", -1_00), ("seq:b", 1_00)])

    async def caller(c: int) -> list[bool]:
        return [(await groups.transfer(request, f"seq:{c}:{n}", "ana")).replayed for n in range(5)]

    both = asyncio.gather(caller(0), caller(1))
    assert await asyncio.wait_for(both, timeout=30) == [[False] * 5, [False] * 5]
    assert groups.stats.grouped == 10


async def test_a_group_statement_that_fails_falls_back_to_each_alone(db: Database) -> None:
    """Any failure of the group's statement (here: the function is missing) leaves each transfer to go alone,
    with its own answer, and is logged."""
    async with db.connection() as conn:
        await chart(conn, "fail", funded=100_00)
        await conn.execute(f"drop function {SIGNATURE}")
    groups = TransferGroups(db.connection, max_items=8)
    small = pay([("fail:a", -1_00), ("fail:b", 1_00)])
    with capture_logs() as logs:
        results = await asyncio.gather(*(groups.transfer(small, f"fail:{n}", "ana") for n in range(5)))
    assert len({t.id for t in results}) == 5
    assert (groups.stats.grouped, groups.stats.fallbacks, groups.stats.alone) == (0, 1, 5)
    assert [e["error"] for e in logs if e["event"] == "transfer_groups.group_failed"] == ["UndefinedFunctionError"]
    async with db.connection() as conn:
        assert (await Ledger(conn).balance("fail:b")).posted == 105_00


async def test_groups_of_one_write_each_in_its_callers_task(db: Database) -> None:
    async with db.connection() as conn:
        await chart(conn, "one1", funded=100_00)
    groups = TransferGroups(db.connection, max_items=1)
    small = pay([("one1:a", -1_00), ("one1:b", 1_00)])
    results = await asyncio.gather(*(groups.transfer(small, f"one1:{n}", "ana") for n in range(6)))
    assert len({t.id for t in results}) == 6
    assert (groups.stats.groups, groups.stats.alone) == (0, 6)  # no worker, no queue


def test_group_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="max_items"):
        TransferGroups(lambda: None, max_items=0)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="workers"):
        TransferGroups(lambda: None, workers=0)  # type: ignore[arg-type,return-value]
