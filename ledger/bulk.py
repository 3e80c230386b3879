"""The set-based path: post, hold, post-pending or void thousands of transfers per statement.

Two-posting transfers (:func:`bulk_transfer`), resolutions of holds (:func:`bulk_resolve`), and one-to-many
transfers (:func:`bulk_split`: one account debited with the total, each of many accounts credited with its
own posting, the form of a bank's credit batch) share the steps below.

A chunk (10,000 to 100,000 transfers) is one transaction in the caller's unit of work:

1. transfer ids are reserved from the sequence and the rows are streamed into a temporary staging table
   with ``COPY``;
2. one query validates every row (accounts exist, are open, in the currency; debit differs from credit) and
   names the first bad row;
3. the accounts are locked in id order (the same order as the online path, so no deadlock);
4. one query checks ``no_overdraft`` for the whole chunk; the fund's row is read once, not once per row;
5. one ``INSERT ... SELECT`` writes the transfers, one writes both postings of every transfer with the
   balances after each computed by window functions, and one ``UPDATE ... FROM`` moves every balance and
   version once.

The chunk's key and a hash of its rows are stored in the same transaction: replaying a chunk returns the
transfer ids it created; the same key with other rows is refused. The rows written are identical (but for
ids and times) to those the online path writes for the same transfers; a test checks it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from operator import neg
from typing import Any, NamedTuple, TypeVar

import asyncpg
import orjson

from ledger.db import Connection
from ledger.engine import _raise_translated
from ledger.errors import (
    AccountClosed,
    AccountNotFound,
    AppError,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidTransfer,
    TransferExpired,
    TransferNotFound,
    TransferNotPending,
)
from ledger.models import AccountSpec, NormalBalance, Phase, TransferKind
from ledger.money import MAX_MINOR_UNITS, require_currency, require_minor_units

_T = TypeVar("_T")

MAX_CHUNK = 200_000


class BulkTransfer(NamedTuple):
    """One two-posting transfer of a bulk chunk: ``amount`` from the credit account to the debit account.

    A named tuple (immutable, and built several times faster than a frozen dataclass: a payment run makes
    one per household).

    Attributes:
        debit_account_id: the account debited (e.g. a household's savings account, an asset).
        credit_account_id: the account credited (e.g. the program fund).
        amount: positive minor units.
        metadata: optional JSON object stored on the transfer (e.g. the payment it belongs to).
    """

    debit_account_id: int
    credit_account_id: int
    amount: int
    metadata: dict[str, Any] | None = None


class Split(NamedTuple):
    """One transfer from one account to many, for :func:`bulk_split`: a debit posting of the total on
    ``debit_account_id`` and one credit posting per entry of ``credits``.

    It is the transfer a bank posts for a credit batch: the batch's total leaves the account it was held in,
    and each household's account receives its own amount, with a posting (and a balance after it) of its own.

    Attributes:
        debit_account_id: the account debited with the total (e.g. a run's in-transit account).
        credits: ``(credit_account_id, amount)`` per leg, amounts in positive minor units; at most
            :data:`MAX_SPLIT_LEGS`.
        metadata: optional JSON object stored on the transfer (e.g. the batch it settles).
    """

    debit_account_id: int
    credits: Sequence[tuple[int, int]]
    metadata: dict[str, Any] | None = None


MAX_SPLIT_LEGS = 10_000


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a chunk did.

    Attributes:
        transfer_ids: ids of the transfers (or resolution events) written, in input order; for a resolve,
            ``None`` where the pending transfer had already been resolved before.
        replayed: the chunk's key had been seen with the same rows; nothing new was written.
    """

    transfer_ids: list[int | None]
    replayed: bool


def _chunk_hash(operation: str, rows: list[tuple[Any, ...]], params: dict[str, Any]) -> bytes:
    h = hashlib.sha256()
    h.update(orjson.dumps({"op": operation, "params": params}, option=orjson.OPT_SORT_KEYS))
    h.update(orjson.dumps(rows))
    return h.digest()


def _encode_ids(ids: list[int | None]) -> list[int]:
    """Run-length encode ids as (first, count) pairs; ids come from the sequence in runs (0: none)."""
    out: list[int] = []
    for i in ids:
        v = 0 if i is None else i
        if out and ((v == 0 and out[-2] == 0) or (v != 0 and out[-2] != 0 and out[-2] + out[-1] == v)):
            out[-1] += 1
        else:
            out += [v, 1]
    return out


def _decode_ids(pairs: list[int]) -> list[int | None]:
    out: list[int | None] = []
    for k in range(0, len(pairs), 2):
        first, count = pairs[k], pairs[k + 1]
        out.extend([None] * count if first == 0 else range(first, first + count))
    return out


async def _chunk_lookup(conn: Connection, key: str | None, digest: bytes) -> list[int | None] | None:
    if key is None:
        return None
    await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 7))", key)
    row = await conn.fetchrow("select request_hash, transfer_ids from ledger.bulk_chunks where key = $1", key)
    if row is None:
        return None
    if bytes(row["request_hash"]) != digest:
        raise IdempotencyConflict(f"bulk chunk key {key} was used with different rows", key=key)
    return _decode_ids(row["transfer_ids"])


