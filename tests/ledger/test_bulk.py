"""The set-based path: same rows as the online path, idempotent chunks, checks for the whole chunk."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from adapters.postgres.database import Database
from ledger import audit, bulk
from ledger.engine import Ledger
from ledger.errors import (
    AccountClosed,
    AccountNotFound,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidTransfer,
    TransferNotFound,
    TransferNotPending,
)
from ledger.models import AccountSpec, NormalBalance, PostingSpec, TransferRequest

N = 25
TARGETS = [*range(N), 0, 1]  # households 0 and 1 are paid twice: two postings on one account in a chunk
AMOUNTS = [100 + 7 * i for i in range(N)] + [55, 66]

_POSTINGS = """
select a.code, p.version, p.leg, p.amount, p.phase, p.posted_after, p.pending_debits_after, p.pending_credits_after
  from ledger.postings p join ledger.accounts a on a.id = p.account_id
 where p.transfer_id > $1
 order by a.code, p.version
"""
_BALANCES = "select code, posted, pending_debits, pending_credits, version from ledger.accounts order by code"


async def _setup(conn: asyncpg.Connection) -> tuple[int, list[int], int]:
    led = Ledger(conn)
    await led.create_account(AccountSpec("treasury", "PEN", NormalBalance.DEBIT))
    fund = await led.create_account(AccountSpec("fund", "PEN", NormalBalance.CREDIT, no_overdraft=True, hot=True))
    await led.transfer(
        TransferRequest((PostingSpec("treasury", debit=10_000_00), PostingSpec("fund", credit=10_000_00)), "PEN"), "f"
    )
    ids = []
    for i in range(N):
        acct = await led.create_account(AccountSpec(f"hh:{i:03d}", "PEN", NormalBalance.CREDIT, no_overdraft=True))
        ids.append(acct.id)
    start = await conn.fetchval("select max(id) from ledger.transfers")
    return fund.id, ids, start


async def _written(conn: asyncpg.Connection, start: int) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The postings written after transfer ``start``, and every account's balances."""
    return [tuple(r) for r in await conn.fetch(_POSTINGS, start)], [tuple(r) for r in await conn.fetch(_BALANCES)]


@contextlib.asynccontextmanager
async def _two_ledgers(new_database: Callable[[], Awaitable[str]]) -> AsyncIterator[tuple[Database, Database]]:
    """Two fresh databases: the same transfers written online in one and as chunks in the other."""
    online_db = await Database.connect(await new_database())
    bulk_db = await Database.connect(await new_database())
    try:
        yield online_db, bulk_db
    finally:
        await online_db.close()
        await bulk_db.close()


async def test_bulk_and_online_write_identical_rows(new_database: Callable[[], Awaitable[str]]) -> None:
    """The same holds, then posts, written one at a time and as chunks leave identical postings."""
    async with _two_ledgers(new_database) as (online_db, bulk_db):
        async with online_db.connection() as conn:
            _, _, start = await _setup(conn)
            led = Ledger(conn)
            holds = []
            for k, (i, amount) in enumerate(zip(TARGETS, AMOUNTS, strict=True)):
                request = TransferRequest(
                    (PostingSpec("fund", debit=amount), PostingSpec(f"hh:{i:03d}", credit=amount)), "PEN", pending=True
                )
                holds.append((await led.transfer(request, f"hold-{k}")).id)
            for k, hold in enumerate(holds):
                await led.post(hold, f"post-{k}")
            online_rows, online_balances = await _written(conn, start)
        async with bulk_db.connection() as conn:
            fund, ids, start = await _setup(conn)
            rows = [bulk.BulkTransfer(fund, ids[i], amount) for i, amount in zip(TARGETS, AMOUNTS, strict=True)]
            async with conn.transaction():
                held = await bulk.bulk_transfer(conn, rows, key="holds", currency="PEN", pending=True)
            async with conn.transaction():
                pending_ids = [i for i in held.transfer_ids if i is not None]
                await bulk.bulk_resolve(conn, pending_ids, key="posts", post=True)
            bulk_rows, bulk_balances = await _written(conn, start)
            assert (await audit.verify(conn)).ok
    assert len(online_rows) == 4 * len(TARGETS)
    assert bulk_rows == online_rows
    assert bulk_balances == online_balances


