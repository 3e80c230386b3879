"""Payment periods: bimesters (``2026-B5``) and months (``2026-11``), parsed, ordered and dated.

A program's *schedule* decides its periods. Each period has an *ordinal* (a count of periods since year 0)
so arithmetic (next, previous, "nine periods from the household's start") is integer arithmetic that the
entitlement SQL reproduces exactly: ``ordinal = (year * 12 + month - 1) // months_per_period``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date, timedelta

from services.programs.errors import InvalidPeriod


class Schedule(enum.StrEnum):
    """How often a program pays: every two months (bimesters) or every month."""

    BIMONTHLY = "bimonthly"
    MONTHLY = "monthly"

    @property
    def months(self) -> int:
        """Months per period (2 or 1)."""
        return 2 if self is Schedule.BIMONTHLY else 1

    @property
    def per_year(self) -> int:
        """Periods per year (6 or 12)."""
        return 12 // self.months

    @property
    def example(self) -> str:
        """A period code of this schedule, for error messages."""
        return "2026-B5" if self is Schedule.BIMONTHLY else "2026-11"


_BIMESTER = re.compile(r"^(\d{4})-B(\d+)$")
_MONTH = re.compile(r"^(\d{4})-(\d+)$")
MIN_YEAR = 2000
MAX_YEAR = 2199


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """One payment period of a schedule.

    Attributes:
        ordinal: periods since year 0 (orders periods and makes arithmetic exact).
        schedule: bimonthly or monthly.
    """

    ordinal: int
    schedule: Schedule

    @classmethod
    def of(cls, schedule: Schedule, year: int, index: int) -> Period:
        """The ``index``-th period (1-based) of ``year``.

        Raises:
            InvalidPeriod: index or year out of range.
        """
        if not 1 <= index <= schedule.per_year:
            what = "bimester must be B1..B6" if schedule is Schedule.BIMONTHLY else "month must be 01..12"
            raise InvalidPeriod(f"{what}, got {index}", period=f"{year}-{index}")
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise InvalidPeriod(f"year must be between {MIN_YEAR} and {MAX_YEAR}, got {year}", year=year)
        return cls(year * schedule.per_year + index - 1, schedule)

    @property
    def year(self) -> int:
        """The calendar year."""
        return self.ordinal // self.schedule.per_year

    @property
    def index(self) -> int:
        """1-based position in the year (bimester 1..6 or month 1..12)."""
        return self.ordinal % self.schedule.per_year + 1

    @property
    def code(self) -> str:
        """``2026-B5`` or ``2026-11``."""
        if self.schedule is Schedule.BIMONTHLY:
            return f"{self.year:04d}-B{self.index}"
        return f"{self.year:04d}-{self.index:02d}"

    @property
    def starts_on(self) -> date:
        """The first day of the period."""
        return date(self.year, (self.index - 1) * self.schedule.months + 1, 1)

    @property
    def ends_before(self) -> date:
        """The first day after the period (exclusive end)."""
        return self.next().starts_on

    @property
    def ends_on(self) -> date:
        """The last day of the period (inclusive end)."""
        return self.ends_before - timedelta(days=1)

    def shift(self, n: int) -> Period:
        """The period ``n`` periods later (earlier when negative)."""
        return Period(self.ordinal + n, self.schedule)

    def next(self) -> Period:
        """The following period."""
        return self.shift(1)

    def previous(self) -> Period:
        """The preceding period."""
        return self.shift(-1)

    def contains(self, day: date) -> bool:
        """Whether ``day`` falls in this period."""
        return self.starts_on <= day < self.ends_before

    def __str__(self) -> str:
        return self.code


def parse_period(code: str, schedule: Schedule | str) -> Period:
    """Parse a period code of ``schedule``.

    Args:
        code: ``2026-B5`` (bimonthly) or ``2026-11`` (monthly).
        schedule: the program's schedule.

    Returns:
        The period.

    Raises:
        InvalidPeriod: the code does not match the schedule, or the bimester/month/year is out of range
            (``2026-B7`` → "bimester must be B1..B6").
    """
    schedule = _schedule(schedule)
    if not isinstance(code, str):
        raise InvalidPeriod(f"period must be a string like {schedule.example}, got {type(code).__name__}")
    text = code.strip()
    if schedule is Schedule.BIMONTHLY:
        m = _BIMESTER.match(text)
        if m is None:
            raise InvalidPeriod(
                f"period {code!r} is not a bimester: write YYYY-Bn, e.g. 2026-B5 (B1 = Jan-Feb ... B6 = Nov-Dec)",
                period=code,
            )
        year, index = int(m.group(1)), int(m.group(2))
        if not 1 <= index <= 6 or len(m.group(2)) != 1:
            raise InvalidPeriod(f"period {code!r}: bimester must be B1..B6", period=code)
    else:
        m = _MONTH.match(text)
        if m is None:
            raise InvalidPeriod(f"period {code!r} is not a month: write YYYY-MM, e.g. 2026-11", period=code)
        year, index = int(m.group(1)), int(m.group(2))
        if not 1 <= index <= 12 or len(m.group(2)) != 2:
            raise InvalidPeriod(f"period {code!r}: month must be 01..12", period=code)
    return Period.of(schedule, year, index)


def period_containing(day: date, schedule: Schedule | str) -> Period:
    """The period of ``schedule`` that contains ``day``."""
    schedule = _schedule(schedule)
    return Period.of(schedule, day.year, (day.month - 1) // schedule.months + 1)


def start_ordinal(day: date, schedule: Schedule | str) -> int:
    """The ordinal of the period containing ``day`` (what the entitlement SQL computes from ``enrolled_on``)."""
    return (day.year * 12 + day.month - 1) // _schedule(schedule).months


def _schedule(value: Schedule | str) -> Schedule:
    try:
        return Schedule(value)
    except ValueError:
        raise InvalidPeriod(f"unknown schedule {value!r}; use bimonthly or monthly") from None