async def _chunk_store(conn: Connection, key: str | None, digest: bytes, operation: str, ids: list[int | None]) -> None:
    if key is not None:
        await conn.execute(
            """insert into ledger.bulk_chunks (key, request_hash, operation, transfer_ids)
               values ($1, $2, $3, $4)""",
            key,
            digest,
            operation,
            _encode_ids(ids),
        )


async def _replay_or_write(
    conn: Connection,
    key: str | None,
    operation: str,
    rows: list[tuple[Any, ...]],
    params: dict[str, Any],
    write: Callable[[bytes], Awaitable[BulkResult]],
) -> BulkResult:
    """A chunk's idempotency: the ids stored under ``key`` if these rows were written before (another use of
    the key is refused), else ``write(digest)``, with PostgreSQL's errors translated to the ledger's."""
    digest = _chunk_hash(operation, rows, params)
    stored = await _chunk_lookup(conn, key, digest)
    if stored is not None:
        return BulkResult(stored, True)
    try:
        return await write(digest)
    except asyncpg.PostgresError as e:
        _raise_translated(e)
        raise


async def _chunk_clock(conn: Connection, effective_at: datetime | None) -> tuple[datetime, datetime]:
    """The chunk's time and its business time (``effective_at`` or now), refused inside a closed period."""
    row = await conn.fetchrow(
        """with c as materialized (select t.now, coalesce($1::timestamptz, t.now) as effective
                                     from (select clock_timestamp() as now) t)
           select c.now, c.effective, ledger.assert_period_open(c.effective) from c""",
        effective_at,
    )
    assert row is not None
    return row["now"], row["effective"]


def _check_reserved(transfer_ids: Sequence[int] | None, count: int, what: str) -> None:
    """Ids reserved beforehand must be ``count`` distinct ones, one per transfer (a ``what``) of the chunk."""
    if transfer_ids is not None and (len(transfer_ids) != count or len(set(transfer_ids)) != count):
        raise InvalidTransfer(
            f"transfer_ids: {len(transfer_ids)} reserved id(s), {len(set(transfer_ids))} distinct, for "
            f"{count} {what}(s); reserve one per {what}"
        )


async def reserve_transfer_ids(conn: Connection, count: int) -> list[int]:
    """Reserve ``count`` transfer ids from the ledger's sequence, in increasing order."""
    rows = await conn.fetch(
        "select nextval('ledger.transfers_id_seq'::regclass) as id from generate_series(1, $1)",
        count,
    )
    return sorted(r["id"] for r in rows)


def _require_transaction(conn: Connection) -> None:
    if not conn.is_in_transaction():
        raise RuntimeError("bulk operations must run inside a transaction (a unit of work)")


_STAGE = """
create temp table if not exists bulk_stage (
    ord int not null, transfer_id bigint not null, debit_id bigint not null, credit_id bigint not null,
    amount bigint not null, metadata text
) on commit delete rows;
truncate bulk_stage
"""
_RESOLVE_STAGE = """
create temp table if not exists bulk_resolve_stage (ord int not null, event_id bigint not null,
    pending_id bigint not null) on commit delete rows;
create temp table if not exists bulk_resolved (event_id bigint not null, pending_id bigint not null)
    on commit delete rows;
truncate bulk_resolve_stage, bulk_resolved
"""
_WORK = """
create temp table if not exists bulk_legs (transfer_id bigint not null, leg smallint not null,
    account_id bigint not null, amount bigint not null) on commit delete rows;
create temp table if not exists bulk_accounts (account_id bigint not null, normal smallint not null,
    posted0 bigint not null, pending_debits0 bigint not null, pending_credits0 bigint not null,
    version0 bigint not null) on commit delete rows;
create temp table if not exists bulk_postings (like ledger.postings) on commit delete rows;
truncate bulk_legs, bulk_accounts, bulk_postings
"""
_LEGS = """
insert into bulk_legs (transfer_id, leg, account_id, amount)
select s.transfer_id, 1, s.debit_id, s.amount from bulk_stage s
union all
select s.transfer_id, 2, s.credit_id, -s.amount from bulk_stage s
"""
# The chunk's rows reach the ledger's tables by index probes (LATERAL, kept from being flattened into a join by
# LIMIT or OFFSET 0): joined, the planner hashes a chunk against a sequential scan of the whole table, a cost
# that grows with the ledger instead of the chunk (docs/performance.md, "A bulk chunk's validation").
_RESOLVE_LEGS = """
insert into bulk_legs (transfer_id, leg, account_id, amount)
select r.event_id, p.leg, p.account_id, p.amount
  from bulk_resolved r
 cross join lateral (select p.leg, p.account_id, p.amount from ledger.postings p
                      where p.transfer_id = r.pending_id offset 0) p
"""

