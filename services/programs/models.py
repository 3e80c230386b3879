"""The programs capability's values: programs, rule versions, entitlement rules, and their strict validation.

The rule language is deliberately small: a ``base`` amount, a list of top-ups over whitelisted registry
columns, and for stipends a ``duration_periods`` counted from the household's start. Every amount is an int
of minor units; anything else (a float, a bool, a string, an unknown key or field) is refused with the path
of the offending value, so a broken file says exactly what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

from services.programs.errors import InvalidProgramFile
from services.programs.periods import Schedule

TREASURY_ACCOUNT: Final = "mef:treasury"
"""The shared debit-normal account appropriations come from (the Ministry of Economy and Finance)."""

TOPUP_FIELDS: Final[Mapping[str, str]] = {
    "children_under_4": "children_under_4",
    "upper_secondary_students": "upper_secondary_students",
}
"""Registry columns a top-up may read: rule name → SQL column of ``registry.households``. Only these names
ever reach generated SQL."""

MAX_TOPUPS: Final = 20
MAX_AMOUNT: Final = 10**12
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

TopUpKind = Literal["household_if", "count"]


def fund_account(code: str) -> str:
    """The ledger account holding a program's appropriated money: ``program:<CODE>:fund``."""
    return f"program:{code}:fund"


def in_transit_account(code: str) -> str:
    """The clearing account for money sent to the bank and not yet credited: ``program:<CODE>:in-transit``."""
    return f"program:{code}:in-transit"


@dataclass(frozen=True, slots=True)
class TopUp:
    """An amount added to the base.

    Attributes:
        name: key in the breakdown (``first_childhood``).
        amount: minor units.
        per: ``household_if`` pays ``amount`` once when ``field >= min``; ``count`` pays ``amount × field``
            when ``field >= min``.
        field: a registry column from :data:`TOPUP_FIELDS`.
        min: threshold (default 1 for ``household_if``, 0 for ``count``).
    """

    name: str
    amount: int
    per: TopUpKind
    field: str
    min: int

    def value(self, field_value: int) -> int:
        """What this top-up pays for a household whose ``field`` is ``field_value``."""
        if field_value < self.min:
            return 0
        return self.amount if self.per == "household_if" else self.amount * field_value

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"name": self.name, "amount": self.amount, "per": self.per, "field": self.field, "min": self.min}


@dataclass(frozen=True, slots=True)
class Rules:
    """What a household is entitled to per period under one rule version.

    Attributes:
        base: minor units every payable household gets.
        top_ups: added to the base, in order.
        duration_periods: when set, a household is paid only for this many periods from the period
            containing its ``enrolled_on`` (a nine-month stipend); None pays for as long as it is active.
    """

    base: int
    top_ups: tuple[TopUp, ...] = ()
    duration_periods: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form stored in ``programs.rule_versions.rules``."""
        return {
            "base": self.base,
            "top_ups": [t.to_dict() for t in self.top_ups],
            "duration_periods": self.duration_periods,
        }


@dataclass(frozen=True, slots=True)
class RuleVersion:
    """A program's rules from ``effective_from`` on (until the next version's ``effective_from``)."""

    program: str
    version: int
    effective_from: date
    rules: Rules

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "program": self.program,
            "version": self.version,
            "effective_from": self.effective_from.isoformat(),
            **self.rules.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Program:
    """A cash-transfer program: its periods follow ``schedule``; its money sits in ``fund_account``."""

    code: str
    name: str
    currency: str
    schedule: Schedule

    @property
    def fund_account(self) -> str:
        """The program's fund account code."""
        return fund_account(self.code)

    @property
    def in_transit_account(self) -> str:
        """The program's in-transit clearing account code."""
        return in_transit_account(self.code)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "code": self.code,
            "name": self.name,
            "currency": self.currency,
            "schedule": self.schedule.value,
            "fund_account": self.fund_account,
            "in_transit_account": self.in_transit_account,
        }


class FloatLiteral(str):
    """A JSON number with a decimal point or exponent, kept as text so it can be refused by name."""

    __slots__ = ()


