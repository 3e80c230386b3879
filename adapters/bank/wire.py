"""Fast validation of the interface's large bodies: credit batches and bulk account openings (requests), and
pages of a batch's items (answers, :func:`item_outcomes_page`).

Validating a credit batch of 1,000 items with :class:`~services.ports.bank.CreditBatch` calls Python for
every item's DNI and CCI (their validators accept and clean several written forms, and verify CCI check
digits): about 17 ms a batch, 17 s for a million items. The bodies a payment run sends are in the plain form
(an 8-digit DNI, a 20-digit CCI), so the simulated bank first checks a body against a schema that
pydantic-core validates alone, in one pass over the JSON (the same references, amounts, limits and
patterns, unknown fields refused), then verifies the CCI check digits by table.

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
from operator import itemgetter
from typing import Annotated, Any, Final, NotRequired

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from adapters.bank.schemas import MAX_BULK_ACCOUNTS
from services.identifiers import InvalidIdentifier, normalize_ubigeo, plain_cci_is_valid
from services.ports.bank import (
    MAX_BATCH_ITEMS,
    AccountNumber,
    ItemOutcome,
    ItemStatus,
    PositiveCents,
    Reference,
    RejectReason,
    TitularName,
)

PlainDNI = Annotated[str, Field(pattern=r"^[0-9]{8}$")]
PlainCCI = Annotated[str, Field(pattern=r"^[0-9]{20}$")]
PlainUbigeo = Annotated[str, Field(pattern=r"^[0-9]{6}$")]


@with_config(ConfigDict(extra="forbid"))
class _Item(TypedDict):
    reference: Reference
    dni: PlainDNI
    amount: PositiveCents
    account_number: NotRequired[AccountNumber | None]
    cci: NotRequired[PlainCCI | None]


@with_config(ConfigDict(extra="forbid"))
class _Batch(TypedDict):
    reference: Reference
    control_count: Annotated[int, Field(strict=True, ge=1, le=MAX_BATCH_ITEMS)]
    control_amount: PositiveCents
    items: Annotated[list[_Item], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]
    description: NotRequired[Annotated[str, Field(max_length=140)] | None]


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


_BATCH: Final = TypeAdapter(_Batch)
_ITEM_FIELDS: Final = itemgetter("reference", "dni", "amount", "account_number", "cci")
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
    """
    try:
        body = _BATCH.validate_json(raw)
    except ValidationError:
        return None
    # Tuples, not lists: the garbage collector stops tracking a tuple of strings and numbers at its first
    # young collection, where a thousand lists would be promoted to the old generation (and count towards
    # its next full collection) before the request ends.
    try:
        items = list(map(_ITEM_FIELDS, body["items"]))  # every key present (this client sends them all)
    except KeyError:
        items = [(i["reference"], i["dni"], i["amount"], i.get("account_number"), i.get("cci")) for i in body["items"]]
    _, _, _, numbers, ccis = zip(*items, strict=True)
    # Exactly one target per item: as many None as items, and no item with both None (the same object twice).
    if numbers.count(None) + ccis.count(None) != len(items) or True in map(operator.is_, numbers, ccis):
        return None
    given = list(filter(None, ccis))
    if given and not ccis_are_valid(given):
        return None
    return {
        "reference": body["reference"],
        "description": body.get("description"),
        "control_count": body["control_count"],
        "control_amount": body["control_amount"],
        "items": items,
    }


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
