"""The fast validation of large request bodies agrees with the interface's models.

Whatever ``adapters.bank.wire`` accepts, the models accept with exactly the same values; what it does not
accept goes to the models (which give the exact error or normalisation), so the fast path can never let
through a body the interface refuses, nor change a value.
"""

from __future__ import annotations

import gc
import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from adapters.bank import wire
from adapters.bank.schemas import BulkAccounts
from services.identifiers import InvalidIdentifier, make_cci, normalize_cci
from services.ports.bank import (
    CREDIT_ITEM_BY_CCI,
    BatchItem,
    CreditBatch,
    ItemResult,
    Page,
    RenderedCreditBatch,
    item_outcome,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cci(n: int) -> str:
    return make_cci("018", f"{n % 1000:03d}", f"04{n % 1000:03d}{n:07d}")


def _plain_item(n: int) -> dict[str, Any]:
    item: dict[str, Any] = {"reference": f"R1:{n:07d}", "dni": f"{10_000_000 + n:08d}", "amount": 200_00}
    if n % 2:
        item["cci"] = _cci(n)
    else:
        item["account_number"] = f"04082{n:07d}"
    return item


# Ways a field can be written: fine, another accepted form, or wrong.
MUTATIONS: dict[str, list[Any]] = {
    "reference": ["a", "x" * 64, "x" * 65, "", "bad ref", "é", 7, None, "-lead"],
    "dni": ["10117410-2", "10117410-9", "1011741", "101174100", " 10117410", 10117410, "1011741O", None],
    "amount": [1, 0, -5, 200.0, 200.5, True, "20000", 2**70, None],
    "account_number": ["04082000000", "0408200000012", "04082000000a", None, 12],
    "cci": ["018-082-040820000001-81", "01808204082000000180", "0180820408200000018", "00208204082000000181", None],
    "description": ["x" * 140, "x" * 141, None, 5],
    "control_count": [0, 1001, 1.0, True, "1"],
    "control_amount": [0, 1.5, False],
    "extra": ["surprise"],
}


@st.composite
def batch_bodies(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(min_value=1, max_value=12))
    items = [_plain_item(draw(st.integers(min_value=0, max_value=9_999_999))) for _ in range(n)]
    body: dict[str, Any] = {
        "reference": "B:1",
        "control_count": n,
        "control_amount": sum(i["amount"] for i in items),
        "items": items,
    }
    if draw(st.booleans()):
        body["description"] = "round"
    if draw(st.booleans()):  # the client writes absent targets as null
        for item in items:
            item.setdefault("account_number", None)
            item.setdefault("cci", None)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        field = draw(st.sampled_from(sorted(MUTATIONS)))
        value = draw(st.sampled_from(MUTATIONS[field]))
        target = body if field in ("reference", "description", "control_count", "control_amount") else None
        if target is None:
            target = items[draw(st.integers(min_value=0, max_value=n - 1))]
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            target.pop(field, None)
        else:
            target[field] = value
    return json.dumps(body).encode()  # the standard module writes integers beyond 64 bits too


def _model_payload(raw: bytes) -> dict[str, Any]:
    batch = CreditBatch.model_validate_json(raw)
    return {
        "reference": batch.reference,
        "description": batch.description,
        "control_count": batch.control_count,
        "control_amount": batch.control_amount,
        "items": [(i.reference, i.dni, i.amount, i.account_number, i.cci) for i in batch.items],
    }


@FAST
@given(batch_bodies())
def test_what_the_fast_path_accepts_the_model_accepts_with_the_same_values(raw: bytes) -> None:
    payload = wire.credit_batch_payload(raw)
    if payload is not None:
        assert payload == _model_payload(raw)


def test_the_bodies_the_client_sends_take_the_fast_path() -> None:
    items = [BatchItem.model_validate(_plain_item(n)) for n in range(1000)]  # half by account number, half by CCI
    batch = CreditBatch.build("B:plain", items, description="2025-B1")
    raw = batch.model_dump_json().encode()
    assert wire.credit_batch_payload(raw) == _model_payload(raw)
    # the payload is what the journal and the idempotency fingerprint were always made of
    assert orjson.dumps(wire.credit_batch_payload(raw)) == orjson.dumps(_model_payload(raw))


@pytest.mark.parametrize(
    "change",
    [
        {"dni": "10117410-2"},  # another accepted form: the model normalises it
        {"cci": "018-082-040820000001-81", "account_number": None},
        {"cci": "01808204082000000180", "account_number": None},  # wrong check digit
        {"cci": _cci(5)},  # both targets
        {"account_number": None},  # no target
        {"amount": 200.0},
    ],
)
def test_other_forms_and_errors_are_left_to_the_model(change: dict[str, Any]) -> None:
    item = {**_plain_item(2), **change}
    raw = orjson.dumps({"reference": "B", "control_count": 1, "control_amount": item["amount"], "items": [item]})
    assert wire.credit_batch_payload(raw) is None


@FAST
@given(st.text(alphabet="0123456789", min_size=20, max_size=20))
def test_cci_check_digits_are_the_identifiers_module_s(cci: str) -> None:
    try:
        expected = normalize_cci(cci) == cci
    except InvalidIdentifier:
        expected = False
    assert wire.ccis_are_valid([cci]) is expected


def test_cci_check_digits_on_many_offices_and_accounts() -> None:
    rng = random.Random(5)
    good = [
        make_cci(f"{rng.randrange(1000):03d}", f"{rng.randrange(1000):03d}", f"{rng.randrange(10**12):012d}")
        for _ in range(3000)
    ]
    assert wire.ccis_are_valid(good)
    for cci in good[:300]:
        position = rng.choice((18, 19))
        wrong = cci[:position] + str((int(cci[position]) + rng.randrange(1, 10)) % 10) + cci[position + 1 :]
        assert not wire.ccis_are_valid([*good[:5], wrong])


@st.composite
def account_bodies(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(min_value=1, max_value=8))
    rows: list[dict[str, Any]] = [
        {"dni": f"{20_000_000 + k:08d}", "name": f"Titular {k}", "ubigeo": "080206"} for k in range(n)
    ]
    mutations: dict[str, list[Any]] = {
        "dni": ["10117410-2", "1011741", 10117410, None],
        "name": ["", "x" * 120, "x" * 121, "tab\there", "Ñusta Quispe", None],
        "ubigeo": ["999999", "000000", "1501", " 080206", "150101", 80206],
        "extra": ["x"],
    }
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        field = draw(st.sampled_from(sorted(mutations)))
        rows[draw(st.integers(min_value=0, max_value=n - 1))][field] = draw(st.sampled_from(mutations[field]))
    return orjson.dumps({"accounts": rows})


@FAST
@given(account_bodies())
def test_bulk_account_rows_agree_with_the_model(raw: bytes) -> None:
    rows = wire.bulk_account_rows(raw)
    if rows is None:
        return
    model = BulkAccounts.model_validate_json(raw)
    assert rows == [(a.dni, a.name, a.ubigeo) for a in model.accounts]


def test_bulk_account_rows_leave_errors_to_the_model() -> None:
    for bad in (b"{}", b"[]", b'{"accounts": []}', b"not json", b'{"accounts": [{"dni": "1"}]}'):
        assert wire.bulk_account_rows(bad) is None
        with pytest.raises(ValidationError):
            BulkAccounts.model_validate_json(bad)


def test_paused_gc_restores_the_collector_state() -> None:
    assert gc.isenabled()
    with wire.paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), wire.paused_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with wire.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # an application that disabled it keeps it disabled
    finally:
        gc.enable()


