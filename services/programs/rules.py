"""Entitlements: what each household is owed for a period, as one set-based SELECT and as a pure function.

:func:`entitlements_sql` builds a SELECT over every household of a program (a million rows in seconds: no
Python loop per household) with one row per household::

    household_id text, amount bigint, breakdown jsonb, exclusion text, rule_version int

followed by the registry columns the caller asks to ``carry`` (the household's DNI, CCI, district), if any.

``amount`` is the sum of ``breakdown`` (``{"base": 20000, "first_childhood": 10000, "upper_secondary":
16000}``) when the household is payable; when it is excluded, ``amount`` is 0, ``breakdown`` is ``{}`` and
``exclusion`` says why, checked in this order:

- ``inactive``: the household's status is not ``active`` (inactive or exited);
- ``not_started``: the period is before the period containing the household's ``enrolled_on``;
- ``ended``: the rules have ``duration_periods`` and the period is that many periods or more after the
  household's first period (a nine-month stipend);
- ``suspended``: a compliance record says the household did not comply in that period (no record means
  no suspension).

:func:`compute_entitlement` is the same rule in Python, the reference the SQL is tested against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final, Literal

from services.programs.errors import NoRuleVersion
from services.programs.models import TOPUP_FIELDS, Program, RuleVersion
from services.programs.periods import Period, start_ordinal

Exclusion = Literal["inactive", "suspended", "not_started", "ended"]
EXCLUSIONS: Final[tuple[Exclusion, ...]] = ("inactive", "not_started", "ended", "suspended")
"""Every exclusion, in the order they are checked."""

ENTITLEMENT_COLUMNS: Final = ("household_id", "amount", "breakdown", "exclusion", "rule_version")
"""The columns of :func:`entitlements_sql`'s SELECT, in order (then the ``carry`` columns, if any)."""

CARRY_COLUMNS: Final = frozenset({"titular_dni", "cci", "ubigeo"})
"""Registry columns :func:`entitlements_sql` can pass through beside the entitlement (``carry``), so a caller
that also needs the household's account reads the registry once. Only these names reach generated SQL."""


@dataclass(frozen=True, slots=True)
class Entitlement:
    """A household's entitlement for one period (the Python twin of one row of :func:`entitlements_sql`)."""

    amount: int
    breakdown: dict[str, int] = field(default_factory=dict)
    exclusion: Exclusion | None = None
    rule_version: int = 0


def compute_entitlement(
    rules: RuleVersion, household: Mapping[str, Any], period: Period, *, compliant: bool = True
) -> Entitlement:
    """The entitlement of one household for ``period`` under ``rules``.

    Args:
        rules: the rule version in force at the period's start.
        household: a registry row (``status``, ``enrolled_on`` and the top-up fields).
        period: the period paid.
        compliant: False when a compliance record suspends the household for this period.

    Returns:
        The amount and its breakdown, or amount 0 with the exclusion.
    """
    enrolled: date = household["enrolled_on"]
    first = start_ordinal(enrolled, period.schedule)
    duration = rules.rules.duration_periods
    exclusion: Exclusion | None = None
    if household["status"] != "active":
        exclusion = "inactive"
    elif first > period.ordinal:
        exclusion = "not_started"
    elif duration is not None and period.ordinal >= first + duration:
        exclusion = "ended"
    elif not compliant:
        exclusion = "suspended"
    if exclusion is not None:
        return Entitlement(0, {}, exclusion, rules.version)
    breakdown = {"base": rules.rules.base}
    for top_up in rules.rules.top_ups:
        breakdown[top_up.name] = top_up.value(int(household[top_up.field]))
    return Entitlement(sum(breakdown.values()), breakdown, None, rules.version)


