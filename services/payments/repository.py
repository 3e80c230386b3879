"""Every query of the payment runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ledger import cursors
from ledger.db import Connection, affected_rows
from services.identifiers import BN_BANK_CODE
from services.payments.errors import RunIncident, RunNotFound
from services.ports.bank import CREDIT_ITEM_BY_CCI

RUN_COLUMNS = """id, program, period, status, currency, rule_version, batch_size, payments_count, payments_total,
    accrued_count, accrued_total, exclusions, batches_count, created_by, created_at, approved_by, approved_at,
    executed_by, execution_started_at, settled_at, closed_by, closed_at"""


def payment_reference_prefix(run_id: int) -> str:
    """What every payment reference of a run starts with: the payment id follows."""
    return f"R{run_id}-P"


def payment_reference(run_id: int, payment_id: int) -> str:
    """Our stable reference of a payment at the bank."""
    return f"{payment_reference_prefix(run_id)}{payment_id}"


def batch_reference(run_id: int, batch_no: int) -> str:
    return f"R{run_id}-B{batch_no:05d}"


def batch_key(run_id: int, batch_no: int) -> str:
    """The batch's idempotency key at the bank: derived from the run and batch number, never the clock."""
    return f"run:{run_id}:batch:{batch_no}"


def _run_not_found(run_id: int) -> RunNotFound:
    return RunNotFound(
        f"payment run {run_id} not found; list runs with `cct-ledger runs list` (GET /v1/payment-runs)", run=run_id
    )


