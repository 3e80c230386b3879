"""Programs with effective-dated rule versions, and the household registry with compliance.

Revision ID: 0003_programs_registry
Revises: 0002_auth
Create Date: 2026-11-28

Design:

* ``programs.programs`` names each program, its currency, schedule and ledger accounts;
  ``programs.rule_versions`` holds its entitlement rules as data, one row per version with the date it takes
  effect. Rule versions are append-only (triggers refuse UPDATE, DELETE and TRUNCATE): a change of amounts
  is a new version, so a period already computed keeps its rules.
* ``programs.appropriations`` records each budget appropriation once per (program, reference), next to the
  ledger transfer that moved the money; append-only too.
* ``registry.households`` is the current state of each household, with a version; every insert or change
  appends the new data to ``registry.household_history``. ``registry.imports`` counts what each file did.
* ``registry.compliance`` is the latest verification result per (program, period, household);
  ``registry.compliance_history`` keeps every value ever recorded.
* Formats are domains (checked when a value is written, not on every UPDATE of the row). The registry's
  tables take a million rows per import: they keep only their primary keys and cheap checks, and the
  import checks references set-based (see the comment in the script).
"""

from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0003_programs_registry"
down_revision: str | None = "0002_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = r"""
create schema programs;

-- Bounded repetitions ({0,39}) make PostgreSQL's regular expressions several times slower: lengths are
-- checked apart.
create domain programs.program_code as text
    check (value ~ '^[A-Z][A-Z0-9_]+$' and char_length(value) <= 40);
create domain programs.period_code as text
    check (value ~ '^[0-9][0-9][0-9][0-9]-(B[1-6]|0[1-9]|1[0-2])$');

create table programs.programs (
    code programs.program_code primary key,
    name text not null,
    currency char(3) not null,
    schedule text not null,
    fund_account text not null,
    in_transit_account text not null,
    created_at timestamptz not null default clock_timestamp(),
    updated_at timestamptz not null default clock_timestamp(),
    constraint programs_schedule check (schedule in ('bimonthly', 'monthly')),
    constraint programs_currency check (currency ~ '^[A-Z]{3}$'),
    constraint programs_name check (length(name) between 1 and 200)
);

create table programs.rule_versions (
    program programs.program_code not null references programs.programs (code),
    version integer not null,
    effective_from date not null,
    rules jsonb not null,
    loaded_by text not null default '',
    loaded_at timestamptz not null default clock_timestamp(),
    constraint rule_versions_pkey primary key (program, version),
    constraint rule_versions_effective_key unique (program, effective_from),
    constraint rule_versions_version_positive check (version > 0)
);
comment on table programs.rule_versions is
    'entitlement rules as data; the version whose effective_from is the latest on or before a period''s '
    'start date applies to that period. Append-only.';

create table programs.appropriations (
    program programs.program_code not null references programs.programs (code),
    reference text not null,
    amount bigint not null,
    currency char(3) not null,
    transfer_id bigint not null,
    idempotency_key text,
    recorded_by text not null default '',
    recorded_at timestamptz not null default clock_timestamp(),
    constraint appropriations_pkey primary key (program, reference),
    constraint appropriations_key unique (idempotency_key),
    constraint appropriations_amount_positive check (amount > 0)
);

create function programs.refuse_change() returns trigger language plpgsql as $$
begin
    raise exception '%.%: % is refused, this table is append-only', tg_table_schema, tg_table_name, tg_op
        using errcode = 'CL200', hint = 'record a change as a new row (a new rule version, a new appropriation)';
end $$;

create trigger rule_versions_append_only before update or delete on programs.rule_versions
    for each row execute function programs.refuse_change();
create trigger rule_versions_no_truncate before truncate on programs.rule_versions
    for each statement execute function programs.refuse_change();
create trigger appropriations_append_only before update or delete on programs.appropriations
    for each row execute function programs.refuse_change();
create trigger appropriations_no_truncate before truncate on programs.appropriations
    for each statement execute function programs.refuse_change();

create schema registry;