def entitlements_sql(
    program: Program | str,
    period: Period,
    rule_version: RuleVersion,
    *,
    param_offset: int = 0,
    carry: tuple[str, ...] = (),
) -> tuple[str, list[Any]]:
    """A SELECT of every household of ``program`` with its entitlement for ``period``.

    The result has the columns of :data:`ENTITLEMENT_COLUMNS`. Amounts and names are bind parameters; the
    only identifiers interpolated are registry columns from the whitelist in
    :data:`services.programs.models.TOPUP_FIELDS`.

    Args:
        program: the program (or its code).
        period: the period to pay; its schedule must be the program's.
        rule_version: the version in force at ``period.starts_on``
            (:func:`services.programs.service.rule_version_for`).
        param_offset: number the parameters from ``$param_offset + 1``, so the caller can put its own
            parameters first (e.g. in ``INSERT ... SELECT``).
        carry: registry columns from :data:`CARRY_COLUMNS` to add after the entitlement's, read in the same
            scan of the registry.

    Returns:
        ``(sql, params)`` for ``conn.fetch(sql, *params)`` or to embed.

    Raises:
        NoRuleVersion: ``rule_version`` belongs to another program or is not yet in force at the period's start.
        ValueError: a ``carry`` column is not one of :data:`CARRY_COLUMNS`.
    """
    unknown = sorted(set(carry) - CARRY_COLUMNS)
    if unknown:
        raise ValueError(f"cannot carry registry column(s) {', '.join(unknown)}; allowed: {sorted(CARRY_COLUMNS)}")
    code = program if isinstance(program, str) else program.code
    if rule_version.program != code:
        raise NoRuleVersion(f"rule version of {rule_version.program} given for program {code}", program=code)
    if rule_version.effective_from > period.starts_on:
        raise NoRuleVersion(
            f"{code} rule version {rule_version.version} takes effect on {rule_version.effective_from}, after "
            f"period {period.code} starts ({period.starts_on})",
            program=code,
            period=period.code,
        )
    params: list[Any] = []

    def bind(value: Any, cast: str) -> str:
        """Append a parameter; returns its placeholder with a cast."""
        params.append(value)
        return f"${param_offset + len(params)}::{cast}"

    rules = rule_version.rules
    components: list[tuple[str, str]] = [("base", bind(rules.base, "bigint"))]
    for top_up in rules.top_ups:
        column = "h." + TOPUP_FIELDS[top_up.field]
        threshold = bind(top_up.min, "integer")
        amount = bind(top_up.amount, "bigint")
        pays = amount if top_up.per == "household_if" else f"{amount} * {column}"
        components.append((top_up.name, f"case when {column} >= {threshold} then {pays} else 0::bigint end"))
    values = ", ".join(f"{expr} as c{i}" for i, (_, expr) in enumerate(components))
    total = " + ".join(f"x.c{i}" for i in range(len(components)))
    breakdown = ", ".join(f"{bind(name, 'text')}, x.c{i}" for i, (name, _) in enumerate(components))
    p_code = bind(code, "text")
    p_period = bind(period.code, "text")
    p_ordinal = bind(period.ordinal, "integer")
    p_months = bind(period.schedule.months, "integer")
    p_version = bind(rule_version.version, "integer")
    first = (
        f"((extract(year from h.enrolled_on)::integer * 12 + extract(month from h.enrolled_on)::integer - 1)"
        f" / {p_months})"
    )
    ended = ""
    if rules.duration_periods is not None:
        ended = f"when {p_ordinal} >= {first} + {bind(rules.duration_periods, 'integer')} then 'ended' "
    outer_carry = "".join(f", e.{column}" for column in carry)
    inner_carry = "".join(f"h.{column}, " for column in carry)
    sql = (
        "select e.household_id, "
        "case when e.exclusion is null then e.total else 0::bigint end as amount, "
        "case when e.exclusion is null then e.breakdown else '{}'::jsonb end as breakdown, "
        "e.exclusion, "
        f"{p_version} as rule_version{outer_carry} "
        f"from (select h.household_id, {inner_carry}"
        f"({total})::bigint as total, "
        f"jsonb_build_object({breakdown}) as breakdown, "
        "case when h.status <> 'active' then 'inactive' "
        f"when {first} > {p_ordinal} then 'not_started' "
        f"{ended}"
        "when c.compliant = false then 'suspended' "
        "end::text as exclusion "
        "from registry.households h "
        f"cross join lateral (select {values}) x "
        f"left join registry.compliance c on c.program = {p_code} and c.period = {p_period} "
        "and c.household_id = h.household_id "
        f"where h.program = {p_code}) e"
    )
    return sql, params
