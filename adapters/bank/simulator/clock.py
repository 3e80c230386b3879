"""The simulated bank's clock: whole seconds since the simulation's start, shown in Lima time (UTC-5).

Settlement delays and household behaviour run on this clock, never on the wall clock. It only moves forward,
through the simulator-only control ``POST /sim/clock/advance`` and, a little, on each batch lookup (see
``docs/bank-api.md``). Value dates are Lima calendar dates.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Final

LIMA: Final = timezone(timedelta(hours=-5), "PET")
DEFAULT_START: Final = datetime(2025, 1, 6, 8, 0, tzinfo=LIMA)
"""The default first instant of a simulation: a Monday morning in Lima."""


class SimClock:
    """Converts simulated seconds to datetimes and dates.

    Args:
        start: the datetime of second 0; must be timezone-aware.
    """

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        if start.tzinfo is None:
            raise ValueError("the simulation start must be timezone-aware")
        self.start = start.astimezone(LIMA)
        self._start_unix = int(self.start.timestamp())
        # Seconds from second 0 back to the previous Lima midnight, for date arithmetic without datetimes.
        midnight = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        self._since_midnight = int((self.start - midnight).total_seconds())
        self._start_ordinal = midnight.date().toordinal()
        self.iso = functools.lru_cache(maxsize=65536)(self._iso)

    def _iso(self, t: int) -> str:
        return (self.start + timedelta(seconds=t)).isoformat()

    def to_datetime(self, t: int) -> datetime:
        """The Lima datetime of simulated second ``t``."""
        return self.start + timedelta(seconds=t)

    def day_number(self, t: int) -> int:
        """The proleptic Gregorian ordinal of the Lima date of second ``t``."""
        return self._start_ordinal + (t + self._since_midnight) // 86400

    def to_date(self, t: int) -> date:
        """The Lima calendar date (value date) of second ``t``."""
        return date.fromordinal(self.day_number(t))

    def date_iso(self, t: int) -> str:
        """The value date of second ``t`` as ``YYYY-MM-DD``."""
        return self.to_date(t).isoformat()

    def first_second_of(self, day: date) -> int:
        """The first simulated second whose value date is ``day`` (may be negative)."""
        return (day.toordinal() - self._start_ordinal) * 86400 - self._since_midnight

    def seconds_until(self, when: datetime) -> int:
        """Simulated seconds from the start to ``when`` (an aware datetime)."""
        if when.tzinfo is None:
            raise ValueError("datetime must be timezone-aware")
        return int((when.astimezone(UTC) - self.start.astimezone(UTC)).total_seconds())