# Moves every balance and version once, locking the accounts in (hot, id) order, the order of the online
# path, so writers cannot deadlock: cold accounts (households) first, then hot ones (the program fund, a
# run's in-transit account), which every writer of a program moves, as late as possible. Within a statement
# the aggregate is sorted by account id and joined by a nested loop (hash and merge joins are switched off
# for it), which locks rows in that order. The old balances come back through RETURNING, so the postings
# are computed from the locked values.
_BALANCE_DELTAS = """
d as (
    select l.account_id,
           sum(case when {phase}::smallint in (0, 2) then l.amount else 0 end) as signed_posted,
           sum(ledger.pending_debit_delta(l.amount, {phase}::smallint)) as dd,
           sum(ledger.pending_credit_delta(l.amount, {phase}::smallint)) as dc,
           count(*) as n
      from bulk_legs l
     where (l.account_id = any(array(select h.id from ledger.accounts h where h.hot))) = {hot}
     group by l.account_id order by l.account_id
), moved as (
    update ledger.accounts a
       set posted = a.posted + d.signed_posted * a.normal_balance,
           pending_debits = a.pending_debits + d.dd,
           pending_credits = a.pending_credits + d.dc,
           version = a.version + d.n
      from d where a.id = d.account_id
    returning a.id as account_id, a.normal_balance as normal, a.posted - d.signed_posted * a.normal_balance as posted0,
              a.pending_debits - d.dd as pending_debits0, a.pending_credits - d.dc as pending_credits0,
              a.version - d.n as version0
)"""

# The postings of the legs whose accounts' old balances are in {balances}, in posting order per account.
_POSTINGS = """
select l.account_id,
       b.version0 + row_number() over w,
       l.transfer_id, l.leg, l.amount, {phase}::smallint,
       b.posted0 + sum(ledger.posted_delta(l.amount, {phase}::smallint, b.normal)) over w,
       b.pending_debits0 + sum(ledger.pending_debit_delta(l.amount, {phase}::smallint)) over w,
       b.pending_credits0 + sum(ledger.pending_credit_delta(l.amount, {phase}::smallint)) over w,
       {recorded_at}
  from bulk_legs l join {balances} b on b.account_id = l.account_id
window w as (partition by l.account_id order by l.transfer_id, l.leg
             rows between unbounded preceding and current row)"""

_POSTING_COLUMNS = """account_id, version, transfer_id, leg, amount, phase, posted_after, pending_debits_after,
                     pending_credits_after, recorded_at"""

# 1. The cold accounts moved; their postings computed into bulk_postings.
_MOVE_COLD = """with {deltas}
insert into bulk_accounts select * from moved"""
_COLD_POSTINGS = """insert into bulk_postings ({columns})
{postings}"""
# 2. One insert of every posting: the cold ones first, then the hot accounts moved and theirs. The update of
# the hot accounts is read only by the second branch of the UNION ALL, so it runs once the cold postings
# are inserted: another writer of a hot account waits for this transaction from there, not from before
# the postings insert (docs/performance.md). The postings' balance check (a statement trigger) still sees
# every posting of each transfer in one statement.
_HOT_AND_INSERT = """with {deltas}
insert into ledger.postings ({columns})
select {columns} from bulk_postings
union all
{postings}"""


_CLOCK = "(select clock_timestamp())"


def _move_cold(p: int) -> str:
    """Phase ``p``'s move of the cold accounts' balances (their old balances into ``bulk_accounts``)."""
    return _MOVE_COLD.format(deltas=_BALANCE_DELTAS.format(phase=p, hot="false"))


def _cold_postings(p: int) -> str:
    """Phase ``p``'s postings of the cold accounts, computed into ``bulk_postings``."""
    return _COLD_POSTINGS.format(
        columns=_POSTING_COLUMNS, postings=_POSTINGS.format(phase=p, balances="bulk_accounts", recorded_at=_CLOCK)
    )


def _hot_and_insert(p: int) -> str:
    """Phase ``p``'s insert of every posting, the hot accounts moved after the cold postings."""
    return _HOT_AND_INSERT.format(
        deltas=_BALANCE_DELTAS.format(phase=p, hot="true"),
        columns=_POSTING_COLUMNS,
        # The same instant as the cold postings', when there are any.
        postings=_POSTINGS.format(
            phase=p,
            balances="moved",
            recorded_at=f"coalesce((select p.recorded_at from bulk_postings p limit 1), {_CLOCK})",
        ),
    )


def _legs_script(phase: Phase) -> str:
    """Every step of writing the legs in ``bulk_legs``, as one script: one round trip to the database.

    The phase is written into the text (an integer of the enumeration, never input), so the script runs
    without parameters, by the simple protocol, which runs several statements at once.
    """
    p = int(phase)
    return ";\n".join(
        [
            "set local enable_hashjoin = off",
            "set local enable_mergejoin = off",
            _move_cold(p),
            "set local enable_hashjoin = on",
            "set local enable_mergejoin = on",
            _cold_postings(p),
            "set local enable_hashjoin = off",
            "set local enable_mergejoin = off",
            # The hot accounts are a few: by their index, in the aggregate's order, whatever the estimates.
            "set local enable_seqscan = off",
            _hot_and_insert(p),
            "set local enable_seqscan = on",
            "set local enable_hashjoin = on",
            "set local enable_mergejoin = on",
        ]
    )


_LEGS_SCRIPTS = {phase: _legs_script(phase) for phase in Phase}


def _overdraft_error(error: asyncpg.PostgresError) -> InsufficientFunds:
    """Name the account whose no_overdraft CHECK failed (its code is the second column of the row)."""
    detail = getattr(error, "detail", "") or ""
    code = "?"
    if "(" in detail:
        fields = detail.split("(", 1)[1].split(", ")
        if len(fields) > 1:
            code = fields[1]
    return InsufficientFunds(f"insufficient funds in account {code}: the chunk would take it below zero", account=code)