def require_int(value: Any, where: str, *, minimum: int = 0, maximum: int = MAX_AMOUNT, what: str = "") -> int:
    """``value`` if it is a plain int in [minimum, maximum], else :class:`InvalidProgramFile` naming ``where``."""
    hint = f" ({what})" if what else ""
    if isinstance(value, FloatLiteral):
        raise InvalidProgramFile(f"{where}: must be an integer{hint}, got the decimal {value}", path=where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidProgramFile(
            f"{where}: must be an integer{hint}, got {type(value).__name__} {value!r}",
            path=where,
        )
    if not minimum <= value <= maximum:
        raise InvalidProgramFile(f"{where}: must be between {minimum} and {maximum}, got {value}", path=where)
    return value


def require_keys(obj: Any, where: str, required: set[str], optional: set[str]) -> Mapping[str, Any]:
    """``obj`` as a mapping with exactly the allowed keys, else :class:`InvalidProgramFile`."""
    if not isinstance(obj, Mapping):
        raise InvalidProgramFile(f"{where}: must be an object, got {type(obj).__name__}", path=where)
    unknown = sorted(set(obj) - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise InvalidProgramFile(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {allowed})", path=where)
    missing = sorted(required - set(obj))
    if missing:
        raise InvalidProgramFile(f"{where}: missing key(s) {', '.join(missing)}", path=where)
    return obj


_CENTIMOS = "minor units, e.g. 20000 for S/ 200.00"


def parse_topup(data: Any, where: str) -> TopUp:
    """Validate one top-up object."""
    obj = require_keys(data, where, {"name", "amount", "per", "field"}, {"min"})
    name = obj["name"]
    if not isinstance(name, str) or not _NAME.match(name) or name == "base":
        raise InvalidProgramFile(
            f"{where}.name: must be lower_snake_case (letters, digits, _), not 'base', got {name!r}", path=where
        )
    per = obj["per"]
    if per not in ("household_if", "count"):
        raise InvalidProgramFile(f"{where}.per: must be 'household_if' or 'count', got {per!r}", path=where)
    field = obj["field"]
    if not isinstance(field, str) or field not in TOPUP_FIELDS:
        raise InvalidProgramFile(
            f"{where}.field: {field!r} is not a registry field a rule may use (allowed: "
            f"{', '.join(sorted(TOPUP_FIELDS))})",
            path=where,
        )
    amount = require_int(obj["amount"], f"{where}.amount", minimum=1, what=_CENTIMOS)
    default_min = 1 if per == "household_if" else 0
    minimum = require_int(obj.get("min", default_min), f"{where}.min", maximum=1_000)
    return TopUp(name, amount, per, field, minimum)


def parse_rules(data: Any, where: str) -> Rules:
    """Validate a rule version's content (``base``, ``top_ups``, ``duration_periods``).

    Args:
        data: the decoded JSON object.
        where: its path, for error messages (``JUNTOS.versions[1]``).

    Raises:
        InvalidProgramFile: with the path of the first offending value.
    """
    obj = require_keys(data, where, {"base"}, {"top_ups", "duration_periods"})
    base = require_int(obj["base"], f"{where}.base", what=_CENTIMOS)
    raw_topups = obj.get("top_ups", [])
    if not isinstance(raw_topups, list):
        raise InvalidProgramFile(f"{where}.top_ups: must be a list", path=where)
    if len(raw_topups) > MAX_TOPUPS:
        raise InvalidProgramFile(f"{where}.top_ups: at most {MAX_TOPUPS} top-ups", path=where)
    top_ups = tuple(parse_topup(t, f"{where}.top_ups[{i}]") for i, t in enumerate(raw_topups))
    names = [t.name for t in top_ups]
    for name in names:
        if names.count(name) > 1:
            raise InvalidProgramFile(f"{where}.top_ups: the name {name!r} appears twice", path=where)
    duration = obj.get("duration_periods")
    if duration is not None:
        duration = require_int(duration, f"{where}.duration_periods", minimum=1, maximum=1_200)
    if base == 0 and not top_ups:
        raise InvalidProgramFile(f"{where}: pays nothing (base 0 and no top-ups)", path=where)
    return Rules(base, top_ups, duration)
