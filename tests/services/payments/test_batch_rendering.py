"""A batch's items are rendered by the database (``repository.mark_submitting``) as the port's models write them."""

from __future__ import annotations

import asyncpg
import orjson

from services.payments import repository as repo
from services.ports.bank import BatchItem, CreditBatch, RenderedCreditBatch


def _cci(n: int) -> str:
    return f"01808204082{n:07d}{n % 100:02d}"  # the form only: the rendering copies it, the bank checks it


async def _batch(conn: asyncpg.Connection, rows: list[tuple[str, str, int]]) -> int:
    """A run with one held batch of ``rows`` (DNI, CCI, amount); returns the run."""
    run_id: int = await conn.fetchval(
        """insert into payments.runs (program, period, status, currency, rule_version, batch_size, created_by)
           values ('JUNTOS', '2026-B5', 'approved', 'PEN', 1, 1000, 'maria') returning id"""
    )
    await conn.execute(
        """insert into payments.batches (run_id, batch_no, reference, idempotency_key, item_count, total, status)
           values ($1, 0, 'R' || $1::bigint || '-B0', 'run:' || $1::bigint || ':batch:0', $2, $3, 'held')""",
        run_id,
        len(rows),
        sum(amount for _, _, amount in rows),
    )
    await conn.executemany(
        """insert into payments.payments (run_id, batch_no, household_id, dni, cci, ubigeo, amount, breakdown)
           values ($1, 0, $2, $3, $4, '080206', $5, '{}')""",
        [(run_id, f"HH{k:07d}", dni, cci, amount) for k, (dni, cci, amount) in enumerate(rows)],
    )
    return run_id


Row = tuple[int, str, str, int]


def _model(run_id: int, rows: list[Row]) -> CreditBatch:
    """The batch as models, from ``(payment id, dni, cci, amount)`` in id order (not validated: the texts of the
    unusual rows are not DNIs)."""
    items = [
        BatchItem.model_construct(
            reference=repo.payment_reference(run_id, pid), dni=dni, amount=amount, account_number=None, cci=cci
        )
        for pid, dni, cci, amount in rows
    ]
    return CreditBatch.model_construct(
        reference=f"R{run_id}-B0",
        control_count=len(items),
        control_amount=sum(i.amount for i in items),
        items=items,
        description=None,
    )


async def _rendered(
    conn: asyncpg.Connection, run_id: int
) -> tuple[RenderedCreditBatch, list[tuple[int, str, str, int]]]:
    batch = await repo.mark_submitting(conn, run_id, 0)
    assert batch is not None
    assert (batch["items_count"], batch["items_total"]) == (batch["item_count"], batch["total"])
    payments = await conn.fetch(
        "select id, dni, cci, amount from payments.payments where run_id = $1 order by id", run_id
    )
    rendered = RenderedCreditBatch(batch["reference"], batch["item_count"], batch["total"], batch["items"])
    return rendered, [tuple(p) for p in payments]


async def test_a_snapshot_batch_is_rendered_byte_for_byte_as_the_model_writes_it(conn: asyncpg.Connection) -> None:
    rows = [(f"{10_000_000 + n:08d}", _cci(n), 200_00 + n) for n in (5, 1, 999_999, 42)]
    run_id = await _batch(conn, rows)
    rendered, payments = await _rendered(conn, run_id)
    assert rendered.to_json() == _model(run_id, payments).model_dump_json().encode()
    batch = await conn.fetchrow("select status, attempts from payments.batches where run_id = $1", run_id)
    assert tuple(batch) == ("submitting", 1)
    again, _ = await _rendered(conn, run_id)  # a resend: the attempt counted, the same content
    assert again == rendered
    assert await conn.fetchval("select attempts from payments.batches where run_id = $1", run_id) == 2
    await conn.execute("update payments.batches set status = 'acknowledged' where run_id = $1", run_id)
    assert await repo.mark_submitting(conn, run_id, 0) is None  # acknowledged meanwhile: nothing to send


async def test_texts_that_need_escaping_are_rendered_as_json_of_the_same_values(conn: asyncpg.Connection) -> None:
    """The registry lets only digits into a snapshot's DNI and CCI; were anything else there, the body would still
    be JSON carrying exactly those texts (which the bank then refuses, as it would the model's)."""
    rows = [("1011741\n", _cci(1), 100), ('10"1\\74', "ñandú\t018", 200), ("\u0001x", "</script>", 300)]
    run_id = await _batch(conn, rows)
    rendered, payments = await _rendered(conn, run_id)
    assert orjson.loads(rendered.to_json()) == orjson.loads(_model(run_id, payments).model_dump_json())
    assert [item["dni"] for item in orjson.loads(rendered.to_json())["items"]] == [dni for dni, _, _ in rows]
