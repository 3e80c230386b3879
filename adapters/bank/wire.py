"""Fast validation of the interface's large bodies: credit batches and bulk account openings (requests), and
pages of a batch's items (answers, :func:`item_outcomes_page`).

Validating a credit batch of 1,000 items with :class:`~services.ports.bank.CreditBatch` calls Python for
every item's DNI and CCI (their validators accept and clean several written forms, and verify CCI check
digits): about 17 ms a batch, 17 s for a million items. The bodies a payment run sends are in the plain form
(an 8-digit DNI, a 20-digit CCI), so the simulated bank first checks a batch in that form a field at a time
across its items (the same references, amounts, limits and patterns, unknown fields refused), then verifies
the CCI check digits by table; a bulk opening against a schema that pydantic-core validates alone, in one
pass over the JSON.

The fast path only ever *accepts*. A body not in the plain form (a DNI with its check character, a CCI with
separators, a wrong check digit) or with any error gives None, and the caller validates it with the model,
which gives the exact normalisation or the exact error. Whatever the fast path accepts, the model accepts
with the same values (``tests/adapters/bank/test_bank_wire.py`` checks it on generated bodies).
"""

from __future__ import annotations

import gc
import operator
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import repeat
from typing import Annotated, Any, Final

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from adapters.bank.schemas import MAX_BULK_ACCOUNTS
from services.identifiers import InvalidIdentifier, normalize_ubigeo, plain_cci_is_valid
from services.ports.bank import (
    MAX_BATCH_ITEMS,
    REFERENCE_PATTERN,
    ItemOutcome,
    ItemStatus,
    RejectReason,
    TitularName,
)

PlainDNI = Annotated[str, Field(pattern=r"^[0-9]{8}$")]
PlainUbigeo = Annotated[str, Field(pattern=r"^[0-9]{6}$")]


@with_config(ConfigDict(extra="forbid"))
class _Account(TypedDict):
    dni: PlainDNI
    name: TitularName
    ubigeo: PlainUbigeo


@with_config(ConfigDict(extra="forbid"))
class _Accounts(TypedDict):
    accounts: Annotated[list[_Account], Field(min_length=1, max_length=MAX_BULK_ACCOUNTS)]


@contextmanager
def paused_gc() -> Iterator[None]:
    """Hold the cyclic garbage collector during a bulk step that creates many objects and no cycles.

    Parsing a page of 1,000 items or a bulk answer of 50,000 accounts creates thousands of container
    objects at once; collections in the middle of it find nothing to free, but promote what was just made
    to the older generations, whose collections walk every object of the process (a large share of the
    time at a million items). Meant for synchronous steps only (no ``await`` inside), so nothing else runs
    while the collector waits; the previous state is restored (an application that disabled the collector
    keeps it disabled), and reference counting frees memory as usual meanwhile.
    """
    if not gc.isenabled():
        yield
        return
    # The collection that follows the step is a young one, unless the middle generation is due (CPython
    # collects it every ``threshold1`` young collections): that one would promote everything just made to
    # the old generation, where each object counts towards the next full collection. So when it is nearly
    # due, it runs now, before the step, while there is little to promote.
    if gc.get_count()[1] >= gc.get_threshold()[1] - 1:
        gc.collect(1)
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# A credit batch's fields and its items', all and required (``CreditBatch``, ``BatchItem``), and the patterns of
# its texts: a reference (1 to 64 characters), many references one to a line, digits.
_BATCH_FIELDS: Final = frozenset(("reference", "control_count", "control_amount", "items", "description"))
_BATCH_REQUIRED: Final = frozenset(("reference", "control_count", "control_amount", "items"))
_ITEM_KEYS: Final = frozenset(("reference", "dni", "amount", "account_number", "cci"))
_ITEM_REQUIRED: Final = frozenset(("reference", "dni", "amount"))
_REFERENCE: Final = re.compile(REFERENCE_PATTERN)
_REFERENCE_LINES: Final = re.compile(rf"(?:{REFERENCE_PATTERN}\n)+")
_TEXT_OR_NONE: Final = frozenset((str, type(None)))
_ACCOUNTS: Final = TypeAdapter(_Accounts)


def ccis_are_valid(ccis: list[str]) -> bool:
    """Whether every one of these 20-digit strings carries the right CCI check digits.

    The same check as :func:`services.identifiers.normalize_cci` on a plain 20-digit CCI, by table
    (:func:`services.identifiers.plain_cci_is_valid`): about 1 µs a CCI.
    """
    return all(map(plain_cci_is_valid, ccis))


