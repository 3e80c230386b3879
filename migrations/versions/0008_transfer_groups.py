"""Online transfers in groups: several callers' transfers in one statement and one commit.

Revision ID: 0008_transfer_groups
Revises: 0007_payment_outcomes
Create Date: 2026-11-28

``ledger.create_transfers`` writes several independent online transfers (each with its own idempotency
key, request hash and actor) in one statement, as ``ledger.create_transfer`` would write them one after the
other in the order given (one record time for them all, ids taken before the locks), or writes nothing and
returns null. It returns null, having written
nothing, when any of them would not be written as a new transfer: a key already used (a replay, or a
conflict), an expiry in the past, an unknown, closed or other-currency account, a closed period, or an
overdraft. The caller then runs each transfer on its own (``ledger.create_transfer``), which replays,
refuses or writes it with its own answer. Grouping is an optimisation, never a change of outcome.

Lock order is the single transfer's: idempotency keys first (by lock id), then the accounts in
``(hot, id)`` order, so groups, single transfers and batches wait for each other but cannot deadlock.
Every posting's balances after and version follow the order of the transfers and their legs (a window
over the account's legs in that order), and the overdraft rule is checked after each transfer's last leg
on an account, as the single transfers would check it one after the other. The transfers' ids are taken
from the sequence in that order. Why this is safe under concurrency is the argument of
``0006_one_statement_transfer``: ``for update`` returns the newest version of each locked row, and the
writes use values computed from those rows.
"""

from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0008_transfer_groups"
down_revision: str | None = "0007_payment_outcomes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = (
    "ledger.create_transfers(text[], bytea[], boolean[], char(3)[], timestamptz[], timestamptz[], text[], jsonb[], "
    "text[], integer[], smallint[], text[], bigint[])"
)

UPGRADE = r"""
create function ledger.create_transfers(
    p_keys text[], p_hashes bytea[], p_pending boolean[], p_currencies char(3)[], p_effective_at timestamptz[],
    p_expires_at timestamptz[], p_descriptions text[], p_metadata jsonb[], p_actors text[],
    p_leg_items integer[], p_legs smallint[], p_codes text[], p_amounts bigint[]
) returns jsonb language plpgsql as $$
declare
    v_ids bigint[];
    v_out jsonb;
begin
    -- Every item has a key (the caller's idempotency key), distinct within the group. The legs are given
    -- item by item, in order: item (1-based index of its transfer), leg number, account code, signed amount.
    perform pg_advisory_xact_lock(s.k)
       from (select distinct hashtextextended(x, 7) as k from unnest(p_keys) x order by 1) s;
    perform from ledger.idempotency_keys k where k.key = any(p_keys);
    if found then
        return null;  -- a replay or a conflict: each on its own says which
    end if;
    if exists (select from unnest(p_expires_at) e where e <= clock_timestamp()) then
        return null;
    end if;
    select array_agg(r.id order by r.id) into v_ids
      from (select nextval(pg_get_serial_sequence('ledger.transfers', 'id')) as id
              from generate_series(1, cardinality(p_keys))) r;
    with locked as materialized (
        select a.id, a.code, a.currency, a.closed, a.normal_balance, a.no_overdraft, a.posted,
               a.pending_debits, a.pending_credits, a.version
          from ledger.accounts a
         where a.code = any(p_codes)
         order by a.hot, a.id
           for update
    ), clock as materialized (
        -- read once every account is locked
        select c.now_ts from (select clock_timestamp() as now_ts, count(*) from locked) c
    ), items as materialized (
        select i.n::integer as n, v_ids[i.n] as id, i.key, i.hash,
               (case when i.pending then 1 else 0 end)::smallint as kind, i.currency,
               coalesce(i.effective_at, clock.now_ts) as effective, clock.now_ts, i.expires_at,
               coalesce(i.description, '') as description, coalesce(i.metadata, '{}'::jsonb) as metadata,
               coalesce(i.actor, '') as actor
          from unnest(p_keys, p_hashes, p_pending, p_currencies, p_effective_at, p_expires_at, p_descriptions,
                      p_metadata, p_actors)
               with ordinality as i(key, hash, pending, currency, effective_at, expires_at, description, metadata,
                                    actor, n),
               clock
    ), legs as materialized (
        select x.leg, x.amount, it.id as transfer_id, it.kind, it.currency as item_currency, it.now_ts,
               a.id as account_id, a.currency, a.closed, a.normal_balance, a.no_overdraft,
               (a.posted + sum(ledger.posted_delta(x.amount, it.kind, a.normal_balance)) over w)::bigint
                   as posted_after,
               (a.pending_debits + sum(ledger.pending_debit_delta(x.amount, it.kind)) over w)::bigint as pdeb_after,
               (a.pending_credits + sum(ledger.pending_credit_delta(x.amount, it.kind)) over w)::bigint
                   as pcred_after,
               a.version + row_number() over w as version_after,
               lead(x.item) over w is distinct from x.item as last_of_item,
               lead(x.ord) over w is null as last
          from unnest(p_leg_items, p_legs, p_codes, p_amounts) with ordinality as x(item, leg, code, amount, ord)
          join items it on it.n = x.item
          left join locked a on a.code = x.code
        window w as (partition by x.code order by x.ord)
    ), ok as materialized (
        select not exists (
                   select from legs l
                    where l.account_id is null or l.currency <> l.item_currency or l.closed
                       or (l.last_of_item and l.no_overdraft
                           and l.posted_after - case when l.normal_balance = 1 then l.pcred_after
                                                     else l.pdeb_after end < 0))
           and not exists (select from items it, ledger.closed_periods p
                            where it.effective >= p.starts_at and it.effective < p.ends_at) as ok
    ), new_transfers as (
        insert into ledger.transfers (id, kind, currency, effective_at, created_at, expires_at, description,
                                      metadata, actor)
        select it.id, it.kind, it.currency, it.effective, it.now_ts, it.expires_at, it.description, it.metadata,
               it.actor
          from items it, ok
         where ok.ok
         order by it.n
        returning id, effective_at, created_at, expires_at, actor
    ), new_postings as (
        insert into ledger.postings (account_id, version, transfer_id, leg, amount, phase, posted_after,
                                     pending_debits_after, pending_credits_after, recorded_at)
        select l.account_id, l.version_after, l.transfer_id, l.leg, l.amount, l.kind, l.posted_after, l.pdeb_after,
               l.pcred_after, l.now_ts
          from legs l, ok
         where ok.ok
    ), new_balances as (
        update ledger.accounts a
           set posted = l.posted_after, pending_debits = l.pdeb_after, pending_credits = l.pcred_after,
               version = l.version_after
          from legs l, ok
         where a.id = l.account_id and l.last and ok.ok
    ), responses as materialized (
        select t.id, jsonb_build_object('id', t.id, 'effective_at', t.effective_at, 'created_at', t.created_at,
                                        'expires_at', t.expires_at, 'actor', t.actor) as body
          from new_transfers t
    ), stored as (
        insert into ledger.idempotency_keys (key, request_hash, response)
        select it.key, it.hash, r.body from items it join responses r on r.id = it.id
    )
    select jsonb_agg(r.body || '{"replayed": false}'::jsonb order by it.n) into v_out
      from items it join responses r on r.id = it.id;
    return v_out;  -- null when a check refused: nothing was written
end $$;
"""


def upgrade() -> None:
    # Planned once per session, like the single transfer (0001, 0006).
    execute_script(UPGRADE + f"\nalter function {SIGNATURE} set plan_cache_mode = force_generic_plan;\n")


def downgrade() -> None:
    execute_script(f"drop function {SIGNATURE};")