def _by_cci(n: int) -> tuple[str, str, int, str]:
    return f"R1-P{n}", f"{10_000_000 + n:08d}", 100 + n, _cci(n)


def _rendered(rows: list[tuple[str, str, int, str]]) -> str:
    """The items as the database renders them (``format`` with the port's template, texts by ``to_json``),
    here with Python's ``%`` and ``json.dumps`` on texts that need no escaping."""
    return ",".join(CREDIT_ITEM_BY_CCI % (json.dumps(r), json.dumps(d), a, json.dumps(c)) for r, d, a, c in rows)


@FAST
@given(
    st.lists(st.integers(min_value=0, max_value=9_999_999), min_size=1, max_size=30),
    st.sampled_from([None, "2025-B1", 'the "B5" round', "pago ñandú", "tab\there", ""]),
)
def test_a_rendered_batch_is_sent_as_the_model_writes_it(numbers: list[int], description: str | None) -> None:
    rows = [_by_cci(n) for n in numbers]
    built = CreditBatch.build(
        "R1-B1", [BatchItem(reference=r, dni=d, amount=a, cci=c) for r, d, a, c in rows], description
    )
    rendered = RenderedCreditBatch("R1-B1", built.control_count, built.control_amount, _rendered(rows), description)
    raw = rendered.to_json()
    assert raw == built.model_dump_json().encode()
    assert CreditBatch.model_validate_json(raw) == built  # what the bank receives
    assert wire.credit_batch_payload(raw) == _model_payload(raw)  # and the simulated bank's fast path takes it


