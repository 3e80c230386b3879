"""A leaner online path: fewer statements per transfer, no configuration switch on the inner functions.

Revision ID: 0005_online_path
Revises: 0004_payments
Create Date: 2026-11-28

Measured on the online transfer (``bench/ledger_online.py``, ``docs/performance.md``), same results:

* the balance check of new postings is one aggregate over the transition table instead of two;
* account codes resolve to ids, and the currency is checked, in one statement instead of two, each code by
  its unique index whatever the table's statistics say;
* the bulk path finds the hot accounts by a partial index instead of intersecting them with each chunk;
* ``plan_cache_mode`` stays set on the functions a client calls (``create_transfer``, ``resolve_pending``,
  ``reverse_transfer``): the setting holds for the functions they call, which no longer switch it again on
  every call (a function with a ``SET`` clause saves and restores the configuration each time it runs).
"""

from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0005_online_path"
down_revision: str | None = "0004_payments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
create or replace function ledger.check_new_postings() returns trigger language plpgsql as $$
declare
    bad record;
begin
    -- per transfer: every phase balances and has two or more postings; one phase, except a partial post
    -- (phases 2 and 3: commit what is posted, release the rest)
    select g.* into bad
      from (select n.transfer_id, min(n.phase) as lo, max(n.phase) as hi,
                   coalesce(sum(n.amount) filter (where n.phase = 0), 0) as s0,
                   coalesce(sum(n.amount) filter (where n.phase = 1), 0) as s1,
                   coalesce(sum(n.amount) filter (where n.phase = 2), 0) as s2,
                   coalesce(sum(n.amount) filter (where n.phase = 3), 0) as s3,
                   count(*) filter (where n.phase = 0) as c0, count(*) filter (where n.phase = 1) as c1,
                   count(*) filter (where n.phase = 2) as c2, count(*) filter (where n.phase = 3) as c3
              from new_postings n
             group by n.transfer_id) g
     where g.s0 <> 0 or g.s1 <> 0 or g.s2 <> 0 or g.s3 <> 0 or 1 in (g.c0, g.c1, g.c2, g.c3)
        or (g.lo <> g.hi and not (g.lo = 2 and g.hi = 3))
     limit 1;
    if not found then
        return null;
    end if;
    if bad.lo <> bad.hi and not (bad.lo = 2 and bad.hi = 3) then
        raise exception 'transfer % mixes posting phases', bad.transfer_id using errcode = 'CL101';
    end if;
    raise exception 'transfer % does not balance (%)', bad.transfer_id,
        concat_ws(', ',
                  case when bad.c0 > 0 then format('phase 0: sum %s, %s postings', bad.s0, bad.c0) end,
                  case when bad.c1 > 0 then format('phase 1: sum %s, %s postings', bad.s1, bad.c1) end,
                  case when bad.c2 > 0 then format('phase 2: sum %s, %s postings', bad.s2, bad.c2) end,
                  case when bad.c3 > 0 then format('phase 3: sum %s, %s postings', bad.s3, bad.c3) end)
        using errcode = 'CL101';
end $$;

create or replace function ledger.account_ids(p_codes text[], p_currency char(3)) returns bigint[]
    language plpgsql stable as $$
declare
    v_ids bigint[];
    v_missing text[];
    v_bad text;
    v_bad_currency text;
begin
    select array_agg(a.id order by x.o),
           array_agg(x.c order by x.o) filter (where a.id is null),
           min(a.code) filter (where a.currency <> p_currency),
           min(a.currency) filter (where a.currency <> p_currency)
      into v_ids, v_missing, v_bad, v_bad_currency
      from unnest(p_codes) with ordinality as x(c, o)
      left join lateral (select q.id, q.code, q.currency from ledger.accounts q where q.code = x.c) a on true;
    if v_missing is not null then
        raise exception 'account % not found', array_to_string(v_missing, ', ')
            using errcode = 'CL001', detail = jsonb_build_object('accounts', v_missing)::text;
    end if;
    if v_bad is not null then
        select currency into v_bad_currency from ledger.accounts where code = v_bad;
        raise exception 'account % is in %, the transfer in %', v_bad, v_bad_currency, p_currency
            using errcode = 'CL003', detail = jsonb_build_object('account', v_bad, 'currency', v_bad_currency)::text;
    end if;
    return v_ids;
end $$;

-- The bulk path asks for every hot account (a few among millions) once per chunk.
create index accounts_hot on ledger.accounts (id) where hot;

alter function ledger.write_legs(bigint, bigint[], bigint[], smallint, smallint[]) reset all;
alter function ledger.account_ids(text[], char) reset all;
alter function ledger.idempotency_lookup(text, bytea) reset all;
"""

# The function bodies above behave as the previous ones did; a downgrade only restores the settings.
DOWNGRADE = r"""
drop index ledger.accounts_hot;
alter function ledger.write_legs(bigint, bigint[], bigint[], smallint, smallint[])
    set plan_cache_mode = force_generic_plan;
alter function ledger.account_ids(text[], char) set plan_cache_mode = force_generic_plan;
alter function ledger.idempotency_lookup(text, bytea) set plan_cache_mode = force_generic_plan;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
