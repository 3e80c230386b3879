"""Maker-checker compares people, not spellings: ``Maria`` may not approve what ``maria`` created.

Revision ID: 0009_maker_checker_names
Revises: 0008_transfer_groups
Create Date: 2026-11-28

``payments.runs`` refused an approver equal to the maker byte for byte, so the same person typing their name
with another case or a trailing space passed the check. The check now compares the names without case and
surrounding spaces, as ``services.payments.service.same_person`` does before it. Runs approved before this
migration are not re-checked (``not valid``): the constraint holds for every approval from now on.
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
alter table payments.runs drop constraint runs_maker_checker;
alter table payments.runs add constraint runs_maker_checker
    check (approved_by is null or lower(btrim(approved_by)) <> lower(btrim(created_by))) not valid;
"""
    )


def downgrade() -> None:
    execute_script(
        """
alter table payments.runs drop constraint runs_maker_checker;
alter table payments.runs add constraint runs_maker_checker
    check (approved_by is null or approved_by <> created_by) not valid;
"""
    )