async def test_chunk_replay_returns_the_same_ids_and_reuse_is_refused(conn: asyncpg.Connection) -> None:
    fund, ids, _ = await _setup(conn)
    rows = [bulk.BulkTransfer(fund, i, 10_00) for i in ids]
    async with conn.transaction():
        first = await bulk.bulk_transfer(conn, rows, key="chunk-1", currency="PEN")
    async with conn.transaction():
        again = await bulk.bulk_transfer(conn, rows, key="chunk-1", currency="PEN")
    assert again.replayed
    assert again.transfer_ids == first.transfer_ids
    assert (await Ledger(conn).balance("fund")).posted == 10_000_00 - N * 10_00
    with pytest.raises(IdempotencyConflict):
        async with conn.transaction():
            await bulk.bulk_transfer(conn, rows[:-1], key="chunk-1", currency="PEN")


async def test_a_chunk_can_use_ids_reserved_before_it(conn: asyncpg.Connection) -> None:
    fund, ids, _ = await _setup(conn)
    rows = [bulk.BulkTransfer(fund, i, 10_00) for i in ids[:3]]
    async with conn.transaction():
        reserved = await bulk.reserve_transfer_ids(conn, 3)
        # Recorded elsewhere first (as the payment run records its outcomes), then written under those ids.
        written = await bulk.bulk_transfer(conn, rows, key="reserved", currency="PEN", transfer_ids=reserved)
    assert written.transfer_ids == reserved
    by_id = dict(await conn.fetch("select transfer_id, account_id from ledger.postings where leg = 2"))
    assert [by_id[t] for t in reserved] == ids[:3]
    for wrong in (reserved[:2], [reserved[0]] * 3):
        with pytest.raises(InvalidTransfer, match="transfer_ids"):
            async with conn.transaction():
                await bulk.bulk_transfer(conn, rows, key="wrong", currency="PEN", transfer_ids=wrong)
    assert await conn.fetchval("select count(*) from ledger.transfers") == 1 + 3


async def test_chunk_overdraft_is_refused_whole_and_names_the_fund(conn: asyncpg.Connection) -> None:
    fund, ids, _ = await _setup(conn)
    rows = [bulk.BulkTransfer(fund, i, 500_00) for i in ids]  # 25 x 500 > 10,000
    with pytest.raises(InsufficientFunds) as err:
        async with conn.transaction():
            await bulk.bulk_transfer(conn, rows, key="too-much", currency="PEN")
    assert err.value.extra["account"] == "fund"
    assert (await Ledger(conn).balance("fund")).posted == 10_000_00
    assert await conn.fetchval("select count(*) from ledger.transfers") == 1


