"""Read-side of the simulated bank: the paginated lists of the interface.

Cursors are the id of the last object of the previous page (``next_cursor``); pages are in creation order,
and a list's ``has_more`` says whether another page exists. Statement lines are appended in simulated-time
order, so a date range is a binary search over their posting times.
"""

from __future__ import annotations

import bisect
from datetime import date, timedelta
from typing import Any

from adapters.bank.simulator import ids
from adapters.bank.simulator.core import LINE_TYPES, STATUS_NAMES, SimError, SimulatedBank


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "next_cursor": data[-1]["id"] if has_more and data else None,
    }


def _cursor(codec: ids.IdCodec, cursor: str | None) -> int:
    """The seq after which a page starts (-1 for the first page)."""
    if cursor is None:
        return -1
    seq = codec.decode(cursor)
    if seq is None:
        raise SimError(400, "invalid_request_error", "parameter_invalid", f"not a {codec.prefix} cursor", "cursor")
    return seq


def batch_items(bank: SimulatedBank, batch: int, status: str | None, cursor: str | None, limit: int) -> bytes:
    """A page of a batch's items (JSON bytes), optionally of one status."""
    b = bank.batches[batch]
    after = _cursor(ids.ITEM, cursor)
    end = b.start + b.count
    if after >= 0 and not b.start <= after < end:
        raise SimError(400, "invalid_request_error", "parameter_invalid", "the cursor is not from this batch", "cursor")
    first = max(b.start, after + 1)
    if status is None:
        chosen = range(first, min(end, first + limit))
        has_more = first + limit < end
    else:
        wanted = STATUS_NAMES.index(status)
        item_status = bank.item_status
        picked: list[int] = []
        has_more = False
        for i in range(first, end):
            if item_status[i] == wanted:
                if len(picked) == limit:
                    has_more = True
                    break
                picked.append(i)
        chosen = picked  # type: ignore[assignment]
    return bank.items_page(chosen, has_more)


def batches(
    bank: SimulatedBank, reference: str | None, cursor: str | None, limit: int, status: str | None = None
) -> dict[str, Any]:
    """A page of batches in submission order, or the batch with ``reference``; ``status`` keeps those in it."""
    if reference is not None:
        seq = bank.batch_by_ref.get(reference)
        found = seq is not None and (status is None or bank.batches[seq].status == status)
        return _page([bank.batch_json(seq)] if found and seq is not None else [], False)
    first = _cursor(ids.BATCH, cursor) + 1
    if status is None:
        end = min(len(bank.batches), first + limit)
        return _page([bank.batch_json(seq) for seq in range(first, end)], end < len(bank.batches))
    picked: list[int] = []
    has_more = False
    for seq in range(max(first, 0), len(bank.batches)):
        if bank.batches[seq].status == status:
            if len(picked) == limit:
                has_more = True
                break
            picked.append(seq)
    return _page([bank.batch_json(seq) for seq in picked], has_more)


def statement_lines(
    bank: SimulatedBank,
    account: int | None,
    from_date: date | None,
    to_date: date | None,
    line_type: str | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """A page of statement lines: one account's (``account``) or all, by value date and type."""
    clock = bank.clock
    start = clock.first_second_of(from_date) if from_date is not None else None
    stop = clock.first_second_of(to_date + timedelta(days=1)) if to_date is not None and to_date < date.max else None
    after = _cursor(ids.LINE, cursor)
    wanted = LINE_TYPES.index(line_type) if line_type is not None else None
    ln_type = bank.ln_type
    ln_time = bank.ln_time
    data: list[dict[str, Any]] = []
    has_more = False
    if account is not None:
        for seq in bank.account_lines(account):
            t = ln_time[seq]
            if seq <= after or (start is not None and t < start) or (wanted is not None and ln_type[seq] != wanted):
                continue
            if stop is not None and t >= stop:
                break
            if len(data) == limit:
                has_more = True
                break
            data.append(bank.line_json(seq))
        return _page(data, has_more)
    lo = bisect.bisect_left(ln_time, start) if start is not None else 0
    hi = bisect.bisect_left(ln_time, stop) if stop is not None else len(ln_time)
    for seq in range(max(lo, after + 1), hi):
        if wanted is not None and ln_type[seq] != wanted:
            continue
        if len(data) == limit:
            has_more = True
            break
        data.append(bank.line_json(seq))
    return _page(data, has_more)


def events(bank: SimulatedBank, cursor: str | None, limit: int) -> dict[str, Any]:
    """A page of events, oldest first."""
    first = _cursor(ids.EVENT, cursor) + 1
    end = min(len(bank.events), first + limit)
    return _page([bank.event_json(seq) for seq in range(first, end)], end < len(bank.events))