async def _write(conn: Connection, legs_sql: str, phase: Phase) -> None:
    """Lock, move balances and write postings for the legs produced by ``legs_sql`` (one round trip)."""
    await _write_legs(conn, phase, f"{_WORK};\n{legs_sql}")


async def _write_legs(conn: Connection, phase: Phase, before: str = "") -> None:
    """Lock, move balances and write postings for the legs in ``bulk_legs`` (after the script ``before``, in
    the same round trip).

    Every hot account, in the chunk or not (a few; by a partial index) is moved by the second statement: one
    without legs moves nothing. Intersecting them with the chunk's legs first cost a hash of the chunk's
    accounts (0.17 s a chunk). No ANALYZE of the work tables: the default estimates give the plans we want
    (measured: with fresh statistics the postings insert was slower), and the balance move's join order is
    fixed anyway. One round trip, not seven: from the hot accounts' move to the commit, every other writer
    of them waits, and each round trip waits its turn on the client's event loop.
    """
    script = _LEGS_SCRIPTS[phase]
    try:
        await conn.execute(f"{before};\n{script}" if before else script)
    except asyncpg.CheckViolationError as e:
        if getattr(e, "constraint_name", "") == "accounts_no_overdraft":
            raise _overdraft_error(e) from e
        raise


async def bulk_transfer(
    conn: Connection,
    rows: Sequence[BulkTransfer],
    *,
    key: str | None,
    currency: str,
    pending: bool = False,
    expires_at: datetime | None = None,
    effective_at: datetime | None = None,
    description: str = "",
    actor: str = "",
    transfer_ids: Sequence[int] | None = None,
) -> BulkResult:
    """Write one chunk of two-posting transfers (posted, or pending holds) set-based.

    Args:
        conn: a connection inside a transaction.
        rows: the transfers, at most 200,000.
        key: the chunk's idempotency key (derived from the job, never from the clock), or None.
        currency: every account must be in it.
        pending: write holds (pending transfers) instead of posted transfers.
        expires_at: expiry of the holds.
        effective_at: business time (default: now); refused inside a closed period.
        description: stored on every transfer.
        actor: who acts.
        transfer_ids: ids reserved beforehand with :func:`reserve_transfer_ids` in this transaction, one per
            row, for a caller that records them before the ledger is written (the payment run writes its
            outcomes first, so it holds the hot accounts' locks for less time). A replayed chunk returns
            the ids it stored, which the caller must compare.

    Raises:
        InvalidTransfer: a row is malformed (its index is named), or ``transfer_ids`` does not match.
        AccountNotFound, AccountClosed, CurrencyMismatch, InsufficientFunds, PeriodClosed,
        IdempotencyConflict.
    """
    _require_transaction(conn)
    require_currency(currency)
    _check_reserved(transfer_ids, len(rows), "row")
    if not rows:
        return BulkResult([], False)
    if len(rows) > MAX_CHUNK:
        raise InvalidTransfer(f"a chunk may hold at most {MAX_CHUNK} transfers, got {len(rows)}")
    staged: list[tuple[Any, ...]] = []
    for i, r in enumerate(rows):
        try:
            require_minor_units(r.amount, f"rows[{i}].amount")
        except AppError as e:
            raise InvalidTransfer(str(e), index=i) from e
        if r.debit_account_id == r.credit_account_id:
            raise InvalidTransfer(f"rows[{i}]: debit and credit account are the same", index=i)
        staged.append(
            (
                i,
                r.debit_account_id,
                r.credit_account_id,
                r.amount,
                orjson.dumps(r.metadata).decode() if r.metadata else None,
            )
        )
    params = {
        "currency": currency,
        "pending": pending,
        "expires_at": expires_at.isoformat() if expires_at else None,
        "effective_at": effective_at.isoformat() if effective_at else None,
        "description": description,
    }
    return await _replay_or_write(
        conn,
        key,
        "bulk_transfer",
        staged,
        params,
        lambda digest: _bulk_transfer(
            conn, staged, key, digest, currency, pending, expires_at, effective_at, description, actor, transfer_ids
        ),
    )