async def test_bad_rows_are_named(conn: asyncpg.Connection) -> None:
    fund, ids, _ = await _setup(conn)
    with pytest.raises(AccountNotFound, match=r"rows\[1\]"):
        async with conn.transaction():
            await bulk.bulk_transfer(
                conn, [bulk.BulkTransfer(fund, ids[0], 1), bulk.BulkTransfer(fund, 987654, 1)], key="x", currency="PEN"
            )
    with pytest.raises(InvalidTransfer, match=r"rows\[0\]"):
        async with conn.transaction():
            await bulk.bulk_transfer(conn, [bulk.BulkTransfer(fund, ids[0], 0)], key="y", currency="PEN")
    with pytest.raises(InvalidTransfer, match=r"rows\[0\]"):
        async with conn.transaction():
            await bulk.bulk_transfer(conn, [bulk.BulkTransfer(fund, ids[0], 1.0)], key="z", currency="PEN")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="transaction"):
        await bulk.bulk_transfer(conn, [bulk.BulkTransfer(fund, ids[0], 1)], key="w", currency="PEN")
    led = Ledger(conn)
    closed = (await led.create_account(AccountSpec("hh:closed", "PEN", NormalBalance.CREDIT))).id
    await led.close_account("hh:closed")
    dollars = (await led.create_account(AccountSpec("hh:usd", "USD", NormalBalance.CREDIT))).id
    for bad, error, named in (
        (bulk.BulkTransfer(fund, closed, 1), AccountClosed, "account hh:closed is closed"),
        (bulk.BulkTransfer(dollars, ids[1], 1), CurrencyMismatch, "account hh:usd is in USD"),
    ):
        rows = [bulk.BulkTransfer(fund, ids[0], 1), bulk.BulkTransfer(fund, ids[2], 1), bad]
        with pytest.raises(error, match=rf"rows\[2\]: {named}"):
            async with conn.transaction():
                await bulk.bulk_transfer(conn, rows, key="bad", currency="PEN")
    assert await conn.fetchval("select count(*) from ledger.transfers") == 1  # only the funding


async def test_a_bad_account_on_either_side_refuses_the_chunk_and_moves_no_balance(conn: asyncpg.Connection) -> None:
    """A bad account among the households' or among the hot ones refuses the chunk, the first bad row or leg
    named, and leaves no balance moved and no posting."""
    fund, ids, _ = await _setup(conn)
    led = Ledger(conn)
    dollars = await led.create_account(AccountSpec("fund:usd", "USD", NormalBalance.CREDIT, hot=True))
    closed = (await led.create_account(AccountSpec("hh:closed", "PEN", NormalBalance.CREDIT))).id
    await led.close_account("hh:closed")
    before = await conn.fetch(_BALANCES)
    postings = await conn.fetchval("select count(*) from ledger.postings")
    cases = (
        # a hot account in dollars, debited after a good row
        (
            lambda: bulk.bulk_transfer(
                conn,
                [bulk.BulkTransfer(fund, ids[0], 1), bulk.BulkTransfer(dollars.id, ids[1], 1)],
                key="a",
                currency="PEN",
            ),
            CurrencyMismatch,
            r"rows\[1\]: account fund:usd is in USD",
        ),
        (
            lambda: bulk.bulk_split(
                conn, [bulk.Split(fund, [(ids[0], 1)]), bulk.Split(dollars.id, [(ids[1], 1)])], key="b", currency="PEN"
            ),
            CurrencyMismatch,
            r"splits\[1\]: account fund:usd is in USD",
        ),
        # households' accounts after a good leg: closed, then missing; the first in the legs' order is named
        (
            lambda: bulk.bulk_split(
                conn, [bulk.Split(fund, [(ids[0], 1), (closed, 1), (987654, 1)])], key="c", currency="PEN"
            ),
            AccountClosed,
            r"splits\[0\]\.credits\[1\]: account hh:closed is closed",
        ),
        (
            lambda: bulk.bulk_transfer(
                conn, [bulk.BulkTransfer(fund, ids[0], 1), bulk.BulkTransfer(fund, 987654, 1)], key="d", currency="PEN"
            ),
            AccountNotFound,
            r"rows\[1\]: account id 987654 not found",
        ),
    )
    for write, error, named in cases:
        with pytest.raises(error, match=named):
            async with conn.transaction():
                await write()
    assert await conn.fetch(_BALANCES) == before
    assert await conn.fetchval("select count(*) from ledger.postings") == postings


