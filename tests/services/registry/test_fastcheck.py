"""The import's fast identifier checks agree with services.identifiers on valid, near-valid and random input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.identifiers import InvalidIdentifier, dni_check_characters, make_cci, normalize_cci, normalize_dni
from services.registry.fastcheck import UbigeoChecker, check_cci, check_dni


def _outcome(fn: object, value: str) -> tuple[str, str]:
    try:
        return ("ok", fn(value))  # type: ignore[operator]
    except InvalidIdentifier as e:
        return (type(e).__name__, e.reason)


digits8 = st.text("0123456789", min_size=8, max_size=8)
dni_like = st.one_of(
    digits8,
    digits8.map(lambda d: f"{d}-{dni_check_characters(d)[0]}"),
    digits8.map(lambda d: f"{d}{dni_check_characters(d)[1].lower()}"),
    st.tuples(digits8, st.sampled_from("0123456789ABCDEFGHIJKabc-")).map(lambda t: f"{t[0]}-{t[1]}"),
    st.text("0123456789-Gx ", max_size=11),
)


@given(dni_like)
def test_dni_fast_path_agrees(value: str) -> None:
    assert _outcome(check_dni, value) == _outcome(lambda v: normalize_dni(v, "titular_dni"), value)


cci_like = st.one_of(
    st.tuples(
        st.text("0123456789", min_size=3, max_size=3),
        st.text("0123456789", min_size=3, max_size=3),
        st.text("0123456789", min_size=12, max_size=12),
    ).map(lambda t: make_cci(*t)),
    st.text("0123456789", min_size=20, max_size=20),
    st.text("0123456789 -a", min_size=18, max_size=24),
)


@given(cci_like)
def test_cci_fast_path_agrees(value: str) -> None:
    assert _outcome(check_cci, value) == _outcome(normalize_cci, value)


def test_ubigeo_checker_knows_the_inei_list() -> None:
    check = UbigeoChecker()
    assert check("080206") == "080206"
    assert check(" 080206 ") == "080206"
    with pytest.raises(InvalidIdentifier, match="not a district in the INEI list"):
        check("260101")
