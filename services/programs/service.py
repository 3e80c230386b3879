"""Use cases of the programs capability: fund a program, read programs, their rules and entitlements.

Loading definitions lives in :mod:`services.programs.loading` (re-exported here).

Functions run on the connection they are given and never commit: callers pass a unit of work
(``Database.unit_of_work()``) when several writes must land together (loading a file, an appropriation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

import structlog

from ledger import cursors
from ledger.db import Connection
from ledger.engine import Ledger
from ledger.errors import IdempotencyConflict
from ledger.models import Account, PostingSpec, TransferRequest
from ledger.money import format_minor, require_minor_units
from services.programs import repository
from services.programs.errors import AppropriationConflict, InvalidAppropriation, NoRuleVersion, ProgramNotFound
from services.programs.loading import LoadReport, account_specs, ensure_accounts, load_programs
from services.programs.models import TREASURY_ACCOUNT, Program, RuleVersion
from services.programs.periods import Period, parse_period, period_containing
from services.programs.rules import entitlements_sql

__all__ = [
    "Appropriation",
    "LoadReport",
    "account_specs",
    "appropriation_key",
    "describe_program",
    "ensure_accounts",
    "entitlement_summary",
    "fund",
    "get_program",
    "list_programs",
    "load_programs",
    "resolve_period",
    "rule_version_for",
]

log = structlog.get_logger(__name__)
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./:-]{0,99}$")
APPROPRIATION_KEY_PREFIX: Final = "appropriation"


@dataclass(frozen=True, slots=True)
class Appropriation:
    """A recorded appropriation and whether this call was a replay of an earlier one."""

    program: str
    reference: str
    amount: int
    currency: str
    transfer_id: int
    replayed: bool
    fund_balance: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (amounts in minor units)."""
        return {
            "program": self.program,
            "reference": self.reference,
            "amount": self.amount,
            "currency": self.currency,
            "transfer_id": self.transfer_id,
            "replayed": self.replayed,
            "fund_balance": self.fund_balance,
        }


# ------------------------------------------------------------------------------------------------ reading
async def get_program(conn: Connection, code: str) -> Program:
    """The program with this code.

    Raises:
        ProgramNotFound: no such program (the message lists the loaded ones).
    """
    program = await repository.get_program(conn, code)
    if program is None:
        known = sorted(await repository.program_codes(conn))
        hint = (
            f"loaded programs: {', '.join(known)}" if known else "no program is loaded: run `cct-ledger programs load`"
        )
        raise ProgramNotFound(f"program {code!r} not found ({hint})", program=code)
    return program


async def rule_version_for(conn: Connection, program: Program | str, period: Period) -> RuleVersion:
    """The rule version in force at ``period``'s start date.

    Raises:
        ProgramNotFound, NoRuleVersion.
    """
    code = program if isinstance(program, str) else program.code
    version = await repository.rule_version_at(conn, code, period.starts_on)
    if version is None:
        raise NoRuleVersion(
            f"{code} has no rule version in force on {period.starts_on} (start of {period.code}); add a version "
            "with an earlier effective_from to the programs file and load it",
            program=code,
            period=period.code,
        )
    return version


async def resolve_period(conn: Connection, code: str, period: str) -> tuple[Program, Period]:
    """The program and the parsed period code of its schedule.

    Raises:
        ProgramNotFound, InvalidPeriod.
    """
    program = await get_program(conn, code)
    return program, parse_period(period, program.schedule)


async def describe_program(conn: Connection, code: str, *, today: date | None = None) -> dict[str, Any]:
    """A program with its rule versions, the version in force now, its balances and appropriations."""
    program = await get_program(conn, code)
    today = today or datetime.now(UTC).date()
    versions = await repository.rule_version_rows(conn, code)
    current = period_containing(today, program.schedule)
    in_force = await repository.rule_version_at(conn, code, current.starts_on)
    accounts = await Ledger(conn).get_accounts([program.fund_account, program.in_transit_account])
    count, total = await repository.appropriation_totals(conn, code)
    return {
        **program.to_dict(),
        "current_period": current.code,
        "version_in_force": in_force.version if in_force else None,
        "rule_versions": [
            {
                "version": v["version"],
                "effective_from": v["effective_from"].isoformat(),
                "rules": v["rules"],
                "loaded_by": v["loaded_by"],
                "loaded_at": v["loaded_at"].isoformat(),
            }
            for v in versions
        ],
        "fund_balance": _balance(accounts.get(program.fund_account)),
        "in_transit_balance": _balance(accounts.get(program.in_transit_account)),
        "appropriations": {"count": count, "total": total},
    }


def _balance(account: Account | None) -> dict[str, Any] | None:
    return None if account is None else account.balance.to_dict()


