"""Create, verify, list and revoke API tokens.

A token is 32 random bytes (URL-safe base64, prefixed ``cct_``); only its SHA-256 is stored, which is
enough for a high-entropy secret (no password stretching needed). The token's *name* is the acting user
recorded on every write made with it.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.db import Connection
from services.auth.errors import Forbidden, InvalidToken, NotAuthenticated, TokenNotFound

TOKEN_PREFIX = "cct_"  # noqa: S105 - a prefix that makes leaked tokens recognisable, not a secret
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class Role(enum.StrEnum):
    """What a token may do.

    - admin: everything, including tokens and verification.
    - operator: accounts, transfers, payment runs (create, execute).
    - approver: approves payment runs (maker-checker) and reads.
    - auditor: reads everything and verifies the ledger; writes nothing.
    """

    ADMIN = "admin"
    OPERATOR = "operator"
    APPROVER = "approver"
    AUDITOR = "auditor"


ALL_ROLES = frozenset(Role)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name (recorded as the actor) and role."""

    name: str
    role: Role
    token_id: int

    def require(self, *roles: Role) -> None:
        """Raise :class:`Forbidden` unless the principal is admin or has one of ``roles``."""
        if self.role is Role.ADMIN or self.role in roles:
            return
        allowed = ", ".join(sorted(r.value for r in {Role.ADMIN, *roles}))
        raise Forbidden(f"role {self.role.value} may not do this; it needs one of: {allowed}", role=self.role.value)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError as e:
        raise InvalidToken(
            f"unknown role {value!r}; use one of: {', '.join(r.value for r in Role)}", field="role"
        ) from e


async def create_token(conn: Connection, name: str, role: str, created_by: str = "") -> tuple[str, int]:
    """Create a token; returns the secret (shown once) and its id."""
    if not _NAME.match(name):
        raise InvalidToken(
            f"token name {name!r} must be 1-64 letters, digits or _ . @ - (it is recorded as the acting user)",
            field="name",
        )
    parsed = parse_role(role)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id: int = await conn.fetchval(
        """insert into auth.tokens (name, role, token_hash, prefix, created_by)
           values ($1, $2, $3, $4, $5) returning id""",
        name,
        parsed.value,
        hash_token(secret),
        secret[:10],
        created_by,
    )
    return secret, token_id


async def live_tokens_named(conn: Connection, name: str) -> list[dict[str, Any]]:
    """The live (not revoked) tokens with this name: its id and role each."""
    rows = await conn.fetch("select id, role from auth.tokens where name = $1 and revoked_at is null order by id", name)
    return [dict(r) for r in rows]


async def revoke_token(conn: Connection, name_or_id: str, revoked_by: str | None = None) -> int:
    """Revoke every live token with this name (or the token with this id), recording who; returns how many."""
    by_id = name_or_id.isascii() and name_or_id.isdigit() and int(name_or_id) < 2**63
    rows = await conn.fetch(
        f"""update auth.tokens set revoked_at = clock_timestamp(), revoked_by = $2
             where {"id = $1::bigint" if by_id else "name = $1"} and revoked_at is null returning id""",
        int(name_or_id) if by_id else name_or_id,
        revoked_by,
    )
    if not rows:
        raise TokenNotFound(f"no live token named or numbered {name_or_id!r}", token=name_or_id)
    _cache.clear()
    return len(rows)


async def list_tokens(conn: Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "select id, name, role, prefix, created_at, created_by, revoked_at, revoked_by from auth.tokens order by id"
    )
    return [dict(r) for r in rows]


class _TTLCache:
    """Verified tokens for a few seconds, so a request costs no extra query; revocation takes effect within
    the TTL in other processes (immediately in the process that revokes)."""

    def __init__(self) -> None:
        self._items: dict[bytes, tuple[float, Principal]] = {}

    def get(self, key: bytes, ttl: float) -> Principal | None:
        hit = self._items.get(key)
        if hit is None or time.monotonic() - hit[0] > ttl:
            return None
        return hit[1]

    def put(self, key: bytes, principal: Principal) -> None:
        if len(self._items) > 10_000:
            self._items.clear()
        self._items[key] = (time.monotonic(), principal)

    def clear(self) -> None:
        self._items.clear()


_cache = _TTLCache()


def cached_principal(token: str | None, cache_ttl: float) -> Principal | None:
    """The principal of a token verified less than ``cache_ttl`` seconds ago, if any."""
    if not token:
        raise NotAuthenticated("missing bearer token: send `Authorization: Bearer <token>`")
    return _cache.get(hash_token(token), cache_ttl)


async def authenticate(conn: Connection, token: str | None, cache_ttl: float = 5.0) -> Principal:
    """The principal of a bearer token.

    Raises:
        NotAuthenticated: no token, or unknown or revoked.
    """
    cached = cached_principal(token, cache_ttl)
    if cached is not None:
        return cached
    assert token is not None
    digest = hash_token(token)
    row = await conn.fetchrow("select id, name, role, revoked_at from auth.tokens where token_hash = $1", digest)
    if row is None or row["revoked_at"] is not None:
        raise NotAuthenticated("the bearer token is unknown or revoked")
    principal = Principal(name=row["name"], role=Role(row["role"]), token_id=row["id"])
    _cache.put(digest, principal)
    return principal


def describe(row: dict[str, Any]) -> dict[str, Any]:
    """A token row for output (never the secret)."""
    out = dict(row)
    for k in ("created_at", "revoked_at"):
        if isinstance(out.get(k), datetime):
            out[k] = out[k].isoformat()
    return out
