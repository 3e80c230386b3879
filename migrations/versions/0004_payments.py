"""Payment runs: runs, entitlements, payments (snapshots), bank batches, events and incidents.

Revision ID: 0004_payments
Revises: 0003_programs_registry
Create Date: 2026-11-28

Exactly once, as constraints:

* ``entitlements`` has one row per (program, household, period): a period's benefit exists once.
* An entitlement points at the one payment that carries it (``payment_id``). A trigger refuses to move it
  to another payment unless the first was rejected: a household is never credited twice for a period.
* A run is unique per (program, period); a batch per (run, batch number); payments carry our stable bank
  reference ``R<run>-P<payment>``; batches ``R<run>-B<number>``, with idempotency keys derived from them.
"""

from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0004_payments"
down_revision: str | None = "0003_programs_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = r"""
create schema payments;

create table payments.runs (
    id bigint generated always as identity primary key,
    program text not null,
    period text not null,
    status text not null default 'created',
    currency char(3) not null,
    rule_version integer not null,
    batch_size integer not null,
    payments_count integer not null default 0,
    payments_total bigint not null default 0,
    accrued_count integer not null default 0,
    accrued_total bigint not null default 0,
    exclusions jsonb not null default '{}'::jsonb,
    batches_count integer not null default 0,
    created_by text not null,
    created_at timestamptz not null default clock_timestamp(),
    approved_by text,
    approved_at timestamptz,
    executed_by text,
    execution_started_at timestamptz,
    settled_at timestamptz,
    closed_by text,
    closed_at timestamptz,
    constraint runs_status check (status in ('created', 'approved', 'executing', 'settled', 'closed')),
    constraint runs_program_period_key unique (program, period),
    constraint runs_maker_checker check (approved_by is null or approved_by <> created_by)
);

create table payments.run_events (
    id bigint generated always as identity primary key,
    run_id bigint not null references payments.runs (id),
    at timestamptz not null default clock_timestamp(),
    actor text not null,
    event text not null,
    detail jsonb not null default '{}'::jsonb
);
create index run_events_run on payments.run_events (run_id, id);

-- One payment per household per run: the snapshot of what will be sent (account, amount, breakdown).
create table payments.payments (
    id bigint generated always as identity primary key,
    run_id bigint not null,
    batch_no integer not null,
    household_id text not null,
    dni text not null,
    cci text not null,
    ubigeo text not null,
    amount bigint not null,
    breakdown jsonb not null,
    status text not null default 'snapshotted',
    reason text,
    bank_item_id text,
    ledger_transfer_id bigint,
    settled_at timestamptz,
    constraint payments_amount_positive check (amount > 0),
    constraint payments_status check (status in ('snapshotted', 'credited', 'rejected')),
    constraint payments_run_household unique (run_id, household_id)
);
create index payments_run_batch on payments.payments (run_id, batch_no);

-- The benefit of a household for a period, computed once. Accrues (payment_id null) until a payment
-- carries it; a rejected payment releases it to accrue again.
create table payments.entitlements (
    program text not null,
    household_id text not null,
    period text not null,
    amount bigint not null,
    breakdown jsonb not null,
    rule_version integer not null,
    run_id bigint not null,
    payment_id bigint,
    constraint entitlements_pkey primary key (program, household_id, period),
    constraint entitlements_amount_positive check (amount > 0)
);
create index entitlements_accrued on payments.entitlements (program, household_id) where payment_id is null;
create index entitlements_payment on payments.entitlements (payment_id) where payment_id is not null;

create function payments.guard_entitlement() returns trigger language plpgsql as $$
begin
    if old.payment_id is not null and new.payment_id is distinct from old.payment_id
       and not exists (select 1 from payments.payments p where p.id = old.payment_id and p.status = 'rejected') then
        raise exception 'entitlement % % % is carried by payment %, which was not rejected',
            old.program, old.household_id, old.period, old.payment_id using errcode = 'CP001';
    end if;
    if new.amount <> old.amount or new.program <> old.program or new.household_id <> old.household_id
       or new.period <> old.period then
        raise exception 'entitlement % % % cannot change', old.program, old.household_id, old.period
            using errcode = 'CP001';
    end if;
    return new;
end $$;
create trigger entitlements_guard before update on payments.entitlements
    for each row execute function payments.guard_entitlement();
create trigger entitlements_no_delete before delete on payments.entitlements
    for each row execute function ledger.refuse_change();

-- A payment's outcome is final: credited and rejected never change.
create function payments.guard_payment() returns trigger language plpgsql as $$
begin
    if old.status <> 'snapshotted' and new.status is distinct from old.status then
        raise exception 'payment % is already % (the bank''s outcome is final)', old.id, old.status
            using errcode = 'CP002';
    end if;
    if new.amount <> old.amount or new.cci <> old.cci or new.dni <> old.dni or new.household_id <> old.household_id
       or new.run_id <> old.run_id or new.batch_no <> old.batch_no then
        raise exception 'payment % snapshot cannot change', old.id using errcode = 'CP002';
    end if;
    return new;
end $$;
create trigger payments_guard before update on payments.payments
    for each row when (old.status <> 'snapshotted' or new.amount <> old.amount or new.cci <> old.cci
                       or new.dni <> old.dni or new.household_id <> old.household_id
                       or new.batch_no <> old.batch_no)
    execute function payments.guard_payment();
create trigger payments_no_delete before delete on payments.payments
    for each row execute function ledger.refuse_change();

-- Bank batches: the intent is written before anything is sent.
create table payments.batches (
    run_id bigint not null references payments.runs (id),
    batch_no integer not null,
    reference text not null unique,
    idempotency_key text not null unique,
    item_count integer not null,
    total bigint not null,
    status text not null default 'planned',
    hold_transfer_id bigint,
    attempts integer not null default 0,
    bank_batch_id text,
    credited_count integer,
    credited_total bigint,
    rejected_count integer,
    rejected_total bigint,
    submitted_at timestamptz,
    acknowledged_at timestamptz,
    closed_at timestamptz,
    constraint batches_pkey primary key (run_id, batch_no),
    constraint batches_status check (status in ('planned', 'held', 'submitting', 'acknowledged', 'closed'))
);

create table payments.incidents (
    id bigint generated always as identity primary key,
    run_id bigint not null,
    batch_no integer,
    payment_id bigint,
    kind text not null,
    detail jsonb not null default '{}'::jsonb,
    at timestamptz not null default clock_timestamp()
);
create index incidents_run on payments.incidents (run_id);
"""


def upgrade() -> None:
    execute_script(SCHEMA)


def downgrade() -> None:
    execute_script("drop schema payments cascade")