async def test_resolve_skips_what_is_already_resolved(conn: asyncpg.Connection) -> None:
    fund, ids, _ = await _setup(conn)
    async with conn.transaction():
        held = await bulk.bulk_transfer(
            conn, [bulk.BulkTransfer(fund, i, 1_00) for i in ids[:4]], key="h", currency="PEN", pending=True
        )
    pending = [i for i in held.transfer_ids if i is not None]
    await Ledger(conn).void(pending[0], "void-one")
    async with conn.transaction():
        posted = await bulk.bulk_resolve(conn, pending, key="p", post=True)
    assert posted.transfer_ids[0] is None
    assert all(i is not None for i in posted.transfer_ids[1:])
    with pytest.raises(TransferNotPending):
        async with conn.transaction():
            await bulk.bulk_resolve(conn, [posted.transfer_ids[1] or 0], key="q", post=False)
    with pytest.raises(TransferNotFound, match=r"rows\[1\]: transfer 987654321 not found"):
        async with conn.transaction():
            await bulk.bulk_resolve(conn, [pending[1], 987654321], key="r", post=False)
    fund_balance = await Ledger(conn).balance("fund")
    assert (fund_balance.posted, fund_balance.pending_debits) == (10_000_00 - 3 * 1_00, 0)


async def test_balance_moves_lock_accounts_in_sorted_order(conn: asyncpg.Connection) -> None:
    """The plan of each balance move is a nested loop over the sorted aggregate: rows lock in id order. The hot
    accounts' move is read only by the last branch of the postings insert: they lock after the cold postings
    are written."""
    _, ids, _ = await _setup(conn)
    async with conn.transaction():
        await conn.execute(bulk._WORK)
        await conn.execute(
            "insert into bulk_legs select g, 1, a, 1 from unnest($1::bigint[]) with ordinality as x(a, g)", ids[::-1]
        )
        await conn.execute("analyze bulk_legs")
        await conn.execute("set local enable_hashjoin = off; set local enable_mergejoin = off")
        plans = ["\n".join(r[0] for r in await conn.fetch("explain " + bulk._move_cold(0)))]
        await conn.execute("set local enable_seqscan = off")
        plans.append("\n".join(r[0] for r in await conn.fetch("explain " + bulk._hot_and_insert(0))))
    for plan in plans:
        assert "Nested Loop" in plan
        nested = plan.index("Nested Loop")
        sort = re.compile(r"Sort Key: l(_\d)?\.account_id$", re.M).search(plan, nested)
        assert sort is not None
        assert sort.start() < plan.index("Index Scan using accounts_pkey", nested)
    insert = plans[1]
    append = insert.index("Append")
    assert append < insert.index("Seq Scan on bulk_postings", append) < insert.index("CTE Scan on moved", append)


async def test_hot_accounts_are_moved_after_the_cold_postings_are_written(conn: asyncpg.Connection) -> None:
    """Another writer of the program fund waits for a chunk only from the fund's move to the commit: each
    posting, as it is inserted, notes whether the fund was moved by this transaction yet (a trigger of this
    test's own database)."""
    fund, ids, _ = await _setup(conn)
    await conn.execute(
        f"""create table public.noted (ord bigint generated always as identity, account_id bigint,
                                       fund_moved boolean);
            create function public.note_posting() returns trigger language plpgsql as $$
            begin
                insert into public.noted (account_id, fund_moved)
                select new.account_id, a.xmin::text = pg_current_xact_id()::text
                  from ledger.accounts a where a.id = {fund};
                return new;
            end $$;
            create trigger note_posting before insert on ledger.postings
                for each row execute function public.note_posting()"""
    )
    splits = [bulk.Split(fund, [(i, 10_00) for i in ids[k : k + 4]]) for k in range(0, N, 4)]
    async with conn.transaction():
        await bulk.bulk_split(conn, splits, key=None, currency="PEN")
    noted = [
        (r["account_id"] == fund, r["fund_moved"]) for r in await conn.fetch("select * from public.noted order by ord")
    ]
    assert noted == [(False, False)] * N + [(True, True)] * len(splits)  # the households', then the fund's