-- Imports validate every row before it reaches these tables, and write them set-based: per-row foreign-key
-- triggers and regular expressions would cost more than the rest of a million-row import together, so
-- formats are checked by length here and references (program, household) by the import's set-based checks.
create domain registry.household_code as text
    check (value ~ '^[A-Za-z0-9][A-Za-z0-9_-]*$' and char_length(value) <= 40);

create table registry.imports (
    id bigint generated always as identity primary key,
    kind text not null,
    file_name text not null default '',
    sha256 text not null,
    program text,
    period text,
    rows integer not null default 0,
    inserted integer not null default 0,
    updated integer not null default 0,
    unchanged integer not null default 0,
    rejected integer not null default 0,
    imported_by text not null default '',
    imported_at timestamptz not null default clock_timestamp(),
    constraint imports_kind check (kind in ('households', 'compliance'))
);
create index imports_sha256 on registry.imports (sha256);

create table registry.households (
    household_id registry.household_code primary key,
    titular_dni text not null,
    titular_name text not null,
    ubigeo text not null,
    cci text,
    status text not null,
    enrolled_on date not null,
    children_under_4 integer not null,
    upper_secondary_students integer not null,
    program text not null default 'JUNTOS',
    extra jsonb not null default '{}'::jsonb,
    version integer not null default 1,
    updated_at timestamptz not null default clock_timestamp(),
    import_id bigint,
    constraint households_dni check (char_length(titular_dni) = 8),
    constraint households_ubigeo check (char_length(ubigeo) = 6),
    constraint households_cci check (char_length(cci) = 20),
    constraint households_status check (status in ('active', 'inactive', 'exited')),
    constraint households_counts check (children_under_4 >= 0 and upper_secondary_students >= 0),
    constraint households_name check (titular_name <> ''),
    constraint households_version_positive check (version > 0)
);
comment on column registry.households.cci is 'null: the household has no usable bank account yet';
comment on column registry.households.program is 'a programs.programs code (checked by the import)';

create table registry.household_history (
    household_id text not null,
    version integer not null,
    titular_dni text not null,
    titular_name text not null,
    ubigeo text not null,
    cci text,
    status text not null,
    enrolled_on date not null,
    children_under_4 integer not null,
    upper_secondary_students integer not null,
    program text not null,
    extra jsonb not null,
    import_id bigint,
    changed_at timestamptz not null default clock_timestamp(),
    constraint household_history_pkey primary key (household_id, version)
);
comment on table registry.household_history is
    'every version of every household: the full data as of that version. Append-only.';

create table registry.compliance (
    program programs.program_code not null,
    period programs.period_code not null,
    household_id text not null,
    compliant boolean not null,
    reason text not null default '',
    import_id bigint,
    recorded_at timestamptz not null default clock_timestamp(),
    constraint compliance_pkey primary key (program, period, household_id)
);
comment on table registry.compliance is
    'latest verification per program, period and household; compliant = false suspends that period only. '
    'program and household_id are checked by the import';

create table registry.compliance_history (
    id bigint generated always as identity primary key,
    program text not null,
    period text not null,
    household_id text not null,
    compliant boolean not null,
    reason text not null default '',
    import_id bigint,
    recorded_at timestamptz not null default clock_timestamp()
);
create index compliance_history_household on registry.compliance_history (household_id, program, period);

create function registry.refuse_change() returns trigger language plpgsql as $$
begin
    raise exception '%.%: % is refused, history is append-only', tg_table_schema, tg_table_name, tg_op
        using errcode = 'CL200';
end $$;

create trigger household_history_append_only before update or delete on registry.household_history
    for each row execute function registry.refuse_change();
create trigger household_history_no_truncate before truncate on registry.household_history
    for each statement execute function registry.refuse_change();
create trigger compliance_history_append_only before update or delete on registry.compliance_history
    for each row execute function registry.refuse_change();
create trigger compliance_history_no_truncate before truncate on registry.compliance_history
    for each statement execute function registry.refuse_change();
"""


def upgrade() -> None:
    execute_script(SCHEMA)


def downgrade() -> None:
    execute_script("drop schema registry cascade; drop schema programs cascade")
