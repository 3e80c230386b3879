"""A transfer's JSON reads its postings' accounts and its resolution's postings by index probes.

Revision ID: 0012_transfer_json_probes
Revises: 0011_token_revoked_by
Create Date: 2026-11-28

``ledger.transfer_json`` (the answer of a post, a void, a reversal and of reading a transfer) joined the
transfer's postings with ``ledger.accounts``, and a hold's resolution with ``ledger.postings``. Planned on
statistics that expect many postings per transfer (as an automatic ANALYZE can leave them after a payment
run), the join became a hash of the whole accounts table for every call: 77 ms a call among 200,000
accounts, and the next bimester's execute phase took 27 to 35 s instead of 18 (docs/performance.md, "A
transfer's JSON by probes"). Each
posting's account code is now a probe of the primary key, and the resolution's postings are read by the
resolution's id, so no plan can scan either table whole. The JSON is the same.
"""

import importlib
from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0012_transfer_json_probes"
down_revision: str | None = "0011_token_revoked_by"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
create or replace function ledger.transfer_json(p_id bigint) returns jsonb
    language sql stable as $$
    select jsonb_build_object(
        'id', t.id,
        'kind', case t.kind when 0 then 'transfer' when 1 then 'pending' when 2 then 'post' else 'void' end,
        'status', ledger.transfer_status(t),
        'currency', t.currency,
        'postings', (
            select coalesce(jsonb_agg(
                       jsonb_build_object('account', (select a.code from ledger.accounts a where a.id = p.account_id),
                                          case when p.amount > 0 then 'debit' else 'credit' end,
                                          abs(p.amount))
                       order by p.leg), '[]'::jsonb)
              from ledger.postings p
             where p.transfer_id = t.id),
        'effective_at', t.effective_at,
        'created_at', t.created_at,
        'expires_at', t.expires_at,
        'description', t.description,
        'metadata', t.metadata,
        'actor', t.actor,
        'pending_id', t.pending_id,
        'reverses_id', t.reverses_id,
        'resolved_by', (select r.id from ledger.transfers r where r.pending_id = t.id),
        'posted_amount', case when t.kind = 1 then (
            select (coalesce(sum(abs(q.amount)) filter (where q.phase = 2), 0) / 2)::bigint
              from ledger.postings q
             where q.transfer_id = (select r.id from ledger.transfers r where r.pending_id = t.id)) end,
        'reversed_by', (select r.id from ledger.transfers r where r.reverses_id = t.id)
    )
    from ledger.transfers t where t.id = p_id
$$;
"""


def _previous_function() -> str:
    """0001's ``transfer_json`` (as ``create or replace``), for a downgrade."""
    functions: str = importlib.import_module("migrations.versions.0001_ledger").FUNCTIONS
    start = functions.index("create function ledger.transfer_json(")
    end = functions.index("$$;", functions.index("as $$", start) + len("as $$")) + len("$$;")
    return "create or replace" + functions[start + len("create") : end]


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(_previous_function())
