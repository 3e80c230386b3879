"""The online ledger: accounts, transfers, two-phase holds, reversals, balances and statements.

Each write is one call of a PL/pgSQL function (migrations/versions/0001_ledger.py) so a transfer costs one
round trip: the function checks idempotency, locks the accounts in id order, checks the accounting period
and the overdraft rule, writes the transfer and its postings, and moves each balance once. The Python side
validates the request first (integers, balance, currency) and maps the database's named conditions to
:mod:`ledger.errors`.

A :class:`Ledger` runs on the connection it is given and never commits: inside a unit of work its writes
commit with the rest; on a connection in autocommit mode each call is its own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import orjson

from ledger import cursors
from ledger.cursors import decode_int, decode_text, encode_cursor
from ledger.db import Connection
from ledger.errors import (
    AccountClosed,
    AccountExists,
    AccountNotFound,
    AppError,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidTransfer,
    LedgerError,
    PeriodClosed,
    TransferExpired,
    TransferNotFound,
    TransferNotPending,
    TransferNotReversible,
)
from ledger.models import (
    Account,
    AccountSpec,
    Balance,
    NormalBalance,
    Phase,
    StatementLine,
    Transfer,
    TransferRequest,
    request_hash,
)
from ledger.money import require_minor_units

_CURSOR = "v1"  # accounts after an id
_STATEMENT_CURSOR = "s1"  # an account's statement before a version: "s1.<account id>"
_PERIODS_CURSOR = "c1"  # closed periods after a (start, name)

_SQLSTATE_ERRORS: dict[str, type[LedgerError]] = {
    "CL001": AccountNotFound,
    "CL002": AccountClosed,
    "CL003": CurrencyMismatch,
    "CL004": InsufficientFunds,
    "CL005": PeriodClosed,
    "CL006": IdempotencyConflict,
    "CL007": TransferNotFound,
    "CL008": TransferNotPending,
    "CL009": TransferExpired,
    "CL010": TransferNotReversible,
    "CL011": InvalidTransfer,
}
MAX_BATCH = 10_000


def translate(error: asyncpg.PostgresError) -> AppError | None:
    """Map a database error raised by the ledger's functions or constraints to a named condition."""
    state = getattr(error, "sqlstate", None)
    message = getattr(error, "message", str(error))
    detail_raw = getattr(error, "detail", None)
    extra: dict[str, Any] = {}
    if detail_raw:
        try:
            parsed = orjson.loads(detail_raw)
            if isinstance(parsed, dict):
                extra = parsed
        except orjson.JSONDecodeError:
            extra = {}
    if state in _SQLSTATE_ERRORS:
        return _SQLSTATE_ERRORS[state](message, **extra)
    if state == "CL101":
        return InvalidTransfer(message)
    if state == "23514" and getattr(error, "constraint_name", "") == "accounts_no_overdraft":
        return InsufficientFunds("insufficient funds: an account with no_overdraft would go below zero")
    return None


def _raise_translated(error: asyncpg.PostgresError) -> None:
    mapped = translate(error)
    if mapped is not None:
        raise mapped from error
    raise error


def _account(row: asyncpg.Record) -> Account:
    normal = NormalBalance.from_sign(row["normal_balance"])
    return Account(
        id=row["id"],
        code=row["code"],
        currency=row["currency"],
        normal_balance=normal,
        no_overdraft=row["no_overdraft"],
        closed=row["closed"],
        hot=row["hot"],
        metadata=row["metadata"],
        balance=Balance.of(
            normal,
            row["currency"],
            row["posted"],
            row["pending_debits"],
            row["pending_credits"],
            row["version"],
        ),
        created_at=row["created_at"],
    )


def _resolution_hash(
    transfer_id: int, post: bool, effective_at: datetime | None, reason: str | None, amount: int | None
) -> bytes:
    """The request hash of a post or void, the same whichever call makes it (a replay is recognised)."""
    return request_hash(
        "post" if post else "void",
        {"transfer": transfer_id, "effective_at": str(effective_at), "reason": reason, "amount": amount},
    )