async def test_account_ids_open_the_missing_and_find_the_rest(conn: asyncpg.Connection) -> None:
    """Ids come back in the codes' order (a code twice: one account); existing accounts keep their flags."""
    existing = await Ledger(conn).create_account(AccountSpec("hh:001", "PEN", NormalBalance.CREDIT))
    codes = ["hh:002", "hh:001", "hh:003", "hh:002"]
    async with conn.transaction():
        ids = await bulk.ensure_account_ids(conn, codes, currency="PEN", normal=NormalBalance.CREDIT, no_overdraft=True)
    rows = {r["code"]: r for r in await conn.fetch("select * from ledger.accounts where code like 'hh:%'")}
    assert ids == [rows["hh:002"]["id"], existing.id, rows["hh:003"]["id"], rows["hh:002"]["id"]]
    assert len(set(ids)) == 3
    assert [(c, rows[c]["no_overdraft"], rows[c]["normal_balance"], rows[c]["currency"]) for c in sorted(rows)] == [
        ("hh:001", False, -1, "PEN"),  # found, left as it was
        ("hh:002", True, -1, "PEN"),
        ("hh:003", True, -1, "PEN"),
    ]
    async with conn.transaction():  # again: everything is found, nothing is opened
        again = await bulk.ensure_account_ids(conn, codes[::-1], currency="PEN", normal=NormalBalance.CREDIT)
    assert again == ids[::-1]
    assert await conn.fetchval("select count(*) from ledger.accounts where code like 'hh:%'") == 3
    with pytest.raises(InvalidAccount):
        async with conn.transaction():
            await bulk.ensure_account_ids(conn, ["not a code"], currency="PEN", normal=NormalBalance.CREDIT)


async def test_account_ids_opened_by_two_transactions_at_once_are_one_account_each(db: Database) -> None:
    """The second transaction's insert waits for the first's; once it commits, both name the same accounts."""
    async with db.connection() as first, db.connection() as second:
        one = first.transaction()
        await one.start()
        mine = await bulk.ensure_account_ids(first, ["x:1", "x:2"], currency="PEN", normal=NormalBalance.CREDIT)

        async def other() -> list[int]:
            async with second.transaction():
                return await bulk.ensure_account_ids(
                    second, ["x:2", "x:3"], currency="PEN", normal=NormalBalance.CREDIT
                )

        theirs = asyncio.create_task(other())
        await asyncio.sleep(0.3)
        assert not theirs.done()  # waiting for x:2, inserted by the first and not committed yet
        await one.commit()
        got = await theirs
        assert got[0] == mine[1]
        assert await first.fetchval("select count(*) from ledger.accounts where code like 'x:%'") == 3


_SELECTED = "select 'hh:' || g from unnest($1::text[]) g"


async def test_selected_accounts_open_the_missing_only(conn: asyncpg.Connection) -> None:
    """The codes a query selects: the missing opened with the given flags (a code twice: one account), the
    existing left as they were; again, only the new one is opened; and when none exists, all are."""
    existing = await Ledger(conn).create_account(AccountSpec("hh:001", "PEN", NormalBalance.CREDIT))
    async with conn.transaction():
        opened = await bulk.open_selected_accounts(
            conn,
            _SELECTED,
            ["002", "001", "003", "002"],
            currency="PEN",
            normal=NormalBalance.CREDIT,
            no_overdraft=True,
        )
    assert opened == 2
    rows = {r["code"]: r for r in await conn.fetch("select * from ledger.accounts where code like 'hh:%'")}
    assert rows["hh:001"]["id"] == existing.id
    assert [(c, rows[c]["no_overdraft"], rows[c]["normal_balance"], rows[c]["currency"]) for c in sorted(rows)] == [
        ("hh:001", False, -1, "PEN"),
        ("hh:002", True, -1, "PEN"),
        ("hh:003", True, -1, "PEN"),
    ]
    async with conn.transaction():
        again = await bulk.open_selected_accounts(
            conn, _SELECTED, ["003", "001", "004"], currency="PEN", normal=NormalBalance.CREDIT
        )
    assert again == 1
    assert await conn.fetchval("select count(*) from ledger.accounts where code like 'hh:%'") == 4
    async with conn.transaction():  # none exists yet (a program's first run): inserted without probes
        fresh = await bulk.open_selected_accounts(
            conn, _SELECTED, ["006", "005", "006"], currency="PEN", normal=NormalBalance.CREDIT, no_overdraft=True
        )
    assert fresh == 2
    assert await conn.fetch(
        "select code, no_overdraft from ledger.accounts where code in ('hh:005', 'hh:006') order by code"
    ) == [("hh:005", True), ("hh:006", True)]
    # The ids settlement then reads are those accounts: found, none opened twice.
    async with conn.transaction():
        ids = await bulk.ensure_account_ids(conn, ["hh:004", "hh:002"], currency="PEN", normal=NormalBalance.CREDIT)
    assert ids == [
        await conn.fetchval("select id from ledger.accounts where code = $1", c) for c in ("hh:004", "hh:002")
    ]
    with pytest.raises(asyncpg.CheckViolationError):  # the code's format is the column's domain
        async with conn.transaction():
            await bulk.open_selected_accounts(conn, "select 'not a code'", currency="PEN", normal=NormalBalance.CREDIT)


