"""A payment's outcome in its own append-only row; the snapshot never changes.

Revision ID: 0007_payment_outcomes
Revises: 0006_one_statement_transfer
Create Date: 2026-11-28

Until now settlement updated each ``payments.payments`` row with its outcome (status, reason, the bank's
item id, the ledger transfer, the time). That rewrote a wide row (DNI, CCI, district, breakdown) and its
index entries for every payment: the costliest statement of settlement, about 30 µs a row. The outcome is
now a narrow row of ``payments.outcomes`` inserted once (about 9 µs a row), and the snapshot is immutable
like the ledger's history: an UPDATE or DELETE of a payment or an outcome is refused, and a second outcome
for the same payment is refused by the primary key, so an outcome is final and written exactly once.

``payments.payment_states`` is every payment with its state (``snapshotted`` while it has no outcome), for
the readers: reports, the API and the CLI.
"""

import importlib
from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0007_payment_outcomes"
down_revision: str | None = "0006_one_statement_transfer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
create function payments.refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'payments.%: % is refused, a payment''s snapshot and outcome are final', tg_table_name, tg_op
        using errcode = 'CP002';
end $$;

create table payments.outcomes (
    payment_id bigint not null,
    status text not null,
    reason text,
    bank_item_id text not null,
    ledger_transfer_id bigint,
    settled_at timestamptz not null default clock_timestamp(),
    constraint outcomes_pkey primary key (payment_id),
    constraint outcomes_status check (status in ('credited', 'rejected')),
    constraint outcomes_credited_transfer check ((status = 'credited') = (ledger_transfer_id is not null))
);
create trigger outcomes_append_only before update or delete on payments.outcomes
    for each row execute function payments.refuse_change();
create trigger outcomes_no_truncate before truncate on payments.outcomes
    for each statement execute function payments.refuse_change();

-- An outcome belongs to a payment that exists (checked once per statement, not per row: an outcome is
-- written by settlement for the payments it has just read, thousands at a time).
create function payments.check_outcomes() returns trigger language plpgsql as $$
declare
    v_missing bigint;
begin
    select n.payment_id into v_missing from new_outcomes n
     where not exists (select 1 from payments.payments p where p.id = n.payment_id) limit 1;
    if found then
        raise exception 'outcome for payment %, which does not exist', v_missing using errcode = 'CP003';
    end if;
    return null;
end $$;
create trigger outcomes_of_payments after insert on payments.outcomes
    referencing new table as new_outcomes for each statement execute function payments.check_outcomes();

insert into payments.outcomes (payment_id, status, reason, bank_item_id, ledger_transfer_id, settled_at)
select id, status, reason, coalesce(bank_item_id, ''), ledger_transfer_id, coalesce(settled_at, clock_timestamp())
  from payments.payments where status <> 'snapshotted';

{guard_entitlement}
drop trigger payments_guard on payments.payments;
drop function payments.guard_payment();
alter table payments.payments drop column status, drop column reason, drop column bank_item_id,
    drop column ledger_transfer_id, drop column settled_at;
drop trigger payments_no_delete on payments.payments;
create trigger payments_snapshot_immutable before update or delete on payments.payments
    for each row execute function payments.refuse_change();
create trigger payments_no_truncate before truncate on payments.payments
    for each statement execute function payments.refuse_change();

create view payments.payment_states as
select p.id, p.run_id, p.batch_no, p.household_id, p.dni, p.cci, p.ubigeo, p.amount, p.breakdown,
       coalesce(o.status, 'snapshotted') as status, o.reason, o.bank_item_id, o.ledger_transfer_id, o.settled_at
  from payments.payments p left join payments.outcomes o on o.payment_id = p.id;
"""

DOWNGRADE = r"""
drop view payments.payment_states;
drop trigger payments_snapshot_immutable on payments.payments;
drop trigger payments_no_truncate on payments.payments;
create trigger payments_no_delete before delete on payments.payments
    for each row execute function ledger.refuse_change();
alter table payments.payments add column status text not null default 'snapshotted', add column reason text,
    add column bank_item_id text, add column ledger_transfer_id bigint, add column settled_at timestamptz,
    add constraint payments_status check (status in ('snapshotted', 'credited', 'rejected'));
update payments.payments p
   set status = o.status, reason = o.reason, bank_item_id = o.bank_item_id,
       ledger_transfer_id = o.ledger_transfer_id, settled_at = o.settled_at
  from payments.outcomes o where o.payment_id = p.id;

{guard_payment}

{guard_entitlement}

drop table payments.outcomes;
drop function payments.check_outcomes();
drop function payments.refuse_change();
"""


_OLD_REJECTED = "select 1 from payments.payments p where p.id = old.payment_id and p.status = 'rejected'"
_NEW_REJECTED = "select 1 from payments.outcomes o where o.payment_id = old.payment_id and o.status = 'rejected'"


def _from_0004(start: str, end: str) -> str:
    """A piece of migration 0004's script, from ``start`` to the end of ``end`` (what a downgrade restores)."""
    schema: str = importlib.import_module("migrations.versions.0004_payments").SCHEMA
    first = schema.index(start)
    return schema[first : schema.index(end, first) + len(end)]


def _guard_entitlement(rejected: str) -> str:
    """0004's entitlement guard (as ``create or replace``), reading a payment's rejection with ``rejected``."""
    body = _from_0004("create function payments.guard_entitlement()", "end $$;")
    if _OLD_REJECTED not in body:  # pragma: no cover - 0004 is frozen; this says so if it were edited
        raise RuntimeError("migration 0004's entitlement guard no longer reads the payment's status")
    return "create or replace" + body[len("create") :].replace(_OLD_REJECTED, rejected)


def upgrade() -> None:
    # A carried entitlement is released only by a rejected payment: read from the outcome now.
    execute_script(UPGRADE.replace("{guard_entitlement}", _guard_entitlement(_NEW_REJECTED)))


def downgrade() -> None:
    guard_payment = _from_0004(
        "create function payments.guard_payment()", "    execute function payments.guard_payment();"
    )
    execute_script(
        DOWNGRADE.replace("{guard_payment}", guard_payment).replace(
            "{guard_entitlement}", _guard_entitlement(_OLD_REJECTED)
        )
    )