class Resolution(NamedTuple):
    """One pending transfer to resolve with :meth:`Ledger.resolve_many`.

    Attributes:
        transfer_id: the pending transfer.
        idempotency_key: the client's key (as for :meth:`Ledger.post` and :meth:`Ledger.void`).
        post: post it (True) or void it (False).
        amount: for a post, only this much (> 0) and release the rest; None posts everything.
        reason: for a void, why.
    """

    transfer_id: int
    idempotency_key: str | None
    post: bool
    amount: int | None = None
    reason: str | None = None


class Ledger:
    """The ledger's operations on one connection.

    Args:
        conn: an asyncpg connection, in a transaction (unit of work) or in autocommit mode.
        actor: who acts (recorded on every transfer).
    """

    def __init__(self, conn: Connection, actor: str = "") -> None:
        self.conn = conn
        self.actor = actor

    # ----------------------------------------------------------------------------------------- accounts
    async def create_account(self, spec: AccountSpec, idempotency_key: str | None = None) -> Account:
        """Open an account.

        Raises:
            AccountExists: the code is taken (unless this is a replay of the same request and key).
        """
        if idempotency_key is not None:
            payload = {
                "code": spec.code,
                "currency": spec.currency,
                "normal_balance": spec.normal_balance.value,
                "no_overdraft": spec.no_overdraft,
                "hot": spec.hot,
                "metadata": spec.metadata,
            }
            digest = request_hash("create_account", payload)
            stored = await self._idempotent_lookup(idempotency_key, digest)
            if stored is not None:
                return await self.get_account(stored["code"])
        try:
            row = await self.conn.fetchrow(
                """insert into ledger.accounts (code, currency, normal_balance, no_overdraft, hot, metadata)
                   values ($1, $2, $3, $4, $5, $6) returning *""",
                spec.code,
                spec.currency,
                spec.normal_balance.sign,
                spec.no_overdraft,
                spec.hot,
                spec.metadata,
            )
        except asyncpg.UniqueViolationError as e:
            raise AccountExists(f"account {spec.code} already exists", account=spec.code) from e
        assert row is not None
        if idempotency_key is not None:
            await self.conn.execute(
                "insert into ledger.idempotency_keys (key, request_hash, response) values ($1, $2, $3)",
                idempotency_key,
                digest,
                {"code": spec.code},
            )
        return _account(row)

    async def _idempotent_lookup(self, key: str, digest: bytes) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] | None = await self.conn.fetchval(
                "select ledger.idempotency_lookup($1, $2)", key, digest
            )
        except asyncpg.PostgresError as e:
            _raise_translated(e)
            raise
        return result

    async def get_account(self, code: str) -> Account:
        """The account with its current balances.

        Raises:
            AccountNotFound: no account has this code.
        """
        row = await self.conn.fetchrow("select * from ledger.accounts where code = $1", code)
        if row is None:
            raise AccountNotFound(f"account {code} not found", account=code)
        return _account(row)

    async def get_accounts(self, codes: Sequence[str]) -> dict[str, Account]:
        """Several accounts by code (missing codes are absent from the result)."""
        rows = await self.conn.fetch("select * from ledger.accounts where code = any($1::text[])", list(codes))
        return {r["code"]: _account(r) for r in rows}

    async def list_accounts(
        self, *, prefix: str = "", limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Account], str | None]:
        """Accounts whose code starts with ``prefix``, in id order, paginated."""
        after = decode_int(cursor, _CURSOR) if cursor else 0
        rows = await self.conn.fetch(
            """select * from ledger.accounts where id > $1 and code like $2 || '%'
               order by id limit $3""",
            after,
            prefix.replace("%", r"\%").replace("_", r"\_"),
            limit + 1,
        )
        page = [_account(r) for r in rows[:limit]]
        return page, (encode_cursor(_CURSOR, page[-1].id) if len(rows) > limit else None)

    async def close_account(self, code: str) -> Account:
        """Close an account; it then refuses new postings. Its balances must be zero and nothing pending.

        Raises:
            AccountNotFound, AccountClosed (already closed), InsufficientFunds-free conflicts as LedgerError.
        """
        account = await self.get_account(code)
        row = await self.conn.fetchrow(
            """update ledger.accounts set closed = true
               where code = $1 and not closed and posted = 0 and pending_debits = 0 and pending_credits = 0
               returning *""",
            code,
        )
        if row is None:
            if account.closed:
                raise AccountClosed(f"account {code} is already closed", account=code)
            raise AccountClosed(
                f"account {code} cannot be closed: its balance is {account.balance.posted} with "
                f"{account.balance.pending_debits + account.balance.pending_credits} pending; move the money "
                "out first",
                account=code,
            )
        return _account(row)

    async def balance(self, code: str, as_of: datetime | None = None) -> Balance:
        """The account's balances now, or as recorded at the instant ``as_of`` (one index probe)."""
        account = await self.get_account(code)
        if as_of is None:
            return account.balance
        if as_of.tzinfo is None:
            raise LedgerError("as_of must include a time zone offset", field="as_of")
        row = await self.conn.fetchrow("select * from ledger.balance_as_of($1, $2)", account.id, as_of)
        assert row is not None
        return Balance.of(
            account.normal_balance,
            account.currency,
            row["posted"],
            row["pending_debits"],
            row["pending_credits"],
            row["version"],
        )

    async def statement(
        self, code: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[StatementLine], str | None]:
        """The account's postings, newest first, with the balances after each; paginated by cursor."""
        account = await self.get_account(code)
        # The statement's cursor names its account: a cursor of another account's statement is refused.
        kind = f"{_STATEMENT_CURSOR}.{account.id}"
        before = decode_int(cursor, kind) if cursor else account.balance.version + 1
        rows = await self.conn.fetch(
            """select p.*, t.effective_at, t.description
                 from ledger.postings p join ledger.transfers t on t.id = p.transfer_id
                where p.account_id = $1 and p.version < $2
                order by p.version desc limit $3""",
            account.id,
            before,
            limit + 1,
        )
        lines = [
            StatementLine(
                version=r["version"],
                transfer_id=r["transfer_id"],
                phase=Phase(r["phase"]),
                debit=max(r["amount"], 0),
                credit=max(-r["amount"], 0),
                posted_after=r["posted_after"],
                pending_debits_after=r["pending_debits_after"],
                pending_credits_after=r["pending_credits_after"],
                recorded_at=r["recorded_at"],
                effective_at=r["effective_at"],
                description=r["description"],
            )
            for r in rows[:limit]
        ]
        return lines, (encode_cursor(kind, lines[-1].version) if len(rows) > limit else None)

    # ---------------------------------------------------------------------------------------- transfers
    async def transfer(self, request: TransferRequest, idempotency_key: str | None) -> Transfer:
        """Create a posted or pending transfer.

        A replay (same key, same request) returns the first result with ``replayed=True``.

        Raises:
            AccountNotFound, AccountClosed, CurrencyMismatch, InsufficientFunds, PeriodClosed,
            IdempotencyConflict, InvalidTransfer.
        """
        digest = request.digest()
        try:
            data = await self.conn.fetchval(
                "select ledger.create_transfer($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                idempotency_key,
                digest,
                request.pending,
                [p.account for p in request.postings],
                [p.signed for p in request.postings],
                request.currency,
                request.effective_at,
                request.expires_at,
                request.description,
                request.metadata,
                self.actor,
            )
        except asyncpg.PostgresError as e:
            _raise_translated(e)
            raise
        return Transfer.created(request, data)

    async def transfer_batch(self, items: Sequence[tuple[str, TransferRequest]]) -> list[Transfer]:
        """Create up to 10,000 transfers, each with its own idempotency key, all or nothing.

        The accounts of the whole batch are locked once, in id order, before the first transfer, so
        concurrent batches cannot deadlock. Run it inside a unit of work for all-or-nothing.
        """
        if not items:
            return []
        if len(items) > MAX_BATCH:
            raise InvalidTransfer(f"a batch may hold at most {MAX_BATCH} transfers, got {len(items)}")
        seen: set[str] = set()
        for index, (key, _) in enumerate(items):
            if key in seen:
                raise InvalidTransfer(
                    f"transfers[{index}]: idempotency key {key} appears twice in the batch",
                    key=key,
                    index=index,
                )
            seen.add(key)
        payload = [
            {
                "key": key,
                "hash": req.digest().hex(),
                "pending": req.pending,
                "codes": [p.account for p in req.postings],
                "amounts": [p.signed for p in req.postings],
                "currency": req.currency,
                "effective_at": req.effective_at.isoformat() if req.effective_at else None,
                "expires_at": req.expires_at.isoformat() if req.expires_at else None,
                "description": req.description,
                "metadata": req.metadata,
            }
            for key, req in items
        ]
        try:
            rows = await self.conn.fetchval("select ledger.create_transfer_batch($1, $2)", payload, self.actor)
        except asyncpg.PostgresError as e:
            _raise_translated(e)
            raise
        return [Transfer.created(req, r) for (_, req), r in zip(items, rows, strict=True)]

    async def post(
        self,
        transfer_id: int,
        idempotency_key: str | None,
        effective_at: datetime | None = None,
        amount: int | None = None,
    ) -> Transfer:
        """Post a pending transfer (its held amounts move to the posted balances), exactly once.

        Args:
            transfer_id: the pending transfer.
            idempotency_key: the client's key.
            effective_at: business time of the post (default now).
            amount: post only this much (> 0) of a two-posting hold and release the rest (a partial post);
                None posts everything. To post nothing, void the transfer.
        """
        if amount is not None:
            require_minor_units(amount, "amount", positive=False)
            if amount <= 0:
                raise InvalidTransfer(
                    f"amount must be greater than zero, got {amount} (to post nothing, void the transfer)",
                    field="amount",
                )
        return await self._resolve(transfer_id, idempotency_key, True, effective_at, None, amount)

    async def void(self, transfer_id: int, idempotency_key: str | None, reason: str | None = None) -> Transfer:
        """Void a pending transfer (its holds are released), exactly once."""
        return await self._resolve(transfer_id, idempotency_key, False, None, reason, None)

    async def resolve_many(self, resolutions: Sequence[Resolution]) -> list[Transfer]:
        """Post or void several pending transfers in one statement, in order: each exactly as :meth:`post` or
        :meth:`void` with the same arguments would (same idempotency keys and request hashes, so a replay by
        either way is recognised), in one round trip instead of one each.

        A caller holding a shared account (a program's fund) from here to its commit keeps it for one round
        trip, not one per transfer. If one fails, the statement fails whole.
        """
        if not resolutions:
            return []
        for r in resolutions:
            if r.amount is not None:
                require_minor_units(r.amount, "amount", positive=False)
                if not r.post or r.amount <= 0:
                    raise InvalidTransfer(
                        f"transfer {r.transfer_id}: amount {r.amount} is for a post of more than zero (to post "
                        "nothing, void the transfer)",
                        field="amount",
                    )
        digests = [_resolution_hash(r.transfer_id, r.post, None, r.reason, r.amount) for r in resolutions]
        try:
            rows = await self.conn.fetch(
                """select ledger.resolve_pending(u.k, u.h, u.t, u.p, null, $1, u.r, u.a) as data
                     from unnest($2::text[], $3::bytea[], $4::bigint[], $5::boolean[], $6::text[], $7::bigint[])
                          with ordinality as u(k, h, t, p, r, a, n)
                    order by u.n""",
                self.actor,
                [r.idempotency_key for r in resolutions],
                digests,
                [r.transfer_id for r in resolutions],
                [r.post for r in resolutions],
                [r.reason for r in resolutions],
                [r.amount for r in resolutions],
            )
        except asyncpg.PostgresError as e:
            _raise_translated(e)
            raise
        return [Transfer.from_json(r["data"]) for r in rows]

    async def _resolve(
        self,
        transfer_id: int,
        key: str | None,
        post: bool,
        effective_at: datetime | None,
        reason: str | None,
        amount: int | None,
    ) -> Transfer:
        digest = _resolution_hash(transfer_id, post, effective_at, reason, amount)
        try:
            data = await self.conn.fetchval(
                "select ledger.resolve_pending($1, $2, $3, $4, $5, $6, $7, $8)",
                key,
                digest,
                transfer_id,
                post,
                effective_at,
                self.actor,
                reason,
                amount,
            )
        except asyncpg.PostgresError as e:
            _raise_translated(e)
            raise
        return Transfer.from_json(data)

    async def reverse(
        self,
        transfer_id: int,
        idempotency_key: str | None,
        description: str = "",
        effective_at: datetime | None = None,
    ) -> Transfer:
        """Reverse a posted transfer with a new, linked transfer of opposite postings (at most once)."""
        digest = request_hash(
            "reverse",
            {"transfer": transfer_id, "description": description, "effective_at": str(effective_at)},
        )
        try:
            data = await self.conn.fetchval(
                "select ledger.reverse_transfer($1, $2, $3, $4, $5, $6)",
                idempotency_key,
                digest,
                transfer_id,
                effective_at,
                description,
                self.actor,
            )
        except asyncpg.PostgresError as e:
            _raise_translated(e)
            raise
        return Transfer.from_json(data)

    async def get_transfer(self, transfer_id: int) -> Transfer:
        """A transfer with its current status.

        Raises:
            TransferNotFound: no such transfer.
        """
        data = await self.conn.fetchval("select ledger.transfer_json($1)", transfer_id)
        if data is None:
            raise TransferNotFound(f"transfer {transfer_id} not found", transfer=transfer_id)
        return Transfer.from_json(data)

    # ----------------------------------------------------------------------------------------- periods
    async def close_period(self, name: str, starts_at: datetime, ends_at: datetime) -> dict[str, Any]:
        """Close an accounting period: postings whose effective time falls in it are refused from now on.

        Returns the period as recorded (as :meth:`closed_periods` lists it).
        """
        if starts_at.tzinfo is None or ends_at.tzinfo is None:
            raise LedgerError("period bounds must include a time zone offset")
        if ends_at <= starts_at:
            raise LedgerError(f"period {name} ends before it starts")
        try:
            row = await self.conn.fetchrow(
                """insert into ledger.closed_periods (name, starts_at, ends_at, closed_by)
                   values ($1, $2, $3, $4) returning *""",
                name,
                starts_at,
                ends_at,
                self.actor,
            )
        except asyncpg.UniqueViolationError as e:
            raise PeriodClosed(f"period {name} is already closed", period=name) from e
        assert row is not None
        return dict(row)

    async def closed_periods(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Closed periods in the order of their start (then name); paginated by cursor."""
        after: tuple[datetime, str] | None = None
        if cursor:
            start, _, name = decode_text(cursor, _PERIODS_CURSOR).partition("|")
            try:
                after = (datetime.fromisoformat(start), name)
            except ValueError as e:
                raise cursors.invalid(cursor) from e
        rows = await self.conn.fetch(
            """select * from ledger.closed_periods
                where $1::timestamptz is null or (starts_at, name) > ($1::timestamptz, $2::text)
                order by starts_at, name limit $3""",
            after[0] if after else None,
            after[1] if after else None,
            limit + 1,
        )
        page = [dict(r) for r in rows[:limit]]
        more = len(rows) > limit
        return page, (
            encode_cursor(_PERIODS_CURSOR, f"{page[-1]['starts_at'].isoformat()}|{page[-1]['name']}") if more else None
        )