async def test_selected_accounts_opened_while_another_transaction_opens_some_skip_those(db: Database) -> None:
    """A code another transaction inserts meanwhile: the plain insert waits for it, fails on the unique index
    once it commits, and the statement is done again skipping that code."""
    async with db.connection() as first, db.connection() as second:
        one = first.transaction()
        await one.start()
        mine = await bulk.ensure_account_ids(first, ["hh:x2"], currency="PEN", normal=NormalBalance.CREDIT)

        async def other() -> int:
            async with second.transaction():
                return await bulk.open_selected_accounts(
                    second, _SELECTED, ["x1", "x2", "x3"], currency="PEN", normal=NormalBalance.CREDIT
                )

        theirs = asyncio.create_task(other())
        await asyncio.sleep(0.3)
        assert not theirs.done()  # waiting for hh:x2, inserted by the first and not committed yet
        await one.commit()
        assert await theirs == 2
        rows = await first.fetch("select code, id from ledger.accounts where code like 'hh:x%' order by code")
        assert [r["code"] for r in rows] == ["hh:x1", "hh:x2", "hh:x3"]
        assert rows[1]["id"] == mine[0]


# Two one-to-many transfers from the fund; households 0 and 1 are in both (two postings on one account).
SPLITS = [[(i, 100 + 7 * i) for i in range(10)], [(i, 300 + 11 * i) for i in (*range(10, N), 0, 1)]]


async def test_split_and_online_write_identical_rows(new_database: Callable[[], Awaitable[str]]) -> None:
    """One-to-many transfers written as a chunk leave the postings and balances the online path leaves."""
    async with _two_ledgers(new_database) as (online_db, bulk_db):
        async with online_db.connection() as conn:
            _, _, start = await _setup(conn)
            led = Ledger(conn)
            for k, split in enumerate(SPLITS):
                postings = (
                    PostingSpec("fund", debit=sum(a for _, a in split)),
                    *(PostingSpec(f"hh:{i:03d}", credit=a) for i, a in split),
                )
                await led.transfer(TransferRequest(postings, "PEN"), f"split-{k}")
            online_rows, online_balances = await _written(conn, start)
        async with bulk_db.connection() as conn:
            fund, ids, start = await _setup(conn)
            splits = [bulk.Split(fund, [(ids[i], a) for i, a in split], {"batch": k}) for k, split in enumerate(SPLITS)]
            async with conn.transaction():
                written = await bulk.bulk_split(conn, splits, key="splits", currency="PEN", description="credits")
            bulk_rows, bulk_balances = await _written(conn, start)
            transfers = [await Ledger(conn).get_transfer(t) for t in written.transfer_ids if t is not None]
            assert (await audit.verify(conn)).ok
    assert len(online_rows) == sum(len(s) + 1 for s in SPLITS)
    assert bulk_rows == online_rows
    assert bulk_balances == online_balances
    assert [(t.kind, t.status, t.description, t.metadata, len(t.postings)) for t in transfers] == [
        ("transfer", "posted", "credits", {"batch": 0}, 11),
        ("transfer", "posted", "credits", {"batch": 1}, 18),
    ]