async def _bulk_transfer(
    conn: Connection,
    staged: list[tuple[Any, ...]],
    key: str | None,
    digest: bytes,
    currency: str,
    pending: bool,
    expires_at: datetime | None,
    effective_at: datetime | None,
    description: str,
    actor: str,
    transfer_ids: Sequence[int] | None = None,
) -> BulkResult:
    now, effective = await _chunk_clock(conn, effective_at)
    if expires_at is not None and expires_at <= now:
        raise InvalidTransfer(f"expires_at {expires_at.isoformat()} is not in the future")
    ids = list(transfer_ids) if transfer_ids is not None else await reserve_transfer_ids(conn, len(staged))
    await conn.execute(f"set local work_mem = '256MB';\n{_STAGE}")
    await conn.copy_records_to_table(
        "bulk_stage",
        records=[(o, ids[o], d, c, a, m) for (o, d, c, a, m) in staged],
        columns=["ord", "transfer_id", "debit_id", "credit_id", "amount", "metadata"],
    )
    await conn.execute("analyze bulk_stage")
    # Each row's two accounts by their primary key, a probe each (see _RESOLVE_LEGS): joined, 300 to 350 ms a
    # chunk of 10,000 among 1,000,000 accounts; probed, 25 to 37 ms.
    bad = await conn.fetchrow(
        """select s.ord, s.debit_id, s.credit_id, da.id is null as no_debit, ca.id is null as no_credit,
                  da.code as debit_code, ca.code as credit_code,
                  coalesce(da.closed, false) as debit_closed, coalesce(ca.closed, false) as credit_closed,
                  da.currency as debit_currency, ca.currency as credit_currency
             from bulk_stage s
             left join lateral (select a.id, a.code, a.closed, a.currency from ledger.accounts a
                                 where a.id = s.debit_id limit 1) da on true
             left join lateral (select a.id, a.code, a.closed, a.currency from ledger.accounts a
                                 where a.id = s.credit_id limit 1) ca on true
            where da.id is null or ca.id is null or da.closed or ca.closed
               or da.currency <> $1 or ca.currency <> $1
            order by s.ord limit 1""",
        currency,
    )
    if bad is not None:
        i = bad["ord"]
        if bad["no_debit"] or bad["no_credit"]:
            missing = bad["debit_id"] if bad["no_debit"] else bad["credit_id"]
            raise AccountNotFound(f"rows[{i}]: account id {missing} not found", index=i, account_id=missing)
        if bad["debit_closed"] or bad["credit_closed"]:
            code = bad["debit_code"] if bad["debit_closed"] else bad["credit_code"]
            raise AccountClosed(f"rows[{i}]: account {code} is closed", index=i, account=code)
        code, cur = (
            (bad["debit_code"], bad["debit_currency"])
            if bad["debit_currency"] != currency
            else (bad["credit_code"], bad["credit_currency"])
        )
        raise CurrencyMismatch(f"rows[{i}]: account {code} is in {cur}, the chunk in {currency}", index=i)
    kind = TransferKind.PENDING if pending else TransferKind.TRANSFER
    await conn.execute(
        """insert into ledger.transfers (id, kind, currency, effective_at, created_at, expires_at, description,
                                         metadata, actor)
           select s.transfer_id, $1, $2, $3, $4, $5, $6, coalesce(s.metadata::jsonb, '{}'::jsonb), $7
             from bulk_stage s order by s.transfer_id""",
        kind.value,
        currency,
        effective,
        now,
        expires_at,
        description,
        actor,
    )
    out: list[int | None] = list(ids)
    await _chunk_store(conn, key, digest, "bulk_transfer", out)
    await _write(conn, _LEGS, Phase.HOLD if pending else Phase.POSTED)
    return BulkResult(out, False)


async def bulk_split(
    conn: Connection,
    splits: Sequence[Split],
    *,
    key: str | None,
    currency: str,
    effective_at: datetime | None = None,
    description: str = "",
    actor: str = "",
    transfer_ids: Sequence[int] | None = None,
) -> BulkResult:
    """Write one chunk of one-to-many transfers (posted), set-based: one transfer per split.

    A payment run credits a settled batch this way: one transfer debits the in-transit account with the
    batch's credited total and credits each household's account with its payment. Against a two-posting
    transfer per payment, that is one transfer row instead of a thousand and one posting of the in-transit
    account instead of a thousand, while every household still has its own posting and balance after it
    (docs/performance.md, "A settled batch credited by one transfer").

    Args:
        conn: a connection inside a transaction.
        splits: the transfers; their legs (credits) together at most :data:`MAX_CHUNK`.
        key: the chunk's idempotency key (derived from the job, never from the clock), or None.
        currency: every account must be in it.
        effective_at: business time (default: now); refused inside a closed period.
        description: stored on every transfer.
        actor: who acts.
        transfer_ids: ids reserved beforehand with :func:`reserve_transfer_ids`, one per split (as for
            :func:`bulk_transfer`).

    Raises:
        InvalidTransfer: a split or leg is malformed (both indexes are named), or ``transfer_ids`` does not
            match. AccountNotFound, AccountClosed, CurrencyMismatch, PeriodClosed, IdempotencyConflict.
    """
    _require_transaction(conn)
    require_currency(currency)
    _check_reserved(transfer_ids, len(splits), "split")
    if not splits:
        return BulkResult([], False)
    legs = 0
    staged: list[tuple[Any, ...]] = []
    for i, split in enumerate(splits):
        n = len(split.credits)
        if not 1 <= n <= MAX_SPLIT_LEGS:
            raise InvalidTransfer(f"splits[{i}]: a split needs 1 to {MAX_SPLIT_LEGS} credits, got {n}", index=i)
        debit = split.debit_account_id
        accounts, amounts = (list(column) for column in zip(*split.credits, strict=True))
        # The legs are checked a column at a time (a payment run stages ten thousand a chunk); a column that
        # fails is walked leg by leg for the first bad one, which the error names.
        if set(map(type, amounts)) != {int} or min(amounts) <= 0 or max(amounts) >= MAX_MINOR_UNITS:
            for j, amount in enumerate(amounts):
                try:
                    require_minor_units(amount, f"splits[{i}].credits[{j}].amount")
                except AppError as e:
                    raise InvalidTransfer(str(e), index=i, leg=j) from e
        if debit in accounts:
            j = accounts.index(debit)
            raise InvalidTransfer(f"splits[{i}].credits[{j}]: credits the account it debits", index=i, leg=j)
        legs += n
        metadata = orjson.dumps(split.metadata).decode() if split.metadata else None
        staged.append((i, debit, accounts, amounts, metadata))
    if legs > MAX_CHUNK:
        raise InvalidTransfer(f"a chunk may hold at most {MAX_CHUNK} legs, got {legs}")
    params = {
        "currency": currency,
        "effective_at": effective_at.isoformat() if effective_at else None,
        "description": description,
    }
    return await _replay_or_write(
        conn,
        key,
        "bulk_split",
        staged,
        params,
        lambda digest: _bulk_split(conn, staged, key, digest, currency, effective_at, description, actor, transfer_ids),
    )


