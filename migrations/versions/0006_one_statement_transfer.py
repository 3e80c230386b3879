"""An online transfer in one statement: lock, check and write together.

Revision ID: 0006_one_statement_transfer
Revises: 0005_online_path
Create Date: 2026-11-28

``ledger.create_transfer`` ran about a dozen statements per transfer (idempotency lookup, code resolution,
currency check, closed periods, the transfer row, the account locks, the postings, the balances, the
stored response), and most of the server's time went to starting and ending each statement rather than to
the work (``docs/performance.md``). It now runs two: the idempotency lookup (after the key's advisory lock,
so it sees a concurrent duplicate that committed), and one statement that locks the accounts in
``(hot, id)`` order, computes every posting's balances after and version from the locked rows, checks
existence, currency, closed accounts, closed periods and the overdraft rule, and writes the transfer, its
postings, the new balances and the stored response only when every check passes. A failed check writes
nothing and is raised with the same condition, message and detail as before.

Why one statement is safe: ``select … for update`` returns the newest version of each row it locks (after
waiting for a concurrent writer), the balances after are computed from those rows, and the update of the
accounts sets the values computed from them; the update re-finds a row changed since the statement's
snapshot and, the row being locked by this transaction, applies the same values. The record time is read
once every account is locked, so record times grow with each account's versions as before.
"""

import importlib
from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0006_one_statement_transfer"
down_revision: str | None = "0005_online_path"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
create or replace function ledger.create_transfer(
    p_key text, p_hash bytea, p_pending boolean, p_codes text[], p_amounts bigint[], p_currency char(3),
    p_effective_at timestamptz, p_expires_at timestamptz, p_description text, p_metadata jsonb,
    p_actor text
) returns jsonb language plpgsql as $$
declare
    v_hash bytea;
    v_response jsonb;
    v_ids bigint[];
    v_kind smallint := case when p_pending then 1 else 0 end;
begin
    if p_key is not null then
        perform pg_advisory_xact_lock(hashtextextended(p_key, 7));
        select k.request_hash, k.response into v_hash, v_response from ledger.idempotency_keys k where k.key = p_key;
        if found then
            if v_hash <> p_hash then
                raise exception 'idempotency key % was used with a different request', p_key
                    using errcode = 'CL006', detail = jsonb_build_object('key', p_key)::text;
            end if;
            return v_response || '{"replayed": true}'::jsonb;
        end if;
    end if;
    if p_expires_at is not null and p_expires_at <= clock_timestamp() then
        raise exception 'expires_at % is not in the future', p_expires_at using errcode = 'CL011';
    end if;
    with locked as materialized (
        select a.id, a.code, a.currency, a.closed, a.normal_balance, a.no_overdraft, a.posted,
               a.pending_debits, a.pending_credits, a.version
          from ledger.accounts a
         where a.code = any(p_codes)
         order by a.hot, a.id
           for update
    ), clock as materialized (
        -- read once every account is locked
        select now_ts, coalesce(p_effective_at, now_ts) as effective
          from (select clock_timestamp() as now_ts, count(*) from locked) c
    ), legs as materialized (
        select x.leg, x.amount, a.id as account_id, a.currency, a.closed, a.normal_balance, a.no_overdraft,
               (a.posted + sum(ledger.posted_delta(x.amount, v_kind, a.normal_balance)) over w)::bigint
                   as posted_after,
               (a.pending_debits + sum(ledger.pending_debit_delta(x.amount, v_kind)) over w)::bigint as pdeb_after,
               (a.pending_credits + sum(ledger.pending_credit_delta(x.amount, v_kind)) over w)::bigint
                   as pcred_after,
               a.version + row_number() over w as version_after,
               lead(x.leg) over w is null as last
          from unnest(p_codes, p_amounts) with ordinality as x(code, amount, leg)
          left join locked a on a.code = x.code
        window w as (partition by x.code order by x.leg)
    ), new_transfer as (
        insert into ledger.transfers (kind, currency, effective_at, created_at, expires_at, description,
                                      metadata, actor)
        select v_kind, p_currency, clock.effective, clock.now_ts, p_expires_at, coalesce(p_description, ''),
               coalesce(p_metadata, '{}'::jsonb), coalesce(p_actor, '')
          from clock
         where not exists (
                   select from legs l
                    where l.account_id is null or l.currency <> p_currency or l.closed
                       or (l.last and l.no_overdraft
                           and l.posted_after - case when l.normal_balance = 1 then l.pcred_after
                                                     else l.pdeb_after end < 0))
           and not exists (select from ledger.closed_periods p
                            where clock.effective >= p.starts_at and clock.effective < p.ends_at)
        returning id, effective_at, created_at, expires_at, actor
    ), new_postings as (
        insert into ledger.postings (account_id, version, transfer_id, leg, amount, phase, posted_after,
                                     pending_debits_after, pending_credits_after, recorded_at)
        select l.account_id, l.version_after, t.id, l.leg, l.amount, v_kind, l.posted_after, l.pdeb_after,
               l.pcred_after, t.created_at
          from legs l, new_transfer t
    ), new_balances as (
        update ledger.accounts a
           set posted = l.posted_after, pending_debits = l.pdeb_after, pending_credits = l.pcred_after,
               version = l.version_after
          from legs l
         where a.id = l.account_id and l.last and exists (select from new_transfer)
    ), response as materialized (
        select jsonb_build_object('id', t.id, 'effective_at', t.effective_at, 'created_at', t.created_at,
                                  'expires_at', t.expires_at, 'actor', t.actor) as body
          from new_transfer t
    ), stored as (
        insert into ledger.idempotency_keys (key, request_hash, response)
        select p_key, p_hash, response.body from response where p_key is not null
    )
    select response.body into v_response from response;
    if v_response is not null then
        return v_response || '{"replayed": false}'::jsonb;
    end if;
    -- Refused: nothing was written. Name the reason with the checks, messages and details of the
    -- step-by-step path (each raises its condition); the accounts are locked, so they see what the
    -- statement saw.
    v_ids := ledger.account_ids(p_codes, p_currency);
    perform ledger.assert_period_open(coalesce(p_effective_at, clock_timestamp()));
    perform ledger.write_legs(0, v_ids, p_amounts, v_kind);
    raise exception 'transfer refused for a reason the checks did not name' using errcode = 'CL011';
end $$;
"""

SIGNATURE = (
    "ledger.create_transfer(text, bytea, boolean, text[], bigint[], char, timestamptz, timestamptz, text, jsonb, text)"
)


def _previous_function() -> str:
    """The step-by-step ``create_transfer`` of 0001, for a downgrade (it returned the whole transfer)."""
    functions: str = importlib.import_module("migrations.versions.0001_ledger").FUNCTIONS
    start = functions.index("create function ledger.create_transfer(")
    end = functions.index("end $$;", start) + len("end $$;")
    return "create or replace" + functions[start + len("create") : end]


def upgrade() -> None:
    # "create or replace" drops the function's settings: plan its statements once per session again
    execute_script(UPGRADE + f"\nalter function {SIGNATURE} set plan_cache_mode = force_generic_plan;\n")


def downgrade() -> None:
    execute_script(_previous_function() + f"\nalter function {SIGNATURE} set plan_cache_mode = force_generic_plan;\n")
