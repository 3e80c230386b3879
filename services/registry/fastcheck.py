"""Fast paths for the identifier checks of a million-row import, agreeing with :mod:`services.identifiers`.

The weighted sums of the DNI check character and the CCI check digits are looked up in precomputed tables
(four DNI digits or three CCI digits at a time) instead of looping over digits. Only the common, valid
shapes take the fast path: anything else (separators, letters, a wrong check character) is handed to
:mod:`services.identifiers`, which decides and words the error, so both always agree.
"""

from __future__ import annotations

from typing import Final

from services.identifiers import (
    InvalidIdentifier,
    _inei_districts,
    normalize_cci,
    normalize_dni,
    normalize_ubigeo,
    plain_cci_is_valid,
)

DNI_DIGITS: Final = "65432110987"
DNI_LETTERS: Final = "KJIHGFEDCBA"
# Weights (3, 2, 7, 6) on the first four digits, (5, 4, 3, 2) on the last four.
DNI_HEAD: Final = {
    f"{i:04d}": 3 * (i // 1000) + 2 * (i // 100 % 10) + 7 * (i // 10 % 10) + 6 * (i % 10) for i in range(10_000)
}
DNI_TAIL: Final = {
    f"{i:04d}": 5 * (i // 1000) + 4 * (i // 100 % 10) + 3 * (i // 10 % 10) + 2 * (i % 10) for i in range(10_000)
}


def check_dni(value: str, field: str = "titular_dni") -> str:
    """The 8-digit DNI of ``value`` (``10117410``, ``10117410-2``, ``101174102``, ``10117410-G``).

    Raises:
        InvalidDNI: as :func:`services.identifiers.normalize_dni` would.
    """
    n = len(value)
    if n == 10 and value[8] == "-":
        check = value[9]
    elif n == 9:
        check = value[8]
    elif n == 8:
        check = ""
    else:
        return normalize_dni(value, field)
    head = DNI_HEAD.get(value[:4])
    tail = DNI_TAIL.get(value[4:8])
    if head is None or tail is None:
        return normalize_dni(value, field)
    if check:
        c = (head + tail) % 11
        if check != DNI_DIGITS[c] and check.upper() != DNI_LETTERS[c]:
            return normalize_dni(value, field)
    return value[:8]


def check_cci(value: str, field: str = "cci") -> str:
    """The 20-digit CCI of ``value``.

    Raises:
        InvalidCCI: as :func:`services.identifiers.normalize_cci` would.
    """
    if plain_cci_is_valid(value):
        return value
    return normalize_cci(value, field)


class UbigeoChecker:
    """Ubigeo validation with a set of the codes known valid (the INEI list when installed, else a memo of
    the codes accepted so far)."""

    def __init__(self) -> None:
        districts = _inei_districts()
        self.valid: set[str] = set(districts) if districts is not None else set()

    def __call__(self, value: str, field: str = "ubigeo") -> str:
        if value in self.valid:
            return value
        code = normalize_ubigeo(value, field)
        self.valid.add(code)
        return code


__all__ = ["InvalidIdentifier", "UbigeoChecker", "check_cci", "check_dni"]