async def _bulk_split(
    conn: Connection,
    staged: list[tuple[Any, ...]],
    key: str | None,
    digest: bytes,
    currency: str,
    effective_at: datetime | None,
    description: str,
    actor: str,
    transfer_ids: Sequence[int] | None,
) -> BulkResult:
    now, effective = await _chunk_clock(conn, effective_at)
    ids = list(transfer_ids) if transfer_ids is not None else await reserve_transfer_ids(conn, len(staged))
    await conn.execute(f"set local work_mem = '256MB';\n{_WORK}")
    records: list[tuple[int, int, int, int]] = []
    for (_, debit, accounts, amounts, _), tid in zip(staged, ids, strict=True):
        records.append((tid, 1, debit, sum(amounts)))
        records.extend(zip(repeat(tid), range(2, len(accounts) + 2), accounts, map(neg, amounts)))
    await conn.copy_records_to_table(
        "bulk_legs", records=records, columns=["transfer_id", "leg", "account_id", "amount"]
    )
    # Each leg's account by its primary key, a probe each (see _RESOLVE_LEGS).
    bad = await conn.fetchrow(
        """select l.transfer_id, l.leg, l.account_id, a.id is null as missing, a.code, a.currency,
                  coalesce(a.closed, false) as closed
             from bulk_legs l
             left join lateral (select a.id, a.code, a.closed, a.currency from ledger.accounts a
                                 where a.id = l.account_id limit 1) a on true
            where a.id is null or a.closed or a.currency <> $1
            order by l.transfer_id, l.leg limit 1""",
        currency,
    )
    if bad is not None:
        i = ids.index(bad["transfer_id"])
        where = f"splits[{i}]" + ("" if bad["leg"] == 1 else f".credits[{bad['leg'] - 2}]")
        if bad["missing"]:
            raise AccountNotFound(
                f"{where}: account id {bad['account_id']} not found", index=i, account_id=bad["account_id"]
            )
        if bad["closed"]:
            raise AccountClosed(f"{where}: account {bad['code']} is closed", index=i, account=bad["code"])
        raise CurrencyMismatch(
            f"{where}: account {bad['code']} is in {bad['currency']}, the chunk in {currency}", index=i
        )
    await conn.execute(
        """insert into ledger.transfers (id, kind, currency, effective_at, created_at, description, metadata, actor)
           select t.id, $1, $2, $3, $4, $5, coalesce(t.metadata::jsonb, '{}'::jsonb), $6
             from unnest($7::bigint[], $8::text[]) as t(id, metadata) order by t.id""",
        TransferKind.TRANSFER.value,
        currency,
        effective,
        now,
        description,
        actor,
        ids,
        [m for (*_, m) in staged],
    )
    out: list[int | None] = list(ids)
    await _chunk_store(conn, key, digest, "bulk_split", out)
    await _write_legs(conn, Phase.POSTED)
    return BulkResult(out, False)


async def bulk_resolve(
    conn: Connection,
    pending_ids: Sequence[int],
    *,
    key: str | None,
    post: bool,
    reason: str | None = None,
    effective_at: datetime | None = None,
    actor: str = "",
) -> BulkResult:
    """Post or void many pending transfers set-based, each exactly once.

    A pending transfer already posted or voided (by anyone) is skipped: its entry in the result is None.
    Posting an expired hold is refused for the whole chunk.

    Raises:
        TransferNotFound: an id is not a transfer. TransferNotPending: an id is not a pending transfer.
        TransferExpired: posting a hold past its expiry. PeriodClosed, IdempotencyConflict.
    """
    _require_transaction(conn)
    if not pending_ids:
        return BulkResult([], False)
    if len(pending_ids) > MAX_CHUNK:
        raise InvalidTransfer(f"a chunk may hold at most {MAX_CHUNK} transfers, got {len(pending_ids)}")
    if len(set(pending_ids)) != len(pending_ids):
        raise InvalidTransfer("a pending transfer appears twice in the chunk")
    operation = operation_name(post)
    params = {"reason": reason, "effective_at": effective_at.isoformat() if effective_at else None}
    return await _replay_or_write(
        conn,
        key,
        operation,
        [(i,) for i in pending_ids],
        params,
        lambda digest: _bulk_resolve(conn, list(pending_ids), key, digest, post, reason, effective_at, actor),
    )