async def test_split_replays_and_refuses_reuse_overdraft_and_bad_legs(conn: asyncpg.Connection) -> None:
    """A replayed chunk returns its ids; reuse, an overdraft and every bad leg are refused whole and named."""
    fund, ids, _ = await _setup(conn)
    splits = [bulk.Split(fund, [(ids[0], 5_00), (ids[1], 6_00)]), bulk.Split(fund, [(ids[2], 7_00)])]
    async with conn.transaction():
        reserved = await bulk.reserve_transfer_ids(conn, 2)
        first = await bulk.bulk_split(conn, splits, key="s", currency="PEN", transfer_ids=reserved)
    assert first.transfer_ids == reserved
    async with conn.transaction():
        again = await bulk.bulk_split(conn, splits, key="s", currency="PEN")
    assert (again.replayed, again.transfer_ids) == (True, reserved)
    with pytest.raises(IdempotencyConflict):
        async with conn.transaction():
            await bulk.bulk_split(conn, splits[:1], key="s", currency="PEN")
    with pytest.raises(InsufficientFunds, match="fund"):
        async with conn.transaction():
            await bulk.bulk_split(conn, [bulk.Split(fund, [(i, 500_00) for i in ids])], key="big", currency="PEN")
    led = Ledger(conn)
    closed = (await led.create_account(AccountSpec("hh:closed", "PEN", NormalBalance.CREDIT))).id
    await led.close_account("hh:closed")
    dollars = (await led.create_account(AccountSpec("hh:usd", "USD", NormalBalance.CREDIT))).id
    good = bulk.Split(fund, [(ids[3], 1)])
    for bad, error, named in (
        ([(ids[4], 1), (ids[5], 0)], InvalidTransfer, r"splits\[1\]\.credits\[1\]\.amount"),
        ([(ids[4], 1), (ids[5], True)], InvalidTransfer, r"splits\[1\]\.credits\[1\]\.amount must be an integer"),
        ([(ids[4], 2**62), (ids[5], 1)], InvalidTransfer, r"splits\[1\]\.credits\[0\]\.amount is too large"),
        ([(ids[4], 1), (ids[5], 1.0)], InvalidTransfer, r"splits\[1\]\.credits\[1\]\.amount must be an integer"),
        ([(ids[4], 1), (fund, 1)], InvalidTransfer, r"splits\[1\]\.credits\[1\]: credits the account it debits"),
        ([], InvalidTransfer, r"splits\[1\]: a split needs 1 to"),
        ([(ids[4], 1), (987654, 1)], AccountNotFound, r"splits\[1\]\.credits\[1\]: account id 987654 not found"),
        ([(closed, 1)], AccountClosed, r"splits\[1\]\.credits\[0\]: account hh:closed is closed"),
        ([(dollars, 1)], CurrencyMismatch, r"splits\[1\]\.credits\[0\]: account hh:usd is in USD"),
    ):
        with pytest.raises(error, match=named):
            async with conn.transaction():
                await bulk.bulk_split(conn, [good, bulk.Split(fund, bad)], key="bad", currency="PEN")
    with pytest.raises(AccountNotFound, match=r"splits\[0\]: account id 987654 not found"):
        async with conn.transaction():
            await bulk.bulk_split(conn, [bulk.Split(987654, [(ids[4], 1)])], key="bad", currency="PEN")
    with pytest.raises(InvalidTransfer, match="transfer_ids"):
        async with conn.transaction():
            await bulk.bulk_split(conn, splits, key="t", currency="PEN", transfer_ids=reserved[:1])
    assert await conn.fetchval("select count(*) from ledger.transfers") == 1 + 2  # the funding and the chunk
    assert (await led.balance("fund")).posted == 10_000_00 - 18_00
