"""The set-based path: post, hold, post-pending or void thousands of two-posting transfers per statement.

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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ledger.engine import _raise_translated
from ledger.errors import (
    AppError,
    AccountClosed,
    AccountNotFound,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidTransfer,
    TransferExpired,
    TransferNotFound,
    TransferNotPending,
)
from ledger.models import Phase, TransferKind
from ledger.money import require_currency, require_minor_units

MAX_CHUNK = 200_000


@dataclass(frozen=True, slots=True)
class BulkTransfer:
    """One two-posting transfer of a bulk chunk: ``amount`` from the credit account to the debit account.

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


async def _chunk_lookup(
    conn: asyncpg.Connection, key: str | None, digest: bytes
) -> list[int | None] | None:
    if key is None:
        return None
    await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 7))", key)
    row = await conn.fetchrow("select request_hash, transfer_ids from ledger.bulk_chunks where key = $1", key)
    if row is None:
        return None
    if bytes(row["request_hash"]) != digest:
        raise IdempotencyConflict(f"bulk chunk key {key} was used with different rows", key=key)
    return [None if i == 0 else i for i in row["transfer_ids"]]


async def _chunk_store(
    conn: asyncpg.Connection, key: str | None, digest: bytes, operation: str, ids: list[int | None]
) -> None:
    if key is not None:
        await conn.execute(
            """insert into ledger.bulk_chunks (key, request_hash, operation, transfer_ids)
               values ($1, $2, $3, $4)""",
            key,
            digest,
            operation,
            [0 if i is None else i for i in ids],
        )


async def reserve_transfer_ids(conn: asyncpg.Connection, count: int) -> list[int]:
    """Reserve ``count`` transfer ids from the ledger's sequence, in increasing order."""
    rows = await conn.fetch(
        "select nextval(pg_get_serial_sequence('ledger.transfers', 'id')) as id from generate_series(1, $1)",
        count,
    )
    return sorted(r["id"] for r in rows)


def _require_transaction(conn: asyncpg.Connection) -> None:
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

# Postings, balances after and versions for the staged transfers, with their accounts locked already.
_LEGS = """
select s.transfer_id, 1::smallint as leg, s.debit_id as account_id, s.amount from bulk_stage s
union all
select s.transfer_id, 2::smallint, s.credit_id, -s.amount from bulk_stage s
"""
_RESOLVE_LEGS = """
select r.event_id as transfer_id, p.leg, p.account_id, p.amount
  from bulk_resolved r join ledger.postings p on p.transfer_id = r.pending_id
"""


def _overdraft_sql(legs: str) -> str:
    return f"""
    with l as ({legs}),
    d as (select l.account_id,
                 sum(ledger.posted_delta(l.amount, $1::smallint, a.normal_balance)) as dp,
                 sum(ledger.pending_debit_delta(l.amount, $1::smallint)) as dd,
                 sum(ledger.pending_credit_delta(l.amount, $1::smallint)) as dc
            from l join ledger.accounts a on a.id = l.account_id
           where a.no_overdraft
           group by l.account_id)
    select a.code,
           a.posted - case when a.normal_balance = 1 then a.pending_credits else a.pending_debits end
               as available,
           -(d.dp - case when a.normal_balance = 1 then d.dc else d.dd end) as needed
      from d join ledger.accounts a on a.id = d.account_id
     where (a.posted + d.dp) - case when a.normal_balance = 1 then a.pending_credits + d.dc
                                   else a.pending_debits + d.dd end < 0
     limit 1"""


def _write_postings_sql(legs: str) -> str:
    return f"""
    with l as ({legs}),
    ins as (
        insert into ledger.postings (account_id, version, transfer_id, leg, amount, phase, posted_after,
                                     pending_debits_after, pending_credits_after, recorded_at)
        select a.id,
               a.version + row_number() over w,
               l.transfer_id, l.leg, l.amount, $1::smallint,
               a.posted + sum(ledger.posted_delta(l.amount, $1::smallint, a.normal_balance)) over w,
               a.pending_debits + sum(ledger.pending_debit_delta(l.amount, $1::smallint)) over w,
               a.pending_credits + sum(ledger.pending_credit_delta(l.amount, $1::smallint)) over w,
               $2::timestamptz
          from l join ledger.accounts a on a.id = l.account_id
        window w as (partition by a.id order by l.transfer_id, l.leg
                     rows between unbounded preceding and current row)
        returning 1
    )
    select count(*) from ins"""


def _update_balances_sql(legs: str) -> str:
    return f"""
    with l as ({legs})
    update ledger.accounts a
       set posted = a.posted + d.dp,
           pending_debits = a.pending_debits + d.dd,
           pending_credits = a.pending_credits + d.dc,
           version = a.version + d.n
      from (select l.account_id,
                   sum(ledger.posted_delta(l.amount, $1::smallint, x.normal_balance)) as dp,
                   sum(ledger.pending_debit_delta(l.amount, $1::smallint)) as dd,
                   sum(ledger.pending_credit_delta(l.amount, $1::smallint)) as dc,
                   count(*) as n
              from l join ledger.accounts x on x.id = l.account_id
             group by l.account_id) d
     where a.id = d.account_id"""


async def _lock_and_write(conn: asyncpg.Connection, legs: str, phase: Phase, now: datetime) -> None:
    await conn.execute(
        f"select 1 from ledger.accounts where id in (select account_id from ({legs}) l) order by id for update"
    )
    bad = await conn.fetchrow(_overdraft_sql(legs), phase.value)
    if bad is not None:
        raise InsufficientFunds(
            f"insufficient funds in account {bad['code']}: available {bad['available']}, the chunk needs "
            f"{bad['needed']}",
            account=bad["code"],
            available=bad["available"],
            needed=bad["needed"],
        )
    await conn.fetchval(_write_postings_sql(legs), phase.value, now)
    await conn.execute(_update_balances_sql(legs), phase.value)