async def _bulk_resolve(
    conn: Connection,
    pending_ids: list[int],
    key: str | None,
    digest: bytes,
    post: bool,
    reason: str | None,
    effective_at: datetime | None,
    actor: str,
) -> BulkResult:
    now, effective = await _chunk_clock(conn, effective_at)
    event_ids = await reserve_transfer_ids(conn, len(pending_ids))
    await conn.execute(f"set local work_mem = '256MB';\n{_RESOLVE_STAGE}")
    await conn.copy_records_to_table(
        "bulk_resolve_stage",
        records=list(zip(range(len(pending_ids)), event_ids, pending_ids, strict=True)),
        columns=["ord", "event_id", "pending_id"],
    )
    await conn.execute("analyze bulk_resolve_stage")
    bad = await conn.fetchrow(
        """select s.ord, s.pending_id, t.id is null as missing, t.kind, t.expires_at
             from bulk_resolve_stage s
             left join lateral (select t.id, t.kind, t.expires_at from ledger.transfers t
                                 where t.id = s.pending_id limit 1) t on true
            where t.id is null or t.kind <> 1 or ($1 and t.expires_at is not null and t.expires_at <= $2)
            order by s.ord limit 1""",
        post,
        now,
    )
    if bad is not None:
        i, pid = bad["ord"], bad["pending_id"]
        if bad["missing"]:
            raise TransferNotFound(f"rows[{i}]: transfer {pid} not found", index=i, transfer=pid)
        if bad["kind"] != TransferKind.PENDING:
            raise TransferNotPending(f"rows[{i}]: transfer {pid} is not a pending transfer", index=i, transfer=pid)
        raise TransferExpired(f"rows[{i}]: pending transfer {pid} expired at {bad['expires_at']}", index=i)
    kind = TransferKind.POST if post else TransferKind.VOID
    metadata = {"reason": reason} if reason else {}
    await conn.execute(
        """with ins as (
               insert into ledger.transfers (id, kind, pending_id, currency, effective_at, created_at,
                                             description, metadata, actor)
               select s.event_id, $1, s.pending_id, t.currency, $2, $3, t.description, $4, $5
                 from bulk_resolve_stage s
                 join lateral (select t.currency, t.description from ledger.transfers t
                                where t.id = s.pending_id limit 1) t on true
                order by s.event_id
               on conflict (pending_id) where pending_id is not null do nothing
               returning id, pending_id)
           insert into bulk_resolved (event_id, pending_id) select id, pending_id from ins""",
        kind.value,
        effective,
        now,
        metadata,
        actor,
    )
    done = {r["pending_id"]: r["event_id"] for r in await conn.fetch("select * from bulk_resolved")}
    out: list[int | None] = [done.get(pid) for pid in pending_ids]
    await _chunk_store(conn, key, digest, operation_name(post), out)
    await _write(conn, _RESOLVE_LEGS, Phase.COMMIT if post else Phase.RELEASE)
    return BulkResult(out, False)


def operation_name(post: bool) -> str:
    return "bulk_post" if post else "bulk_void"


async def void_expired(conn: Connection, now: datetime | None = None, limit: int = 10_000) -> int:
    """Void pending transfers whose expiry has passed (the sweep); returns how many were voided.

    Runs inside the caller's transaction; call it repeatedly until it returns 0.
    """
    _require_transaction(conn)
    ids = [
        r["id"]
        for r in await conn.fetch(
            """select t.id from ledger.transfers t
                where t.expires_at is not null and t.expires_at <= coalesce($1, clock_timestamp())
                  and t.kind = 1
                  and not exists (select 1 from ledger.transfers r where r.pending_id = t.id)
                order by t.expires_at, t.id limit $2""",
            now,
            limit,
        )
    ]
    if not ids:
        return 0
    result = await bulk_resolve(conn, ids, key=None, post=False, reason="expired", actor="expiry-sweep")
    return sum(1 for i in result.transfer_ids if i is not None)


# Each code's account by a probe of the unique index on code (see _RESOLVE_LEGS: joined, the planner would
# hash the chunk against the whole accounts table), as one array in the codes' order (NULL: none yet).
_ACCOUNT_IDS = """
select array_agg(a.id order by b.ord)
  from bulk_account_codes b
  left join lateral (select a.id from ledger.accounts a where a.code = b.code limit 1) a on true
"""


# The missing codes of ``bulk_account_codes`` (by ``ord``) opened, their ids in that order; ``{conflict}`` is
# empty or an ON CONFLICT clause (see ensure_account_ids).
_OPEN_ACCOUNTS = """
with ins as (
    insert into ledger.accounts (code, currency, normal_balance, no_overdraft, metadata)
    select distinct b.code, $1::text, $2::smallint, $3::boolean, $4::jsonb
      from unnest($5::int[]) m(ord) join bulk_account_codes b on b.ord = m.ord
     order by b.code
    {conflict}
    returning id, code
)
select array_agg(i.id order by m.ord)
  from unnest($5::int[]) m(ord)
  join bulk_account_codes b on b.ord = m.ord
  left join ins i on i.code = b.code
"""


# The missing accounts among the codes a query selects, opened in code order (see open_selected_accounts):
# each code probed on the unique index on code (joined, the planner could hash the whole accounts table).
_OPEN_SELECTED = """
insert into ledger.accounts (code, currency, normal_balance, no_overdraft, metadata)
select q.code, ${n1}::text, ${n2}::smallint, ${n3}::boolean, ${n4}::jsonb
  from (select distinct s.code::text as code from ({query}) s(code)) q
{probe}
 order by q.code
{conflict}
"""
_PROBE_SELECTED = """
  left join lateral (select true as found from ledger.accounts a where a.code = q.code limit 1) f on true
 where f.found is null
"""


