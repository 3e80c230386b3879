"""Who saw a household's DNI and CCI whole, when and why: ``registry.reveals``.

Revision ID: 0010_personal_data_reveals
Revises: 0009_maker_checker_names
Create Date: 2026-11-28

A household is shown with its titular's DNI and its CCI masked; an operator or admin may ask for them whole
(``GET /v1/households/{id}?reveal=true``, ``cct-ledger households show --reveal``). Each such disclosure is a
row here, written before the data is returned (no row, no data), and the table is append-only like the
registry's history: auditors read it (``GET /v1/audit/reveals``, ``cct-ledger households reveals``)
to answer "who looked at this household's personal data".
"""

from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0010_personal_data_reveals"
down_revision: str | None = "0009_maker_checker_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    execute_script(
        """
create table registry.reveals (
    id bigint generated always as identity primary key,
    household_id registry.household_code not null references registry.households (household_id),
    actor text not null,
    channel text not null,
    reason text,
    revealed_at timestamptz not null default clock_timestamp(),
    constraint reveals_actor_named check (btrim(actor) <> ''),
    constraint reveals_channel check (channel in ('api', 'cli')),
    constraint reveals_reason check (reason is null or char_length(btrim(reason)) between 1 and 500)
);
comment on table registry.reveals is 'each disclosure of a household''s DNI and CCI unmasked; append-only';
create index reveals_household on registry.reveals (household_id, id);
create index reveals_actor on registry.reveals (actor, id);

create trigger reveals_append_only before update or delete on registry.reveals
    for each row execute function registry.refuse_change();
create trigger reveals_no_truncate before truncate on registry.reveals
    for each statement execute function registry.refuse_change();
"""
    )


def downgrade() -> None:
    # The record of who saw personal data is not thrown away by a schema change: with rows in it, the
    # downgrade stops and says so (export them, then empty the table as its owner, deliberately).
    execute_script(
        """
do $$
declare
    n bigint := (select count(*) from registry.reveals);
begin
    if n > 0 then
        raise exception 'registry.reveals holds % record(s) of who saw personal data; this downgrade would erase '
            'them: export them first, then drop the table yourself if that is what you want', n;
    end if;
end $$;
drop table registry.reveals;
"""
    )