def test_a_rendered_batch_writes_its_own_fields_as_json() -> None:
    rendered = RenderedCreditBatch('R1-"B1"', 1, 101, _rendered([_by_cci(1)]), "línea\n2")
    body = orjson.loads(rendered.to_json())
    assert body == {
        "reference": 'R1-"B1"',
        "control_count": 1,
        "control_amount": 101,
        "items": [{"reference": "R1-P1", "dni": "10000001", "amount": 101, "account_number": None, "cci": _cci(1)}],
        "description": "línea\n2",
    }
    assert list(body) == list(CreditBatch.model_fields)  # the model's order


# --- pages of batch items, read by the client ------------------------------------------------------------


def _plain_result(n: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"itm_{n:010d}",
        "object": "credit_item",
        "batch_id": "bat_0000000001",
        "reference": f"R1-P{n}",
        "account_id": f"acc_{n:010d}",
        "amount": 200_00,
        "status": "credited",
        "reason": None,
        "settled_at": "2026-11-29T01:00:00.123456Z",
        "statement_line_id": f"stl_{n:010d}",
    }
    if n % 3 == 1:
        item.update(status="rejected", reason="account_closed", statement_line_id=None)
    if n % 3 == 2:
        item.update(status="pending", settled_at=None, statement_line_id=None)
    return item


RESULT_MUTATIONS: dict[str, list[Any]] = {
    "id": [7, None, "", "itm_x"],
    "object": ["credit_item", "batch", None],
    "batch_id": [3, None],
    "reference": ["", 5, "R1-P٣"],
    "account_id": [None, 9, "acc"],
    "amount": [0, -1, 1.0, True, "200", 2**70, None],
    "status": ["CREDITED", "settled", 1, ["credited"], None],
    "reason": ["dni_mismatch", "closed", 3, ["x"]],
    "settled_at": [
        "2026-11-29T01:00:00+05:30",
        "2026-11-29T01:00:00",  # no zone: not aware
        "2026-02-30T00:00:00Z",
        "2026-11-29T24:00:00Z",
        "2026-11-29T01:00:00+24:00",
        "2026-11-29 01:00:00Z",
        "2026-11-29T01:00:00.1234567Z",
        "٢٠٢٦-11-29T01:00:00Z",
        20261129,
        ["2026-11-29T01:00:00Z"],
        None,
    ],
    "statement_line_id": [None, 4],
    "surprise": ["ignored"],
}
PAGE_MUTATIONS: dict[str, list[Any]] = {
    "object": ["list", "page", None],
    "has_more": [True, 1, "false", None],
    "next_cursor": ["c2", 5, None],
    "data": [{}, None],
}


@st.composite
def item_pages(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(min_value=0, max_value=8))
    data = [_plain_result(draw(st.integers(min_value=0, max_value=99_999))) for _ in range(n)]
    page: dict[str, Any] = {"object": "list", "data": data, "has_more": False, "next_cursor": None}
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        if data and draw(st.booleans()):
            target, field = (
                data[draw(st.integers(min_value=0, max_value=n - 1))],
                draw(st.sampled_from(sorted(RESULT_MUTATIONS))),
            )
            value = draw(st.sampled_from(RESULT_MUTATIONS[field]))
        else:
            target, field = page, draw(st.sampled_from(sorted(PAGE_MUTATIONS)))
            value = draw(st.sampled_from(PAGE_MUTATIONS[field]))
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            target.pop(field, None)
        else:
            target[field] = value
    return json.dumps(page).encode()


def _model_outcomes(raw: bytes) -> tuple[list[Any], bool, str | None]:
    page = Page[ItemResult].model_validate_json(raw)
    return [item_outcome(i) for i in page.data], page.has_more, page.next_cursor


@FAST
@given(item_pages())
def test_what_the_page_fast_path_accepts_the_model_accepts_with_the_same_values(raw: bytes) -> None:
    fast = wire.item_outcomes_page(raw)
    if fast is not None:
        assert fast == _model_outcomes(raw)


def test_the_pages_the_bank_writes_take_the_page_fast_path() -> None:
    raw = orjson.dumps(
        {"object": "list", "data": [_plain_result(n) for n in range(1000)], "has_more": True, "next_cursor": "c"}
    )
    fast = wire.item_outcomes_page(raw)
    assert fast is not None
    assert fast == _model_outcomes(raw)
    assert {status for _, _, _, status, _ in fast[0]} == {"credited", "rejected", "pending"}


@pytest.mark.parametrize(
    "change",
    [
        {"settled_at": "2026-11-29T01:00:00"},  # not aware: the model refuses it
        {"settled_at": "2026-02-30T00:00:00Z"},
        {"amount": 200.0},
        {"status": "CREDITED"},
        {"reason": "closed"},
    ],
)
def test_other_item_forms_and_errors_are_left_to_the_model(change: dict[str, Any]) -> None:
    raw = orjson.dumps({"data": [{**_plain_result(0), **change}], "has_more": False})
    assert wire.item_outcomes_page(raw) is None