async def bulk_transfer(
    conn: asyncpg.Connection,
    rows: Sequence[BulkTransfer],
    *,
    key: str | None,
    currency: str,
    pending: bool = False,
    expires_at: datetime | None = None,
    effective_at: datetime | None = None,
    description: str = "",
    actor: str = "",
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

    Raises:
        InvalidTransfer: a row is malformed (its index is named).
        AccountNotFound, AccountClosed, CurrencyMismatch, InsufficientFunds, PeriodClosed,
        IdempotencyConflict.
    """
    _require_transaction(conn)
    require_currency(currency)
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
            (i, r.debit_account_id, r.credit_account_id, r.amount, orjson.dumps(r.metadata).decode() if r.metadata else None)
        )
    params = {
        "currency": currency,
        "pending": pending,
        "expires_at": expires_at.isoformat() if expires_at else None,
        "effective_at": effective_at.isoformat() if effective_at else None,
        "description": description,
    }
    digest = _chunk_hash("bulk_transfer", staged, params)
    stored = await _chunk_lookup(conn, key, digest)
    if stored is not None:
        return BulkResult(stored, True)
    try:
        return await _bulk_transfer(
            conn, staged, key, digest, currency, pending, expires_at, effective_at, description, actor
        )
    except asyncpg.PostgresError as e:
        _raise_translated(e)
        raise


async def _bulk_transfer(
    conn: asyncpg.Connection,
    staged: list[tuple[Any, ...]],
    key: str | None,
    digest: bytes,
    currency: str,
    pending: bool,
    expires_at: datetime | None,
    effective_at: datetime | None,
    description: str,
    actor: str,
) -> BulkResult:
    now: datetime = await conn.fetchval("select clock_timestamp()")
    effective = effective_at or now
    await conn.execute("select ledger.assert_period_open($1)", effective)
    if expires_at is not None and expires_at <= now:
        raise InvalidTransfer(f"expires_at {expires_at.isoformat()} is not in the future")
    ids = await reserve_transfer_ids(conn, len(staged))
    await conn.execute(_STAGE)
    await conn.copy_records_to_table(
        "bulk_stage",
        records=[(o, ids[o], d, c, a, m) for (o, d, c, a, m) in staged],
        columns=["ord", "transfer_id", "debit_id", "credit_id", "amount", "metadata"],
    )
    bad = await conn.fetchrow(
        """select s.ord, s.debit_id, s.credit_id, da.id is null as no_debit, ca.id is null as no_credit,
                  da.code as debit_code, ca.code as credit_code,
                  coalesce(da.closed, false) as debit_closed, coalesce(ca.closed, false) as credit_closed,
                  da.currency as debit_currency, ca.currency as credit_currency
             from bulk_stage s
             left join ledger.accounts da on da.id = s.debit_id
             left join ledger.accounts ca on ca.id = s.credit_id
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
    await _lock_and_write(conn, _LEGS, Phase.HOLD if pending else Phase.POSTED, now)
    out: list[int | None] = list(ids)
    await _chunk_store(conn, key, digest, "bulk_transfer", out)
    return BulkResult(out, False)


async def bulk_resolve(
    conn: asyncpg.Connection,
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
    operation = "bulk_post" if post else "bulk_void"
    params = {"reason": reason, "effective_at": effective_at.isoformat() if effective_at else None}
    digest = _chunk_hash(operation, [(i,) for i in pending_ids], params)
    stored = await _chunk_lookup(conn, key, digest)
    if stored is not None:
        return BulkResult(stored, True)
    try:
        return await _bulk_resolve(conn, list(pending_ids), key, digest, post, reason, effective_at, actor)
    except asyncpg.PostgresError as e:
        _raise_translated(e)
        raise


async def _bulk_resolve(
    conn: asyncpg.Connection,
    pending_ids: list[int],
    key: str | None,
    digest: bytes,
    post: bool,
    reason: str | None,
    effective_at: datetime | None,
    actor: str,
) -> BulkResult:
    now: datetime = await conn.fetchval("select clock_timestamp()")
    effective = effective_at or now
    await conn.execute("select ledger.assert_period_open($1)", effective)
    event_ids = await reserve_transfer_ids(conn, len(pending_ids))
    await conn.execute(_RESOLVE_STAGE)
    await conn.copy_records_to_table(
        "bulk_resolve_stage",
        records=list(zip(range(len(pending_ids)), event_ids, pending_ids, strict=True)),
        columns=["ord", "event_id", "pending_id"],
    )
    bad = await conn.fetchrow(
        """select s.ord, s.pending_id, t.id is null as missing, t.kind, t.expires_at
             from bulk_resolve_stage s left join ledger.transfers t on t.id = s.pending_id
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
                 from bulk_resolve_stage s join ledger.transfers t on t.id = s.pending_id
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
    await _lock_and_write(conn, _RESOLVE_LEGS, Phase.COMMIT if post else Phase.RELEASE, now)
    done = {r["pending_id"]: r["event_id"] for r in await conn.fetch("select * from bulk_resolved")}
    out: list[int | None] = [done.get(pid) for pid in pending_ids]
    await _chunk_store(conn, key, digest, operation_name(post), out)
    return BulkResult(out, False)


def operation_name(post: bool) -> str:
    return "bulk_post" if post else "bulk_void"


async def void_expired(conn: asyncpg.Connection, now: datetime | None = None, limit: int = 10_000) -> int:
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
