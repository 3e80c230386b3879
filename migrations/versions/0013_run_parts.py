"""A run is created in parts, on several connections at once, and can be resumed.

Revision ID: 0013_run_parts
Revises: 0012_transfer_json_probes
Create Date: 2026-11-29

A run's creation was one transaction: one statement wrote every payment and entitlement on one core while
the other waited (a million households: 18 to 25 s). It is now split by household code into parts written
in parallel, each in its own transaction:

* ``runs.status`` gains ``creating``: the run exists, its parts are being written; it cannot be approved or
  executed. ``runs.part_bounds`` holds the household codes that split the registry into parts (part ``k``
  takes the codes from bound ``k - 1``, inclusive, to bound ``k``, exclusive), fixed when the run is
  planned, so a resumed creation writes exactly the parts still missing.
* ``payments.run_parts`` records each written part, in the part's own transaction, so a part is written
  exactly once (its primary key): what it pays, in how many batches, and the households it leaves out.
  It is append-only.

When every part is written, the run becomes ``created`` (its batches planned, its totals summed), as before.

The downgrade refuses while a run is still ``creating``: the schema before cannot hold it.
"""

from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0013_run_parts"
down_revision: str | None = "0012_transfer_json_probes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
alter table payments.runs drop constraint runs_status;
alter table payments.runs add constraint runs_status
    check (status in ('creating', 'created', 'approved', 'executing', 'settled', 'closed'));
alter table payments.runs add column part_bounds text[] not null default '{}';
comment on column payments.runs.part_bounds is
    'household codes splitting the registry into the parts the run is created in (n - 1 bounds for n parts)';

create table payments.run_parts (
    run_id bigint not null,
    part smallint not null,
    payments_count integer not null,
    payments_total bigint not null,
    batches_count integer not null,
    exclusions jsonb not null,
    written_at timestamptz not null default clock_timestamp(),
    constraint run_parts_pkey primary key (run_id, part),
    constraint run_parts_counts check (payments_count >= 0 and payments_total >= 0 and batches_count >= 0)
);
create trigger run_parts_append_only before update or delete on payments.run_parts
    for each row execute function payments.refuse_change();
create trigger run_parts_no_truncate before truncate on payments.run_parts
    for each statement execute function payments.refuse_change();
"""

# A run still being created has no form in the schema before: the downgrade stops and says so. The parts'
# records of created runs go (their sums are in the runs).
DOWNGRADE = r"""
do $$
declare
    n bigint := (select count(*) from payments.runs where status = 'creating');
begin
    if n > 0 then
        raise exception '% payment run(s) are still being created; this downgrade would erase how: finish them '
            'first (cct-ledger runs create with the same program and period)', n;
    end if;
end $$;
drop table payments.run_parts;
alter table payments.runs drop column part_bounds;
alter table payments.runs drop constraint runs_status;
alter table payments.runs add constraint runs_status
    check (status in ('created', 'approved', 'executing', 'settled', 'closed'));
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
