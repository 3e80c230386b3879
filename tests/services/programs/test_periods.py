"""Period codes: parsing per schedule, dates, ordering and arithmetic, and the errors bad codes get."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.programs.errors import InvalidPeriod
from services.programs.periods import Period, Schedule, parse_period, period_containing, start_ordinal


@pytest.mark.parametrize(
    ("code", "start", "end"),
    [
        ("2026-B1", date(2026, 1, 1), date(2026, 2, 28)),
        ("2028-B1", date(2028, 1, 1), date(2028, 2, 29)),
        ("2026-B5", date(2026, 9, 1), date(2026, 10, 31)),
        ("2026-B6", date(2026, 11, 1), date(2026, 12, 31)),
    ],
)
def test_bimesters_cover_two_calendar_months(code: str, start: date, end: date) -> None:
    period = parse_period(code, "bimonthly")
    assert period.code == code
    assert (period.starts_on, period.ends_on) == (start, end)
    assert period.ends_before == end + timedelta(days=1)


def test_months_are_two_digit_codes() -> None:
    period = parse_period("2026-11", Schedule.MONTHLY)
    assert (period.year, period.index, period.starts_on, period.ends_on) == (
        2026,
        11,
        date(2026, 11, 1),
        date(2026, 11, 30),
    )
    assert parse_period(" 2026-02 ", "monthly").ends_on == date(2026, 2, 28)


@pytest.mark.parametrize(
    ("code", "schedule", "message"),
    [
        ("2026-B7", "bimonthly", "bimester must be B1..B6"),
        ("2026-B0", "bimonthly", "bimester must be B1..B6"),
        ("2026-B10", "bimonthly", "bimester must be B1..B6"),
        ("2026-11", "bimonthly", "is not a bimester: write YYYY-Bn"),
        ("2026-b5", "bimonthly", "is not a bimester"),
        ("2026-13", "monthly", "month must be 01..12"),
        ("2026-00", "monthly", "month must be 01..12"),
        ("2026-5", "monthly", "month must be 01..12"),
        ("2026-B5", "monthly", "is not a month: write YYYY-MM"),
        ("1999-B1", "bimonthly", "year must be between 2000 and 2199"),
        ("", "monthly", "is not a month"),
    ],
)
def test_bad_codes_say_what_is_wrong(code: str, schedule: str, message: str) -> None:
    with pytest.raises(InvalidPeriod, match=message):
        parse_period(code, schedule)


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(InvalidPeriod, match="unknown schedule 'weekly'"):
        parse_period("2026-B1", "weekly")


def test_next_and_previous_cross_the_year() -> None:
    b6 = parse_period("2026-B6", "bimonthly")
    assert b6.next().code == "2027-B1"
    assert b6.next().previous() == b6
    assert parse_period("2027-01", "monthly").previous().code == "2026-12"
    assert parse_period("2026-03", "monthly").shift(9).code == "2026-12"
    assert parse_period("2026-B2", "bimonthly") < parse_period("2026-B3", "bimonthly")


def test_period_containing_a_date() -> None:
    assert period_containing(date(2026, 10, 31), "bimonthly").code == "2026-B5"
    assert period_containing(date(2026, 11, 1), "bimonthly").code == "2026-B6"
    assert period_containing(date(2026, 2, 14), "monthly").code == "2026-02"
    assert parse_period("2026-B5", "bimonthly").contains(date(2026, 9, 30))
    assert not parse_period("2026-B5", "bimonthly").contains(date(2026, 11, 1))


@given(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2199, 12, 31)),
    st.sampled_from([Schedule.BIMONTHLY, Schedule.MONTHLY]),
)
def test_every_date_lies_in_exactly_its_period(day: date, schedule: Schedule) -> None:
    period = period_containing(day, schedule)
    assert period.starts_on <= day <= period.ends_on
    assert parse_period(period.code, schedule) == period
    assert start_ordinal(day, schedule) == period.ordinal
    assert period.next().starts_on == period.ends_before
    assert Period.of(schedule, period.year, period.index) == period