def credit_batch_payload(raw: bytes) -> dict[str, Any] | None:
    """A credit batch body in the plain form, as the simulated bank records it; None otherwise.

    Returns:
        ``{"reference", "description", "control_count", "control_amount", "items"}`` with each item as
        ``(reference, dni, amount, account_number, cci)``: exactly what validating ``raw`` with
        ``CreditBatch`` gives; or None when ``raw`` is not a valid batch in the plain form (validate it with
        the model then).

    Parsed by ``orjson`` and checked a field at a time across the items (their types as a set, their texts
    by one pattern or test over all of them): a batch of 1,000 in 2.8 to 3.3 ms, against 3.4 to 4.5 ms with
    pydantic-core validating the same schema (the CCIs' check digits are about 1 ms of either). A key given
    twice counts once, the last, as for the model.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict or not _BATCH_REQUIRED <= body.keys() <= _BATCH_FIELDS:
        return None
    reference, count, total, items = body["reference"], body["control_count"], body["control_amount"], body["items"]
    description = body.get("description")
    if (
        type(reference) is not str
        or not _REFERENCE.fullmatch(reference)
        or type(count) is not int
        or not 1 <= count <= MAX_BATCH_ITEMS
        or type(total) is not int
        or total <= 0
        or (description is not None and (type(description) is not str or len(description) > 140))
        or type(items) is not list
        or not 1 <= len(items) <= MAX_BATCH_ITEMS
        or set(map(type, items)) != {dict}
        or not all(_ITEM_REQUIRED <= keys <= _ITEM_KEYS for keys in set(map(frozenset, items)))
    ):
        return None
    columns: list[tuple[Any, ...]] = [tuple(map(dict.get, items, repeat(key))) for key in _ITEM_ORDER]
    references, dnis, amounts, numbers, ccis = columns
    if (
        set(map(type, references + dnis)) != {str}
        or set(map(type, amounts)) != {int}
        or min(amounts) <= 0
        or not set(map(type, numbers + ccis)) <= _TEXT_OR_NONE
        or not _REFERENCE_LINES.fullmatch("\n".join(references) + "\n")
        or not _digits(dnis, 8)
    ):
        return None
    # Exactly one target per item: as many None as items, and no item with both None (the same object twice).
    if numbers.count(None) + ccis.count(None) != len(items) or True in map(operator.is_, numbers, ccis):
        return None
    given_numbers, given = list(filter(None, numbers)), list(filter(None, ccis))
    if len(given_numbers) + len(given) != len(items):  # an empty text is no target, and not the pattern's
        return None
    if not _digits(given_numbers, 12) or not _digits(given, 20) or (given and not ccis_are_valid(given)):
        return None
    # Tuples, not lists: the garbage collector stops tracking a tuple of strings and numbers at its first
    # young collection, where a thousand lists would be promoted to the old generation (and count towards
    # its next full collection) before the request ends.
    return {
        "reference": reference,
        "description": description,
        "control_count": count,
        "control_amount": total,
        "items": list(zip(references, dnis, amounts, numbers, ccis, strict=True)),
    }


_ITEM_ORDER: Final = ("reference", "dni", "amount", "account_number", "cci")


def _digits(texts: list[str] | tuple[str, ...], length: int) -> bool:
    """Whether every text is ``length`` ASCII digits (an empty list: True)."""
    if not texts:
        return True
    joined = "".join(texts)
    return set(map(len, texts)) == {length} and joined.isascii() and joined.isdigit()


_STATUSES: Final = frozenset(s.value for s in ItemStatus)
_REASONS: Final = frozenset(r.value for r in RejectReason)
_AWARE_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)


def item_outcomes_page(raw: bytes) -> tuple[list[ItemOutcome], bool, str | None] | None:
    """A page of batch items (``Page[ItemResult]`` as JSON) as ``(outcomes, has_more, next_cursor)``; None
    when anything in it is not in the plain form the bank writes (parse it with the model then).

    Every field the model checks is checked the same way or more strictly (unknown fields are ignored, as the
    model ignores them): what this accepts, the model accepts with the same values
    (``tests/adapters/bank/test_bank_wire.py`` checks it on generated pages). About a third of the model's
    time, and no model objects.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict:
        return None
    data, has_more, cursor = body.get("data"), body.get("has_more"), body.get("next_cursor")
    if body.get("object", "list") != "list" or type(data) is not list or type(has_more) is not bool:
        return None
    if cursor is not None and type(cursor) is not str:
        return None
    statuses, reasons, aware = _STATUSES, _REASONS, _AWARE_TIME.fullmatch
    out: list[ItemOutcome] = []
    append = out.append
    times: set[str] = set()  # instants found valid
    for d in data:
        if type(d) is not dict:
            return None
        try:
            item_id, batch_id, reference, amount, status = (
                d["id"],
                d["batch_id"],
                d["reference"],
                d["amount"],
                d["status"],
            )
        except KeyError:
            return None
        reason, account, line, settled = (
            d.get("reason"),
            d.get("account_id"),
            d.get("statement_line_id"),
            d.get("settled_at"),
        )
        if (
            type(item_id) is not str
            or type(batch_id) is not str
            or type(reference) is not str
            or type(amount) is not int
            or type(status) is not str
            or status not in statuses
            or (reason is not None and (type(reason) is not str or reason not in reasons))
            or (account is not None and type(account) is not str)
            or (line is not None and type(line) is not str)
            or d.get("object", "credit_item") != "credit_item"
        ):
            return None
        if settled is not None:
            if type(settled) is not str:
                return None
            if settled not in times:  # a batch's items settle at a few instants
                if aware(settled) is None:
                    return None
                try:
                    datetime.fromisoformat(settled)
                except ValueError:
                    return None
                times.add(settled)
        append((reference, item_id, amount, status, reason))
    return out, has_more, cursor


def bulk_account_rows(raw: bytes) -> list[tuple[str, str, str]] | None:
    """A bulk account opening body in the plain form as ``(dni, name, ubigeo)`` rows; None otherwise.

    Returns:
        What validating ``raw`` with ``BulkAccounts`` gives, or None when ``raw`` is not a valid body in the
        plain form (validate it with the model then).
    """
    try:
        body = _ACCOUNTS.validate_json(raw)
    except ValidationError:
        return None
    rows = [(a["dni"], a["name"], a["ubigeo"]) for a in body["accounts"]]
    try:
        if any(normalize_ubigeo(code) != code for code in {row[2] for row in rows}):
            return None
    except InvalidIdentifier:
        return None
    return rows
