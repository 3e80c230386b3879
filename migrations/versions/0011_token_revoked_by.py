"""Who revoked an API token: ``auth.tokens.revoked_by``.

Revision ID: 0011_token_revoked_by
Revises: 0010_personal_data_reveals
Create Date: 2026-11-28

A token records who created it (``created_by``); its revocation now records who revoked it as well
(``cct-ledger token revoke NAME --user ana``). Tokens revoked before this revision keep ``revoked_by`` null:
nobody was recorded then.
"""

from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0011_token_revoked_by"
down_revision: str | None = "0010_personal_data_reveals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    execute_script(
        """
alter table auth.tokens add column revoked_by text,
    add constraint tokens_revoked_by check (revoked_by is null or revoked_at is not null);
comment on column auth.tokens.revoked_by is 'who revoked the token (null: live, or revoked before it was recorded)';
"""
    )


def downgrade() -> None:
    # Who revoked a token is part of the audit trail: the downgrade stops rather than erase it.
    execute_script(
        """
do $$
declare
    n bigint := (select count(*) from auth.tokens where revoked_by is not null);
begin
    if n > 0 then
        raise exception 'auth.tokens records who revoked % token(s); this downgrade would erase it: export them '
            'first, then, if that is what you want, set revoked_by to null yourself and downgrade again', n;
    end if;
end $$;
alter table auth.tokens drop column revoked_by;
"""
    )
