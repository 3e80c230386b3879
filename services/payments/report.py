"""The run report: what was paid, rejected (by reason), accrued and left out, with totals by district.

``summary`` is for the screen and the API; ``write_csv`` writes one line per payment (DNI and CCI masked)
followed by nothing else, streamed from the database so a million lines never sit in memory.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ledger.db import Connection
from ledger.money import Money
from services.identifiers import district_name
from services.logs import mask_value
from services.payments import repository as repo

DEPARTMENTS = {
    "01": "Amazonas", "02": "Áncash", "03": "Apurímac", "04": "Arequipa", "05": "Ayacucho", "06": "Cajamarca",
    "07": "Callao", "08": "Cusco", "09": "Huancavelica", "10": "Huánuco", "11": "Ica", "12": "Junín",
    "13": "La Libertad", "14": "Lambayeque", "15": "Lima", "16": "Loreto", "17": "Madre de Dios", "18": "Moquegua",
    "19": "Pasco", "20": "Piura", "21": "Puno", "22": "San Martín", "23": "Tacna", "24": "Tumbes", "25": "Ucayali",
}  # fmt: skip


def department_name(ubigeo: str) -> str:
    return DEPARTMENTS.get(ubigeo[:2], ubigeo[:2])


async def summary(conn: Connection, run_id: int, districts: int = 10) -> dict[str, Any]:
    """Counts and totals of a run, its rejections by reason, and the districts paid most."""
    run = await repo.get_run(conn, run_id)
    status = {
        r["status"]: {"count": r["n"], "total": r["total"]}
        for r in await conn.fetch(
            """select status, count(*) as n, coalesce(sum(amount), 0)::bigint as total
                 from payments.payment_states where run_id = $1 group by status""",
            run_id,
        )
    }
    reasons = {
        r["reason"]: {"count": r["n"], "total": r["total"]}
        for r in await conn.fetch(
            """select reason, count(*) as n, sum(amount)::bigint as total from payments.payment_states
                where run_id = $1 and status = 'rejected' group by reason order by count(*) desc""",
            run_id,
        )
    }
    by_district = [
        {
            "ubigeo": r["ubigeo"],
            "district": district_name(r["ubigeo"]) or "",
            "department": department_name(r["ubigeo"]),
            "payments": r["n"],
            "planned_total": r["planned_total"],
            "credited": r["credited"],
            "credited_total": r["credited_total"],
            "rejected": r["rejected"],
        }
        for r in await conn.fetch(
            """select ubigeo, count(*) as n, sum(amount)::bigint as planned_total,
                      count(*) filter (where status = 'credited') as credited,
                      coalesce(sum(amount) filter (where status = 'credited'), 0)::bigint as credited_total,
                      count(*) filter (where status = 'rejected') as rejected
                 from payments.payment_states where run_id = $1 group by ubigeo
                order by credited_total desc, planned_total desc, ubigeo limit $2""",
            run_id,
            districts,
        )
    ]
    district_count = await conn.fetchval(
        "select count(distinct ubigeo) from payments.payments where run_id = $1", run_id
    )
    batches = {
        r["status"]: r["n"]
        for r in await conn.fetch(
            "select status, count(*) as n from payments.batches where run_id = $1 group by status", run_id
        )
    }
    return {
        "run": run,
        "payments": status,
        "rejected_by_reason": reasons,
        "accrued": {"count": run["accrued_count"], "total": run["accrued_total"]},
        "exclusions": run["exclusions"],
        "batches": batches,
        "districts": district_count,
        "top_districts": by_district,
        "incidents": await repo.incidents(conn, run_id),
    }


CSV_COLUMNS = [
    "payment_id",
    "household_id",
    "dni",
    "cci",
    "ubigeo",
    "district",
    "department",
    "amount",
    "amount_decimal",
    "currency",
    "periods",
    "status",
    "reason",
    "bank_item_id",
    "ledger_transfer_id",
    "batch_no",
]


async def write_csv(conn: Connection, run_id: int, path: Path) -> int:
    """One line per payment of the run, in household order (DNI and CCI masked); returns the number of lines.

    ``amount`` is in minor units (céntimos), as everywhere a program reads amounts; ``amount_decimal`` is the
    same in major units (``200.00`` soles) for people opening the file in a spreadsheet.
    """
    currency = (await repo.get_run(conn, run_id))["currency"]
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        async with conn.transaction(readonly=True):
            async for r in conn.cursor(
                """select id, household_id, dni, cci, ubigeo, amount, breakdown, status, reason, bank_item_id,
                          ledger_transfer_id, batch_no
                     from payments.payment_states where run_id = $1 order by household_id""",
                run_id,
                prefetch=10_000,
            ):
                writer.writerow(
                    [
                        r["id"],
                        r["household_id"],
                        mask_value(r["dni"]),
                        mask_value(r["cci"]),
                        r["ubigeo"],
                        district_name(r["ubigeo"]) or "",
                        department_name(r["ubigeo"]),
                        r["amount"],
                        Money(r["amount"], currency).decimal(),
                        currency,
                        " ".join(sorted(r["breakdown"])),
                        r["status"],
                        r["reason"] or "",
                        r["bank_item_id"] or "",
                        r["ledger_transfer_id"] or "",
                        r["batch_no"],
                    ]
                )
                n += 1
    return n
