"""What a payment run needs from the programs capability, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.db import Connection
from services.programs import rules, service
from services.programs.models import Program, RuleVersion
from services.programs.periods import Period


@dataclass(frozen=True, slots=True)
class ProgramContext:
    """A program, one of its periods and the rules in force at the period's start."""

    program_obj: Program
    period_obj: Period
    rule_version: RuleVersion

    @property
    def program(self) -> str:
        return self.program_obj.code

    @property
    def period(self) -> str:
        return self.period_obj.code

    @property
    def currency(self) -> str:
        return self.program_obj.currency

    @property
    def fund_account(self) -> str:
        return self.program_obj.fund_account

    @property
    def in_transit_account(self) -> str:
        return self.program_obj.in_transit_account

    def entitlements_sql(self, param_offset: int = 0, carry: tuple[str, ...] = ()) -> tuple[str, list[Any]]:
        """The SELECT of every household's entitlement for the period (see ``services.programs.rules``)."""
        return rules.entitlements_sql(
            self.program_obj, self.period_obj, self.rule_version, param_offset=param_offset, carry=carry
        )


async def program_context(conn: Connection, program: str, period: str) -> ProgramContext:
    """The program, the parsed period and the rule version in force.

    Raises:
        ProgramNotFound, InvalidPeriod, NoRuleVersion (from the programs capability).
    """
    program_obj, period_obj = await service.resolve_period(conn, program, period)
    version = await service.rule_version_for(conn, program_obj, period_obj)
    return ProgramContext(program_obj, period_obj, version)