async def get_run(conn: Connection, run_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(f"select {RUN_COLUMNS} from payments.runs where id = $1", run_id)
    if row is None:
        raise _run_not_found(run_id)
    return dict(row)


async def lock_run(conn: Connection, run_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(f"select {RUN_COLUMNS} from payments.runs where id = $1 for update", run_id)
    if row is None:
        raise _run_not_found(run_id)
    return dict(row)


async def list_runs(conn: Connection, *, program: str | None, limit: int, before: int | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"""select {RUN_COLUMNS} from payments.runs
             where ($1::text is null or program = $1) and ($2::bigint is null or id < $2)
             order by id desc limit $3""",
        program,
        before,
        limit,
    )
    return [dict(r) for r in rows]


async def page_of_runs(
    conn: Connection, *, program: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of runs, newest first, and the cursor of the next page (None: the last page).

    Raises:
        InvalidCursor: ``cursor`` is not a next_cursor of this list.
    """
    before = cursors.decode_int(cursor, "r1") if cursor else None
    runs = await list_runs(conn, program=program, limit=limit + 1, before=before)
    more = len(runs) > limit
    runs = runs[:limit]
    return runs, (cursors.encode_cursor("r1", runs[-1]["id"]) if more else None)


async def household_payments(conn: Connection, household_id: str) -> dict[str, list[dict[str, Any]]]:
    """What a household was paid, newest run first, and what it is owed: its entitlements still accruing.

    Read through the runs' and programs' keys, so the payments' ``(run_id, household_id)`` and the
    entitlements' ``(program, household_id, period)`` indexes answer (no index by household alone: it would
    cost every run's creation a million index entries).
    """
    payments = await conn.fetch(
        """select s.run_id as run, r.program, r.period, r.currency, s.amount, s.status, s.reason, s.ledger_transfer_id,
                  s.settled_at, coalesce((select array_agg(k order by k) from jsonb_object_keys(s.breakdown) k),
                                         '{}') as periods
             from payments.payment_states s join payments.runs r on r.id = s.run_id
            where s.run_id = any(array(select id from payments.runs)) and s.household_id = $1
            order by s.run_id desc""",
        household_id,
    )
    accrued = await conn.fetch(
        """select e.program, e.period, g.currency, e.amount
             from payments.entitlements e join programs.programs g on g.code = e.program
            where e.program = any(array(select code::text from programs.programs))
              and e.household_id = $1 and e.payment_id is null
            order by e.program, e.period""",
        household_id,
    )
    return {
        "payments": [
            {
                **dict(p),
                "settled_at": p["settled_at"].isoformat() if p["settled_at"] else None,
                "periods": list(p["periods"]),
            }
            for p in payments
        ],
        "accrued": [dict(a) for a in accrued],
    }


async def compliance_records(conn: Connection, program: str, period: str) -> int:
    """How many compliance records (verifications) the registry holds for the program and period."""
    n: int = await conn.fetchval(
        "select count(*) from registry.compliance where program = $1 and period = $2", program, period
    )
    return n


async def event(conn: Connection, run_id: int, actor: str, name: str, detail: dict[str, Any]) -> None:
    await conn.execute(
        "insert into payments.run_events (run_id, actor, event, detail) values ($1, $2, $3, $4)",
        run_id,
        actor,
        name,
        detail,
    )


async def events(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "select at, actor, event, detail from payments.run_events where run_id = $1 order by id", run_id
    )
    return [dict(r) for r in rows]


async def count_exclusions(conn: Connection) -> dict[str, dict[str, int]]:
    """Households left out of the period, by reason (from the computed entitlements, ``run_entitlements``)."""
    rows = await conn.fetch(
        """select coalesce(r.exclusion, 'already_paid') as reason, count(*) as n
             from run_entitlements r
            where r.exclusion is not null or r.already
            group by 1"""
    )
    return {r["reason"]: {"count": r["n"], "total": 0} for r in rows}


HOUSEHOLDS_IN_PART = "($LO::text is null or {col} >= $LO) and ($HI::text is null or {col} < $HI)"
"""The households of a run's part: codes from its lower bound (inclusive) to its upper bound (exclusive), either
missing at the ends (``$LO`` and ``$HI`` are replaced by the statement's parameter numbers)."""


def households_in_part(column: str, lo: int, hi: int) -> str:
    """:data:`HOUSEHOLDS_IN_PART` for ``column``, with the bounds as parameters ``$lo`` and ``$hi``."""
    return HOUSEHOLDS_IN_PART.format(col=column).replace("$LO", f"${lo}").replace("$HI", f"${hi}")


async def snapshot_accrued(conn: Connection, program: str, lower: str | None, upper: str | None) -> None:
    """Take the program's accrued entitlements (carried by no payment) of the households from ``lower`` to
    ``upper`` (a part of the run; None: no bound) as they are now into ``run_older``: the part's payments
    include exactly these, and :func:`claim_accrued` claims exactly these."""
    await conn.execute("drop table if exists run_older")
    await conn.execute(
        f"""create temp table run_older on commit drop as
           select e.household_id, e.period, e.amount, e.breakdown from payments.entitlements e
            where e.program = $1 and e.payment_id is null and {households_in_part("e.household_id", 2, 3)}""",
        program,
        lower,
        upper,
    )
    await conn.execute("analyze run_older")  # a few rows or a million: the joins below plan on the count


async def insert_payments_and_entitlements(
    conn: Connection, run_id: int, program: str, period: str, batch_size: int, part: int = 0, parts: int = 1
) -> tuple[int, int]:
    """One statement: the payments (one per household with a usable account: this period plus everything
    accrued before, in ``run_older``) and the period's entitlements, pointing at the payment that carries them
    (null: accrued, for a household with no usable account yet).

    A usable account is a Banco de la Nación CCI (bank code ``018``): the program pays into its savings
    accounts, and the bank refuses a whole batch that names another bank's account. A household registered
    with another bank's CCI accrues, as one with no CCI does, until the registry gives it one at the bank.

    Reads only ``run_entitlements`` (which carries each household's account and whether it already has an
    entitlement for the period) and ``run_older``, plus the registry for a household paid only what it had
    accrued. Payment ids are drawn from the payments' own sequence in that pass, so both tables are written
    without joining the new payments back, and it never reads a table it writes (a rescan of one growing under
    it would be quadratic). Batches are numbered in the same pass (``batch_size`` a batch), in the order rows
    come; reports order payments themselves. The ``part``-th of ``parts`` numbers its batches ``part``,
    ``part + parts``, ``part + 2 × parts``…, so parts written at once or resumed apart never share a number.

    Returns:
        ``(payments, total)``: how many payments it wrote and their sum.
    """
    id_sequence = await conn.fetchval("select pg_get_serial_sequence('payments.payments', 'id')")
    row = await conn.fetchrow(
        """with cur as (
               select r.household_id, r.amount, r.breakdown, r.rule_version, r.titular_dni, r.cci, r.ubigeo
                 from run_entitlements r
                where r.exclusion is null and r.amount > 0 and not r.already),
           older as (
               select a.household_id, a.amount, a.breakdown, h.titular_dni, h.cci, h.ubigeo
                 from (select o.household_id, sum(o.amount)::bigint as amount,
                              jsonb_object_agg(o.period, o.breakdown || jsonb_build_object('amount', o.amount))
                                  as breakdown
                         from run_older o
                        group by o.household_id) a
                 left join registry.households h on h.household_id = a.household_id),
           due as (
               select coalesce(c.household_id, o.household_id) as household_id,
                      c.amount as current_amount, c.breakdown as current_breakdown, c.rule_version,
                      coalesce(c.amount, 0) + coalesce(o.amount, 0) as amount,
                      case when o.household_id is null
                               then jsonb_build_object($2::text, c.breakdown || jsonb_build_object('amount', c.amount))
                           when c.household_id is null then o.breakdown
                           else o.breakdown
                                || jsonb_build_object($2::text, c.breakdown || jsonb_build_object('amount', c.amount))
                      end as breakdown,
                      case when c.household_id is null then o.titular_dni else c.titular_dni end as dni,
                      case when c.household_id is null then o.cci else c.cci end as cci,
                      case when c.household_id is null then o.ubigeo else c.ubigeo end as ubigeo
                 from cur c full join older o on o.household_id = c.household_id),
           numbered as materialized (  -- read twice: each row's id is drawn once, whatever the planner does
               select d.*, case when left(d.cci, 3) = $6 and d.amount > 0
                                then nextval($5::regclass) end as payment_id
                 from due d),
           paid as (
               insert into payments.payments (id, run_id, batch_no, household_id, dni, cci, ubigeo, amount, breakdown)
               overriding system value
               select n.payment_id, $3, $7 + $8 * (((row_number() over ()) - 1) / $4), n.household_id, n.dni,
                      n.cci, n.ubigeo, n.amount, n.breakdown
                 from numbered n
                where n.payment_id is not null
               returning amount),
           owed as (
               insert into payments.entitlements (program, household_id, period, amount, breakdown, rule_version,
                                                  run_id, payment_id)
               select $1, n.household_id, $2, n.current_amount, n.current_breakdown, n.rule_version, $3, n.payment_id
                 from numbered n
                where n.current_amount is not null)
           select count(*) as n, coalesce(sum(amount), 0)::bigint as total from paid""",
        program,
        period,
        run_id,
        batch_size,
        id_sequence,
        BN_BANK_CODE,
        part,
        parts,
    )
    assert row is not None
    return int(row["n"]), int(row["total"])


async def claim_accrued(conn: Connection, run_id: int, program: str) -> None:
    """Point the accrued entitlements the payments include (``run_older``) at them, every one of them.

    Each payment is its period's entitlement plus exactly the accrued ones of its household taken by
    :func:`snapshot_accrued`, so it equals the sum of the entitlements it carries once each of those is
    claimed. One released meanwhile (a rejection in another run's settlement) is not in ``run_older``: it
    stays accrued, for the next run. One claimed meanwhile cannot be (runs of a program are created one at
    a time); if it were, the counts differ and nothing is created.
    """
    status: str = await conn.execute(
        """update payments.entitlements e set payment_id = p.id
             from run_older o join payments.payments p on p.run_id = $1 and p.household_id = o.household_id
            where e.program = $2 and e.household_id = o.household_id and e.period = o.period
              and e.payment_id is null""",
        run_id,
        program,
    )
    claimed = affected_rows(status)
    expected: int = await conn.fetchval(
        """select count(*) from run_older o
             join payments.payments p on p.run_id = $1 and p.household_id = o.household_id""",
        run_id,
    )
    if claimed != expected:
        raise RunIncident(
            f"{expected - claimed} accrued entitlement(s) included in this run's payments were claimed by another "
            "run meanwhile; this part of the run was not written: create the run again to resume it",
            expected=expected,
            claimed=claimed,
        )


async def part_bounds(conn: Connection, program: str, parts: int, min_households: int) -> list[str]:
    """Household codes that split the program's registry into at most ``parts`` parts of about the same size,
    each of at least ``min_households`` households (so none for a small registry: one part)."""
    households: int = await conn.fetchval("select count(*) from registry.households where program = $1", program)
    parts = max(1, min(parts, households // max(1, min_households)))
    bounds: list[str] = []
    for k in range(1, parts):
        bound = await conn.fetchval(
            """select household_id::text from registry.households where program = $1
                order by household_id offset $2 limit 1""",
            program,
            households * k // parts,
        )
        if bound is not None and (not bounds or bound > bounds[-1]):
            bounds.append(bound)
    return bounds


async def record_part(
    conn: Connection,
    run_id: int,
    part: int,
    payments: tuple[int, int],
    batch_size: int,
    exclusions: dict[str, dict[str, int]],
) -> None:
    """Record a written part of a run (in the part's transaction): a second record of it is refused by the
    primary key, so a part is written once."""
    count, total = payments
    await conn.execute(
        """insert into payments.run_parts (run_id, part, payments_count, payments_total, batches_count, exclusions)
           values ($1, $2, $3, $4, $5, $6)""",
        run_id,
        part,
        count,
        total,
        -(-count // batch_size),
        exclusions,
    )


async def parts_of(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "select part, payments_count, payments_total, batches_count, exclusions from payments.run_parts "
        "where run_id = $1 order by part",
        run_id,
    )
    return [dict(r) for r in rows]


async def plan_batches(conn: Connection, run_id: int) -> dict[str, int]:
    await conn.execute(
        """insert into payments.batches (run_id, batch_no, reference, idempotency_key, item_count, total)
           select $1::bigint, batch_no, 'R' || $1::bigint::text || '-B' || lpad(batch_no::text, 5, '0'),
                  'run:' || $1::bigint::text || ':batch:' || batch_no, count(*), sum(amount)::bigint
             from payments.payments where run_id = $1::bigint group by batch_no order by batch_no""",
        run_id,
    )
    row = await conn.fetchrow(
        "select count(*) as batches, coalesce(sum(item_count), 0)::bigint as count, "
        "coalesce(sum(total), 0)::bigint as total from payments.batches where run_id = $1",
        run_id,
    )
    assert row is not None
    return {"batches": row["batches"], "count": row["count"], "total": row["total"]}


async def accrued_of_run(conn: Connection, run_id: int, program: str, period: str) -> dict[str, int]:
    row = await conn.fetchrow(
        """select count(*) as n, coalesce(sum(amount), 0)::bigint as total from payments.entitlements
            where program = $1 and period = $2 and run_id = $3 and payment_id is null""",
        program,
        period,
        run_id,
    )
    assert row is not None
    return {"count": row["n"], "total": row["total"]}


async def batches(conn: Connection, run_id: int, statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """select * from payments.batches where run_id = $1 and ($2::text[] is null or status = any($2))
            order by batch_no""",
        run_id,
        list(statuses) if statuses else None,
    )
    return [dict(r) for r in rows]


def _by_batch(rows: Sequence[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    """Rows grouped by their ``batch_no``, each batch's in the rows' order."""
    out: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["batch_no"], []).append(r)
    return out


async def batches_payments(conn: Connection, run_id: int, batch_nos: list[int]) -> dict[int, list[Mapping[str, Any]]]:
    """Several batches' payments in one read, each batch's in id order: what settlement checks (id,
    household, amount; not the account details sent to the bank).

    Each batch is read by a probe of ``(run_id, batch_no)``, as one batch alone is. Written as ``batch_no =
    any(...)`` (one index scan for the ten batches, planned on statistics taken before the run's million rows
    existed), the read touched about 6,100 blocks a call at a million households; probed, about 340
    (``pg_stat_statements``, docs/performance.md).
    """
    rows = await conn.fetch(
        """select b.n as batch_no, p.id, p.household_id, p.amount
             from unnest($2::int[]) as b(n)
             cross join lateral (select p.id, p.household_id, p.amount from payments.payments p
                                  where p.run_id = $1 and p.batch_no = b.n offset 0) p
            order by b.n, p.id""",
        run_id,
        batch_nos,
    )
    return _by_batch(rows)


async def settlement_payments(
    conn: Connection, run_id: int, batch_nos: list[int], account_code: tuple[str, str]
) -> dict[int, list[Mapping[str, Any]]]:
    """:func:`batches_payments` with each household's ledger account id, for settling the batches.

    ``account_code`` is the prefix and suffix of a household's account code around its household id
    (``household:<id>:savings``); ``account_id`` is None where that account does not exist yet. Each account
    is found by a probe of its code in the same read, where looking the codes up inside the settling
    transaction cost a ``COPY`` of the codes into a work table besides the same probes.
    """
    rows = await conn.fetch(
        """select b.n as batch_no, p.id, p.household_id, p.amount, a.id as account_id
             from unnest($2::int[]) as b(n)
             cross join lateral (select p.id, p.household_id, p.amount from payments.payments p
                                  where p.run_id = $1 and p.batch_no = b.n offset 0) p
             left join lateral (select a.id from ledger.accounts a
                                 where a.code = $3::text || p.household_id || $4::text limit 1) a on true
            order by b.n, p.id""",
        run_id,
        batch_nos,
        *account_code,
    )
    return _by_batch(rows)


async def mark_submitting(conn: Connection, run_id: int, batch_no: int) -> Mapping[str, Any] | None:
    """Count a submission attempt of a batch still to send, and render its items for the bank, in one statement.

    Returns the batch (reference, idempotency key, control totals) with its payments as the bank takes them:
    ``items`` (each payment a JSON item by CCI, :data:`services.ports.bank.CREDIT_ITEM_BY_CCI`, in id order,
    joined by commas), ``items_count`` and ``items_total`` (their number and sum, from the same rows); or None
    if the batch is no longer held or submitting (acknowledged meanwhile).

    The items are rendered here, not in this process: a thousand records decoded, tuples made and JSON
    written cost the executor 2.5 to 2.9 ms a batch, the database about 1 ms (docs/performance.md).
    """
    row: Mapping[str, Any] | None = await conn.fetchrow(
        """with b as (
               update payments.batches set status = 'submitting', attempts = attempts + 1,
                      submitted_at = coalesce(submitted_at, clock_timestamp())
                where run_id = $1 and batch_no = $2 and status in ('held', 'submitting')
            returning reference, idempotency_key, item_count, total)
           select b.reference, b.idempotency_key, b.item_count, b.total, p.items, p.items_count, p.items_total
             from b cross join lateral (
                  select string_agg(format($3::text, to_json($4::text || p.id), to_json(p.dni), p.amount,
                                           to_json(p.cci)), ',' order by p.id) as items,
                         count(*) as items_count, coalesce(sum(p.amount), 0)::bigint as items_total
                    from payments.payments p where p.run_id = $1 and p.batch_no = $2) p""",
        run_id,
        batch_no,
        CREDIT_ITEM_BY_CCI,
        payment_reference_prefix(run_id),
    )
    return row


Outcome = tuple[int, str, str | None, str, int | None]
"""A payment's outcome row: payment id, status, reason, the bank's item id, its ledger credit transfer."""


async def write_outcomes(conn: Connection, records: Sequence[Outcome]) -> None:
    """Write payments' outcomes, one narrow row each (the snapshot is never updated); a second outcome for a
    payment is refused by the primary key.

    COPY, not an INSERT of arrays: encoding five arrays cost 3.4 to 3.8 µs of this process a row, the COPY's
    records 0.5 to 1.1 (docs/performance.md); the table's triggers fire the same.
    """
    await conn.copy_records_to_table(
        "outcomes",
        schema_name="payments",
        columns=["payment_id", "status", "reason", "bank_item_id", "ledger_transfer_id"],
        records=records,
    )


async def release_entitlements(conn: Connection, payment_ids: Sequence[int]) -> None:
    """The entitlements these (rejected) payments carried accrue again, for the next run."""
    if payment_ids:
        await conn.execute(
            "update payments.entitlements set payment_id = null where payment_id = any($1::bigint[])",
            list(payment_ids),
        )


async def close_batches(conn: Connection, run_id: int, totals: Sequence[tuple[int, int, int, int, int]]) -> None:
    """Close batches with their totals: ``(batch number, credited count, credited total, rejected count,
    rejected total)`` each."""
    await conn.execute(
        """update payments.batches b set status = 'closed', closed_at = clock_timestamp(),
                  credited_count = t.cn, credited_total = t.cs, rejected_count = t.rn, rejected_total = t.rs
             from unnest($2::int[], $3::int[], $4::bigint[], $5::int[], $6::bigint[]) as t(n, cn, cs, rn, rs)
            where b.run_id = $1 and b.batch_no = t.n""",
        run_id,
        *[list(col) for col in zip(*totals, strict=True)],
    )


async def incident(
    conn: Connection,
    run_id: int,
    kind: str,
    detail: dict[str, Any],
    batch_no: int | None = None,
    payment_id: int | None = None,
) -> None:
    await conn.execute(
        """insert into payments.incidents (run_id, batch_no, payment_id, kind, detail)
           values ($1, $2, $3, $4, $5)""",
        run_id,
        batch_no,
        payment_id,
        kind,
        detail,
    )


async def incidents(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "select batch_no, payment_id, kind, detail, at from payments.incidents where run_id = $1 order by id", run_id
    )
    return [dict(r) for r in rows]
