"""Money as an integer of minor units in an ISO 4217 currency; never a binary floating-point number.

Every edge that receives an amount (API, CSV, CLI) goes through :func:`require_minor_units` or
:meth:`Money.parse`, which refuse anything that is not an exact integer of minor units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ledger.errors import AppError

# Minor units of the currencies a cash-transfer program meets; others can be added here.
MINOR_UNITS: dict[str, int] = {
    "PEN": 2,
    "USD": 2,
    "EUR": 2,
    "BRL": 2,
    "MXN": 2,
    "COP": 2,
    "ARS": 2,
    "BOB": 2,
    "CLP": 0,
    "PYG": 0,
    "UYU": 2,
    "GTQ": 2,
    "HNL": 2,
    "DOP": 2,
}
SYMBOLS = {"PEN": "S/", "USD": "US$", "EUR": "€", "BRL": "R$"}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DECIMAL = re.compile(r"^[+-]?[0-9]{1,16}(\.[0-9]+)?$")
_DECIMAL_ANY_SIZE = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")


class InvalidMoney(AppError):
    """An amount or currency that is not an exact integer of minor units of a known currency."""

    type = "invalid-amount"
    title = "Invalid amount"


def require_currency(currency: Any) -> str:
    """Return ``currency`` if it is a supported ISO 4217 code, else raise :class:`InvalidMoney`."""
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise InvalidMoney(f"currency must be a 3-letter ISO 4217 code such as PEN, got {currency!r}")
    if currency not in MINOR_UNITS:
        raise InvalidMoney(f"currency {currency} is not supported (supported: {', '.join(sorted(MINOR_UNITS))})")
    return currency


MAX_MINOR_UNITS = 2**62  # an amount's bound (exclusive): sums of many stay within PostgreSQL's bigint


def require_minor_units(value: Any, field: str = "amount", *, positive: bool = True) -> int:
    """Return ``value`` if it is an ``int`` (not a bool, a binary fraction or a string), else raise.

    Args:
        value: the candidate amount.
        field: its name, for the error message.
        positive: also require ``value > 0``.

    Raises:
        InvalidMoney: with the field named and the reason.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        kind = type(value).__name__
        raise InvalidMoney(
            f"{field} must be an integer number of minor units (e.g. 20000 for S/ 200.00), got {kind} {value!r}",
            field=field,
        )
    if positive and value <= 0:
        raise InvalidMoney(f"{field} must be greater than zero, got {value}", field=field)
    if abs(value) >= MAX_MINOR_UNITS:
        raise InvalidMoney(f"{field} is too large: {value}", field=field)
    return value


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of minor units (céntimos for PEN) in a currency.

    Attributes:
        amount: integer minor units; may be negative for signed balances.
        currency: ISO 4217 code.
    """

    amount: int
    currency: str

    def __post_init__(self) -> None:
        require_minor_units(self.amount, positive=False)
        require_currency(self.currency)

    @classmethod
    def parse(cls, text: str, currency: str = "PEN") -> Money:
        """Parse a decimal amount in major units ("200.00", "150000000") exactly.

        Raises:
            InvalidMoney: not a plain decimal, or more decimals than the currency has.
        """
        require_currency(currency)
        cleaned = text.strip().replace("_", "").replace(",", "")
        if not _DECIMAL.match(cleaned):
            if _DECIMAL_ANY_SIZE.match(cleaned):
                raise InvalidMoney(f"amount {text!r} is too large: at most 16 digits before the decimal point")
            raise InvalidMoney(f"amount {text!r} is not a decimal number like 200.00")
        try:
            value = Decimal(cleaned)
        except InvalidOperation as e:  # pragma: no cover - the regex admits only valid decimals
            raise InvalidMoney(f"amount {text!r} is not a decimal number") from e
        minor = value.scaleb(MINOR_UNITS[currency])
        if minor != minor.to_integral_value():
            raise InvalidMoney(f"amount {text!r} has more than {MINOR_UNITS[currency]} decimals for {currency}")
        return cls(int(minor), currency)

    def decimal(self) -> str:
        """Plain decimal in major units, e.g. ``"1234.50"`` (no symbol, no grouping: for files and spreadsheets)."""
        digits = MINOR_UNITS[self.currency]
        sign = "-" if self.amount < 0 else ""
        whole, frac = divmod(abs(self.amount), 10**digits) if digits else (abs(self.amount), 0)
        return f"{sign}{whole}" + (f".{frac:0{digits}d}" if digits else "")

    def format(self) -> str:
        """Human form, e.g. ``S/ 200.00``."""
        digits = MINOR_UNITS[self.currency]
        sign = "-" if self.amount < 0 else ""
        whole, frac = divmod(abs(self.amount), 10**digits) if digits else (abs(self.amount), 0)
        body = f"{whole:,}" + (f".{frac:0{digits}d}" if digits else "")
        return f"{sign}{SYMBOLS.get(self.currency, self.currency)} {body}"

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise InvalidMoney(f"cannot combine {self.currency} with {other.currency}")


def format_minor(amount: int, currency: str = "PEN") -> str:
    """Format minor units for people: ``format_minor(20000) == 'S/ 200.00'``."""
    return Money(amount, currency).format()
