"""Maker-checker compares people, not spellings: ``Maria`` may not approve what ``maria`` created.

Revision ID: 0009_maker_checker_names
Revises: 0008_transfer_groups
Create Date: 2026-11-28

``payments.runs`` refused an approver equal to the maker byte for byte (the check ``runs_maker_checker``),
so the same person typing their name with another case or surrounding spaces passed it. A trigger now
refuses, when a run is approved, an approver whose name equals the maker's without case and surrounding
spaces, as ``services.payments.service.same_person`` does before it. It is a trigger on the approval, not a
check on the row: a check would be evaluated on every later update of a run approved before this migration
by such a pair (its execution, settlement and closing), and refuse them. The byte-for-byte check stays.
"""

from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0009_maker_checker_names"
down_revision: str | None = "0008_transfer_groups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    execute_script(
        """
create function payments.approver_is_not_maker() returns trigger language plpgsql as $$
begin
    if new.approved_by is not null
       and (tg_op = 'INSERT' or new.approved_by is distinct from old.approved_by)
       and lower(btrim(new.approved_by)) = lower(btrim(new.created_by)) then
        raise exception 'runs_maker_checker: run % was created by %; % is the same person and may not approve it',
            new.id, new.created_by, new.approved_by
            using errcode = 'check_violation';
    end if;
    return new;
end $$;

create trigger runs_maker_checker_person before insert or update of approved_by on payments.runs
    for each row execute function payments.approver_is_not_maker();
"""
    )


def downgrade() -> None:
    execute_script(
        """
drop trigger runs_maker_checker_person on payments.runs;
drop function payments.approver_is_not_maker();
"""
    )