async def open_selected_accounts(
    conn: Connection,
    select_codes: str,
    *args: Any,
    currency: str,
    normal: NormalBalance,
    no_overdraft: bool = False,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Open the accounts ``select_codes`` names that do not exist yet, without bringing the codes here;
    returns how many were opened.

    ``select_codes`` is a trusted query of this codebase (never user input) with one text column, the codes,
    and ``args`` its parameters ($1 onwards). Existing accounts are left as they are, whatever their flags; the
    missing ones are inserted in code order, as :func:`ensure_account_ids` inserts, so neither can deadlock
    the other. A code another transaction opens meanwhile is skipped. Runs in the caller's transaction.

    What it is for: opening a large set of accounts known in the database (a payment run's households) before
    they are needed, in one statement per slice, with no per-account work in this process.

    The codes are first inserted as they are, in a savepoint: when none exists yet (a program's first run),
    that is all, with no probe of each code (1 to 3 µs of PostgreSQL and three buffer reads an account,
    docs/performance.md). If one exists, that insert fails on the unique index at once, and the codes are
    probed and only the missing ones inserted.
    """
    _require_transaction(conn)
    require_currency(currency)
    n = len(args)
    params = (*args, currency, normal.sign, no_overdraft, metadata or {})
    places = {f"n{i}": n + i for i in range(1, 5)}

    def insert(conflict: str, probe: str = _PROBE_SELECTED) -> Awaitable[str]:
        sql = _OPEN_SELECTED.format(query=select_codes, probe=probe, conflict=conflict, **places)
        return conn.execute(sql, *params)

    try:
        async with conn.transaction():
            status = await insert("", probe="")
    except asyncpg.UniqueViolationError:
        status = await _insert_accounts(conn, insert)
    return int(status.rsplit(" ", 1)[1])


async def _insert_accounts(conn: Connection, insert: Callable[[str], Awaitable[_T]]) -> _T:
    """Run an insert of accounts given its ``ON CONFLICT`` clause: first a plain one, in a savepoint (a
    speculative insert costs PostgreSQL about a quarter more an account, 20.3 against 15.5 µs,
    docs/performance.md). If another transaction opened one of the codes meanwhile, the plain insert fails on
    the unique index (after waiting for that transaction's commit) and is run again with ``ON CONFLICT DO
    NOTHING``, which skips that code."""
    try:
        async with conn.transaction():
            return await insert("")
    except asyncpg.UniqueViolationError:
        return await insert("on conflict (code) do nothing")


async def ensure_account_ids(
    conn: Connection,
    codes: Sequence[str],
    *,
    currency: str,
    normal: NormalBalance,
    no_overdraft: bool = False,
    metadata: dict[str, Any] | None = None,
) -> list[int]:
    """The ids of the accounts ``codes`` name, in the same order, opening those that do not exist yet.

    Existing accounts are found by a probe of their code and left as they are, whatever their flags; only
    the missing ones are inserted (set-based, in code order, so concurrent callers cannot deadlock). A code
    may appear more than once. Runs in the caller's transaction.

    Every payment run after a program's first finds its households' accounts: a probe of the code costs
    PostgreSQL about 7 µs an account found (the codes' ``COPY`` included), where inserting every code with
    ``ON CONFLICT DO NOTHING`` and then reading the ids by code cost about 16 (docs/performance.md,
    "Households' accounts found by their code"). The missing ones are opened by a plain insert, which costs
    about a quarter less than a speculative one ("Smaller cuts after it").
    """
    _require_transaction(conn)
    require_currency(currency)
    if not codes:
        return []
    for code in codes[:1]:
        AccountSpec(code, currency, normal)  # the code's format, checked once here and by the domain
    await conn.execute(
        """create temp table if not exists bulk_account_codes (ord int not null, code text not null)
               on commit delete rows;
           truncate bulk_account_codes"""
    )
    await conn.copy_records_to_table("bulk_account_codes", records=list(enumerate(codes)), columns=["ord", "code"])
    ids: list[int | None] = await conn.fetchval(_ACCOUNT_IDS)
    missing = [i for i, found in enumerate(ids) if found is None]
    if missing:
        # The missing ones are inserted and their ids read from the insert itself; a code another transaction
        # opened meanwhile is skipped by the insert (see _insert_accounts), and a last probe then finds it.
        args = (currency, normal.sign, no_overdraft, metadata or {}, missing)

        def insert(conflict: str) -> Awaitable[list[int | None]]:
            return conn.fetchval(_OPEN_ACCOUNTS.format(conflict=conflict), *args)

        opened = await _insert_accounts(conn, insert)
        for i, found in zip(missing, opened, strict=True):
            ids[i] = found
        if any(found is None for found in opened):
            ids = await conn.fetchval(_ACCOUNT_IDS)
    if any(found is None for found in ids):  # every code exists after the insert above
        raise RuntimeError("an account opened in this transaction is not visible to it")
    return [found for found in ids if found is not None]