async def entitlement_summary(conn: Connection, code: str, period: str) -> dict[str, Any]:
    """Households and amounts per exclusion for a period (a preview of what a payment run would pay)."""
    program, parsed = await resolve_period(conn, code, period)
    version = await rule_version_for(conn, program, parsed)
    sql, params = entitlements_sql(program, parsed, version)
    rows = await conn.fetch(
        f"select coalesce(exclusion, 'payable') as status, count(*) as households, "
        f"coalesce(sum(amount), 0)::bigint as amount from ({sql}) e group by 1 order by 1",
        *params,
    )
    groups = {r["status"]: {"households": r["households"], "amount": r["amount"]} for r in rows}
    return {
        "program": program.code,
        "period": parsed.code,
        "starts_on": parsed.starts_on.isoformat(),
        "ends_on": parsed.ends_on.isoformat(),
        "rule_version": version.version,
        "currency": program.currency,
        "groups": groups,
        "payable_households": groups.get("payable", {}).get("households", 0),
        "payable_amount": groups.get("payable", {}).get("amount", 0),
    }


# ------------------------------------------------------------------------------------------------ funding
def appropriation_key(code: str, reference: str) -> str:
    """The ledger idempotency key of an appropriation: ``appropriation:<CODE>:<reference>``."""
    return f"{APPROPRIATION_KEY_PREFIX}:{code}:{reference}"


def _check_reference(reference: str) -> str:
    if not isinstance(reference, str) or not _REFERENCE.match(reference):
        raise InvalidAppropriation(
            f"reference {reference!r} must be 1-100 letters, digits or _ . / : - starting with a letter or digit "
            "(the budget document's number, e.g. RM-045-2026-MIDIS)",
            field="reference",
        )
    return reference


async def fund(
    conn: Connection,
    code: str,
    amount: int,
    reference: str,
    *,
    actor: str,
    idempotency_key: str | None = None,
) -> Appropriation:
    """Record an appropriation: debit ``mef:treasury``, credit the program's fund, once per reference.

    Replaying a reference with the same amount returns the first result with ``replayed=True`` and moves
    nothing; another amount is refused. Run it in a unit of work.

    Args:
        conn: a connection inside a transaction.
        code: the program.
        amount: minor units (an int; parse typed amounts with ``Money.parse``).
        reference: the budget document's reference.
        actor: who records it.
        idempotency_key: the API client's key, if any; reusing it for another appropriation is refused.

    Raises:
        ProgramNotFound, InvalidAppropriation, InvalidMoney, AppropriationConflict.
    """
    require_minor_units(amount, "amount")
    _check_reference(reference)
    program = await get_program(conn, code)
    if idempotency_key is not None:
        by_key = await repository.appropriation_by_key(conn, idempotency_key)
        if by_key is not None and (by_key["program"], by_key["reference"], by_key["amount"]) != (
            code,
            reference,
            amount,
        ):
            raise AppropriationConflict(
                f"Idempotency-Key {idempotency_key!r} was used for appropriation {by_key['reference']} of "
                f"{by_key['program']} ({format_minor(by_key['amount'], by_key['currency'])}); use a new key",
                key=idempotency_key,
            )
    previous = await repository.appropriation(conn, code, reference)
    if previous is not None and previous["amount"] != amount:
        raise AppropriationConflict(
            f"reference {reference} was already appropriated to {code} for "
            f"{format_minor(previous['amount'], previous['currency'])} (transfer {previous['transfer_id']}); "
            f"it cannot be recorded again for {format_minor(amount, program.currency)}. Use a new reference "
            "for a new appropriation",
            reference=reference,
            amount=previous["amount"],
        )
    request = TransferRequest(
        postings=(
            PostingSpec(TREASURY_ACCOUNT, debit=amount),
            PostingSpec(program.fund_account, credit=amount),
        ),
        currency=program.currency,
        description=f"Appropriation {reference} to {code}",
        metadata={"kind": "appropriation", "program": code, "reference": reference},
    )
    ledger = Ledger(conn, actor)
    try:
        transfer = await ledger.transfer(request, appropriation_key(code, reference))
    except IdempotencyConflict as e:
        raise AppropriationConflict(
            f"reference {reference} was already used for {code} with another amount; use a new reference",
            reference=reference,
        ) from e
    await repository.insert_appropriation(
        conn,
        code=code,
        reference=reference,
        amount=amount,
        currency=program.currency,
        transfer_id=transfer.id,
        idempotency_key=idempotency_key,
        actor=actor,
    )
    balance = (await ledger.get_account(program.fund_account)).balance.posted
    log.info("programs.funded", program=code, amount=amount, transfer=transfer.id, replayed=transfer.replayed)
    return Appropriation(code, reference, amount, program.currency, transfer.id, transfer.replayed, balance)


async def list_programs(conn: Connection, *, after: str | None = None, limit: int = 100) -> list[Program]:
    """Programs in code order (paginate with the last code as ``after``)."""
    return await repository.list_programs(conn, after=after, limit=limit)


async def page_of_programs(conn: Connection, *, limit: int, cursor: str | None) -> tuple[list[Program], str | None]:
    """A page of programs in code order, and the cursor of the next page (None: the last page).

    Raises:
        InvalidCursor: ``cursor`` is not a next_cursor of this list.
    """
    after = cursors.decode_text(cursor, "p1") if cursor else None
    found = await list_programs(conn, after=after, limit=limit + 1)
    items = found[:limit]
    return items, (cursors.encode_cursor("p1", items[-1].code) if len(found) > limit else None)
