"""API tokens: stored hashed, with a role, revocable.

Revision ID: 0002_auth
Revises: 0001_ledger
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from migrations.sqlutil import execute_script

revision: str = "0002_auth"
down_revision: str | None = "0001_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = r"""
create schema auth;

create table auth.tokens (
    id bigint generated always as identity primary key,
    name text not null,
    role text not null,
    token_hash bytea not null,
    prefix text not null,
    created_at timestamptz not null default clock_timestamp(),
    created_by text not null default '',
    revoked_at timestamptz,
    constraint tokens_role check (role in ('admin', 'operator', 'approver', 'auditor')),
    constraint tokens_name_format check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$'),
    constraint tokens_hash_key unique (token_hash)
);
create index tokens_name on auth.tokens (name);
"""


def upgrade() -> None:
    execute_script(SCHEMA)


def downgrade() -> None:
    execute_script("drop schema auth cascade")
