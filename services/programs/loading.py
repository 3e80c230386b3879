"""Loading program definitions: programs, append-only rule versions and the programs' ledger accounts.

Loading is idempotent (the same file twice changes nothing). A loaded rule version never changes; a new one
must take effect after today, so the periods already started keep their rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import structlog

from ledger.db import Connection
from ledger.engine import Ledger
from ledger.errors import AccountExists
from ledger.models import AccountSpec, NormalBalance
from services.programs import repository
from services.programs.catalog import ProgramDefinition
from services.programs.errors import ProgramAccountMismatch, ProgramChanged, RuleVersionChanged, RuleVersionNotAllowed
from services.programs.models import TREASURY_ACCOUNT, Program, RuleVersion

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class LoadReport:
    """What loading a programs file changed."""

    programs_created: list[str] = field(default_factory=list)
    programs_renamed: list[str] = field(default_factory=list)
    versions_added: list[tuple[str, int]] = field(default_factory=list)
    versions_unchanged: list[tuple[str, int]] = field(default_factory=list)
    accounts_opened: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the load wrote anything."""
        return bool(self.programs_created or self.programs_renamed or self.versions_added or self.accounts_opened)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "changed": self.changed,
            "programs_created": self.programs_created,
            "programs_renamed": self.programs_renamed,
            "versions_added": [{"program": p, "version": v} for p, v in self.versions_added],
            "versions_unchanged": [{"program": p, "version": v} for p, v in self.versions_unchanged],
            "accounts_opened": self.accounts_opened,
        }


async def load_programs(
    conn: Connection, definitions: list[ProgramDefinition], *, actor: str, today: date | None = None
) -> LoadReport:
    """Create or update programs, append new rule versions and open the programs' ledger accounts.

    Idempotent: loading the same definitions again changes nothing. Run it in a unit of work.

    Args:
        conn: a connection inside a transaction.
        definitions: from :func:`services.programs.catalog.read_programs_file`.
        actor: who loads (recorded on new versions).
        today: the current date (default: today, UTC); a new version of an existing program must take
            effect after it, so periods already started keep their rules.

    Raises:
        ProgramChanged: a program's currency or schedule differs from the loaded one.
        RuleVersionChanged: a loaded version has different content in the file.
        RuleVersionNotAllowed: a new version takes effect today or earlier.
        ProgramAccountMismatch: a program account exists with the wrong currency or side.
    """
    today = today or datetime.now(UTC).date()
    report = LoadReport()
    for definition in definitions:
        program = definition.program
        await repository.lock_program(conn, program.code)
        existing = await repository.get_program(conn, program.code)
        if existing is None:
            await repository.insert_program(conn, program)
            report.programs_created.append(program.code)
        else:
            for name in ("currency", "schedule"):
                if getattr(existing, name) != getattr(program, name):
                    raise ProgramChanged(
                        f"{program.code}: {name} is {getattr(existing, name)} in the database and "
                        f"{getattr(program, name)} in the file; a program's {name} cannot change (create a "
                        "new program code instead)",
                        program=program.code,
                    )
            if existing.name != program.name:
                await repository.rename_program(conn, program.code, program.name)
                report.programs_renamed.append(program.code)
        loaded = {v.version: v for v in await repository.rule_versions(conn, program.code)}
        for version in definition.versions:
            old = loaded.get(version.version)
            if old is not None:
                _same_version(old, version)
                report.versions_unchanged.append((program.code, version.version))
                continue
            if loaded and version.effective_from <= today:
                raise RuleVersionNotAllowed(
                    f"{program.code} version {version.version} would take effect on {version.effective_from}, "
                    f"which is not after today ({today}); a new version may change future periods only: choose "
                    "a later effective_from",
                    program=program.code,
                    version=version.version,
                )
            await repository.insert_rule_version(conn, version, actor)
            report.versions_added.append((program.code, version.version))
        report.accounts_opened.extend(await ensure_accounts(conn, program, actor))
    log.info(
        "programs.loaded",
        created=report.programs_created,
        versions_added=len(report.versions_added),
        accounts_opened=report.accounts_opened,
    )
    return report


def _same_version(old: RuleVersion, new: RuleVersion) -> None:
    differences = []
    if old.effective_from != new.effective_from:
        differences.append(f"effective_from {old.effective_from} → {new.effective_from}")
    old_rules, new_rules = old.rules.to_dict(), new.rules.to_dict()
    for key in old_rules:
        if old_rules[key] != new_rules[key]:
            differences.append(f"{key} {old_rules[key]} → {new_rules[key]}")
    if differences:
        raise RuleVersionChanged(
            f"{new.program} version {new.version} is already loaded with other content ({'; '.join(differences)}). "
            f"Loaded versions never change: restore version {new.version} in the file and add version "
            f"{new.version + 1} with a later effective_from instead",
            program=new.program,
            version=new.version,
        )


def account_specs(program: Program) -> list[AccountSpec]:
    """The ledger accounts a program needs: its fund, its in-transit clearing account, and the treasury."""
    meta = {"program": program.code}
    return [
        AccountSpec(program.fund_account, program.currency, NormalBalance.CREDIT, True, True, {**meta, "role": "fund"}),
        AccountSpec(
            program.in_transit_account,
            program.currency,
            NormalBalance.CREDIT,
            False,
            True,
            {**meta, "role": "in-transit"},
        ),
        AccountSpec(TREASURY_ACCOUNT, program.currency, NormalBalance.DEBIT, False, False, {"role": "treasury"}),
    ]


async def ensure_accounts(conn: Connection, program: Program, actor: str) -> list[str]:
    """Open the program's accounts that are missing; returns the codes opened.

    Raises:
        ProgramAccountMismatch: an account exists with another currency, side or overdraft rule.
    """
    ledger = Ledger(conn, actor)
    specs = account_specs(program)
    existing = await ledger.get_accounts([s.code for s in specs])
    opened = []
    for spec in specs:
        account = existing.get(spec.code)
        if account is None:
            try:
                await ledger.create_account(spec)
            except AccountExists:  # opened concurrently: check it like any existing one
                account = await ledger.get_account(spec.code)
            else:
                opened.append(spec.code)
                continue
        if (account.currency, account.normal_balance, account.no_overdraft) != (
            spec.currency,
            spec.normal_balance,
            spec.no_overdraft,
        ):
            raise ProgramAccountMismatch(
                f"account {spec.code} exists as {account.currency} {account.normal_balance.value}-normal "
                f"(no_overdraft={account.no_overdraft}) but {program.code} needs {spec.currency} "
                f"{spec.normal_balance.value}-normal (no_overdraft={spec.no_overdraft})",
                account=spec.code,
            )
    return opened
