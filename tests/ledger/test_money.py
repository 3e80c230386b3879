"""Money: exact parsing of what people type, and plain and human forms that read back to the same amount."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.money import MINOR_UNITS, InvalidMoney, Money

_MAX = 10**16 - 1  # minor units: at most 16 digits before the point in major units, whatever the currency


@given(
    currency=st.sampled_from(sorted(MINOR_UNITS)),
    amount=st.integers(min_value=-_MAX, max_value=_MAX),
)
def test_the_plain_decimal_reads_back_to_the_same_amount(currency: str, amount: int) -> None:
    text = Money(amount, currency).decimal()
    assert Money.parse(text, currency) == Money(amount, currency)
    assert "," not in text  # no grouping: a spreadsheet reads it as a number


def test_plain_and_human_forms() -> None:
    assert Money(20000, "PEN").decimal() == "200.00"
    assert Money(-5, "PEN").decimal() == "-0.05"
    assert Money(1500, "CLP").decimal() == "1500"
    assert Money(123456789, "PEN").format() == "S/ 1,234,567.89"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1" * 17, "too large: at most 16 digits"),
        ("٣٠٠", "not a decimal number"),  # digits, but not ASCII ones
        ("²", "not a decimal number"),
        ("1.005", "more than 2 decimals"),
        ("1e3", "not a decimal number"),
    ],
)
def test_what_people_type_wrong_is_named(text: str, message: str) -> None:
    with pytest.raises(InvalidMoney, match=message):
        Money.parse(text, "PEN")
