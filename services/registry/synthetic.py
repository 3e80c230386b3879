"""A deterministic synthetic registry for demos, tests and benchmarks: households, padron files, verifications.

Households look like Juntos's: titulars are women with a first name and two common surnames; districts are
a weighted sample of real INEI ubigeos, rural-heavy (Cajamarca, Cusco, Puno, Apurímac, Ayacucho,
Huancavelica, Huánuco, Amazonas, Loreto...), capital districts under-weighted; DNIs are valid and distinct;
children under 4 and upper-secondary students follow plausible distributions; most households are active.
The same ``(n, seed)`` always gives the same households.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Final

from services.identifiers import _inei_districts, dni_check_characters, make_cci
from services.registry.padron import REQUIRED_COLUMNS

AS_OF: Final = date(2026, 6, 30)
"""Default reference date: households enrolled on or before it (fixed, so output does not change with time)."""

FIRST_NAMES: Final = (
    "María", "Rosa", "Juana", "Carmen", "Lucía", "Isabel", "Yolanda", "Elena", "Teresa", "Flor", "Marisol",
    "Nélida", "Gladys", "Hilda", "Felícita", "Justina", "Victoria", "Marleni", "Yeni", "Senaida", "Luz",
    "Norma", "Martha", "Santusa", "Agripina", "Eusebia", "Vilma", "Delia", "Maribel", "Edith", "Rocío",
    "Sonia", "Julia", "Paulina", "Antonia", "Celestina", "Maritza", "Nancy", "Roxana", "Silvia",
)  # fmt: skip
SURNAMES: Final = (
    "Quispe", "Mamani", "Huamán", "Flores", "Condori", "Choque", "Ccama", "Sánchez", "Rojas", "Gutiérrez",
    "Vargas", "Torres", "Ramos", "Chávez", "Huanca", "Apaza", "Cruz", "Mendoza", "Pari", "Cusi", "Taipe",
    "Layme", "Yupanqui", "Ccori", "Poma", "Huillca", "Puma", "Tito", "Ccahuana", "Soto", "Medina", "García",
    "Rodríguez", "Díaz", "Cárdenas", "Lázaro", "Inga", "Yauri", "Palomino", "Huayhua", "Alanoca", "Cutipa",
)  # fmt: skip
DEPARTMENT_WEIGHTS: Final = {
    "01": 6.0, "02": 5.0, "03": 8.0, "04": 1.0, "05": 8.0, "06": 12.0, "08": 10.0, "09": 8.0, "10": 8.0,
    "11": 0.5, "12": 4.0, "13": 5.0, "14": 1.5, "15": 1.0, "16": 5.0, "17": 0.3, "18": 0.2, "19": 2.0,
    "20": 5.0, "21": 9.0, "22": 3.0, "23": 0.2, "24": 0.3, "25": 2.0,
}  # fmt: skip
"""Relative share of households per department (Callao has none)."""
FALLBACK_UBIGEOS: Final = (
    "010104", "010204", "010504", "010602", "020104", "020605", "021105", "030104", "030216", "030410",
    "050104", "050409", "050612", "060104", "060407", "060611", "061005", "080104", "080501", "080806",
    "081009", "090104", "090303", "090504", "100104", "100313", "100903", "120106", "120417", "130305",
    "160104", "160211", "160504", "200210", "200408", "210104", "210301", "210606", "211002", "220406",
    "250104", "250201",
)  # fmt: skip
"""Real district codes used when the INEI list is not installed."""
CHILDREN_WEIGHTS: Final = (0.50, 0.35, 0.12, 0.03)
STUDENT_WEIGHTS: Final = (0.62, 0.27, 0.09, 0.02)
STATUS_WEIGHTS: Final = {"active": 0.94, "inactive": 0.04, "exited": 0.02}
NONCOMPLIANCE_REASONS: Final = (
    "inasistencia escolar",
    "control de crecimiento y desarrollo (CRED) incompleto",
    "control prenatal incompleto",
    "no presentó documentos de verificación",
)
INVALID_KINDS: Final = ("bad_dni", "bad_cci", "unknown_ubigeo", "negative_count", "bad_date", "duplicate_id")
"""The kinds of invalid rows :func:`write_padron_csv` plants, in rotation."""


@dataclass(frozen=True, slots=True)
class SyntheticHousehold:
    """A generated household (the padron's columns; ``titular_dni`` is the 8 digits)."""

    household_id: str
    titular_dni: str
    titular_name: str
    ubigeo: str
    status: str
    enrolled_on: date
    children_under_4: int
    upper_secondary_students: int
    program: str = "JUNTOS"


def _ubigeo_pool() -> tuple[list[str], list[float]]:
    districts = _inei_districts()
    if districts is None:
        codes = list(FALLBACK_UBIGEOS)
        return codes, [DEPARTMENT_WEIGHTS.get(c[:2], 0.5) for c in codes]
    by_department: dict[str, list[str]] = {}
    for code in sorted(districts):
        by_department.setdefault(code[:2], []).append(code)
    codes, weights = [], []
    for department, members in by_department.items():
        share = DEPARTMENT_WEIGHTS.get(department, 0.0)
        if not share:
            continue
        for code in members:
            codes.append(code)
            # Capital districts (province 01, district 01) are cities: fewer Juntos households.
            weights.append(share / len(members) * (0.2 if code[2:] == "0101" else 1.0))
    return codes, weights


def _choices(rng: random.Random, values: Sequence[int], weights: Sequence[float], n: int) -> list[int]:
    return rng.choices(values, weights=weights, k=n)


def generate_households(
    n: int,
    seed: int = 1,
    *,
    as_of: date = AS_OF,
    haku_fraction: float = 0.0,
    prefix: str = "HH",
) -> list[SyntheticHousehold]:
    """``n`` deterministic, realistic households.

    Args:
        n: how many.
        seed: the same seed gives the same households.
        as_of: no household is enrolled after this date.
        haku_fraction: share of households in the HAKU_WINAY_STIPEND program (enrolled in the last year,
            so some are inside their nine months); the rest are JUNTOS.
        prefix: household ids are ``<prefix><8 digits>``.

    Returns:
        Households with ids ``HH00000001``... in order.
    """
    rng = random.Random(seed)
    codes, weights = _ubigeo_pool()
    ubigeos = rng.choices(codes, weights=weights, k=n)
    dnis = rng.sample(range(10_000_000, 80_000_000), n)
    children = _choices(rng, range(4), CHILDREN_WEIGHTS, n)
    students = _choices(rng, range(4), STUDENT_WEIGHTS, n)
    statuses = rng.choices(list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()), k=n)
    first_day = date(2006, 1, 1)
    span = (as_of - first_day).days
    out = []
    for i in range(n):
        first = rng.choice(FIRST_NAMES)
        if rng.random() < 0.3:
            first = f"{first} {rng.choice(FIRST_NAMES)}"
        name = f"{first} {rng.choice(SURNAMES)} {rng.choice(SURNAMES)}"
        program = "HAKU_WINAY_STIPEND" if haku_fraction and rng.random() < haku_fraction else "JUNTOS"
        if program == "JUNTOS":
            enrolled = first_day + timedelta(days=rng.randrange(span))
        else:
            enrolled = as_of - timedelta(days=rng.randrange(365))
        out.append(
            SyntheticHousehold(
                household_id=f"{prefix}{i + 1:08d}",
                titular_dni=f"{dnis[i]:08d}",
                titular_name=name,
                ubigeo=ubigeos[i],
                status=statuses[i],
                enrolled_on=enrolled,
                children_under_4=children[i],
                upper_secondary_students=students[i],
                program=program,
            )
        )
    return out


def synthetic_ccis(
    households: Iterable[SyntheticHousehold], seed: int = 1, *, unbanked_fraction: float = 0.05
) -> dict[str, str | None]:
    """Banco de la Nación CCIs for households (None for a share not yet bankarised), deterministic.

    The demo gets real ones from the simulated bank instead; this serves tests and benchmarks.
    """
    rng = random.Random(f"cci:{seed}")
    out: dict[str, str | None] = {}
    for number, h in enumerate(households, start=1):
        if rng.random() < unbanked_fraction:
            out[h.household_id] = None
        else:
            out[h.household_id] = make_cci("018", f"{rng.randrange(1, 1000):03d}", f"{number:012d}")
    return out


def dni_with_check(dni: str) -> str:
    """``10117410`` → ``10117410-2`` (the digit form of the check character)."""
    return f"{dni}-{dni_check_characters(dni)[0]}"


def write_padron_csv(
    path: Path | str,
    households: Sequence[SyntheticHousehold],
    ccis: Mapping[str, str | None],
    invalid_fraction: float = 0.0,
    seed: int = 1,
) -> dict[int, str]:
    """Write a padron CSV, with a small deterministic share of invalid rows.

    DNIs are written with their check character (``10117410-2``). Invalid rows rotate through
    :data:`INVALID_KINDS`: a wrong DNI check character, a wrong CCI check digit, a district not in the
    INEI list, a negative count, an impossible date, and a household id repeated from an earlier row.

    Args:
        path: where to write.
        households: from :func:`generate_households`.
        ccis: household id → CCI, or None (or absent) for a household without a bank account yet.
        invalid_fraction: share of rows made invalid (0 for a clean file).
        seed: picks which rows.

    Returns:
        The invalid rows: line number (the header is line 1) → kind.
    """
    rng = random.Random(f"invalid:{seed}")
    n = len(households)
    count = min(round(n * invalid_fraction), max(n - 1, 0))
    picked = sorted(rng.sample(range(1, n), count)) if count else []
    kinds = {index: INVALID_KINDS[k % len(INVALID_KINDS)] for k, index in enumerate(picked)}
    with_program = any(h.program != "JUNTOS" for h in households)
    header = list(REQUIRED_COLUMNS) + (["program"] if with_program else [])
    invalid: dict[int, str] = {}
    with Path(path).open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for index, h in enumerate(households):
            cci = ccis.get(h.household_id) or ""
            row = [
                h.household_id,
                dni_with_check(h.titular_dni),
                h.titular_name,
                h.ubigeo,
                cci,
                h.status,
                h.enrolled_on.isoformat(),
                str(h.children_under_4),
                str(h.upper_secondary_students),
            ]
            if with_program:
                row.append(h.program)
            kind = kinds.get(index)
            if kind is not None:
                _spoil(row, kind, index, households, kinds)
                invalid[index + 2] = kind
            writer.writerow(row)
    return invalid


def _spoil(
    row: list[str], kind: str, index: int, households: Sequence[SyntheticHousehold], kinds: Mapping[int, str]
) -> None:
    if kind == "bad_dni":
        digits, check = row[1][:8], row[1][9]
        row[1] = f"{digits}-{(int(check) + 1) % 10}"
    elif kind == "bad_cci":
        cci = row[4] or make_cci("018", "001", f"{index + 1:012d}")
        row[4] = cci[:19] + str((int(cci[19]) + 1) % 10)
    elif kind == "unknown_ubigeo":
        row[3] = "260101"
    elif kind == "negative_count":
        row[7] = "-1"
    elif kind == "bad_date":
        row[6] = "2026-02-30"
    elif kind == "duplicate_id":
        earlier = index - 1
        while earlier > 0 and earlier in kinds:
            earlier -= 1
        row[0] = households[earlier].household_id


def imported_households(
    households: Sequence[SyntheticHousehold], invalid: Mapping[int, str]
) -> list[SyntheticHousehold]:
    """The households an import of the padron keeps: all but those on the invalid lines (from
    :func:`write_padron_csv`); a verification file should name only these."""
    return [h for index, h in enumerate(households) if index + 2 not in invalid]


def generate_compliance(
    households: Iterable[SyntheticHousehold],
    program: str,
    period: str,
    noncompliant_fraction: float = 0.05,
    seed: int = 1,
    *,
    path: Path | str | None = None,
) -> list[tuple[str, bool, str]]:
    """A period's verification results for the program's active households, deterministic.

    Args:
        households: from :func:`generate_households`.
        program: only households of this program are verified.
        period: the period verified (it seeds the choice, so each period differs).
        noncompliant_fraction: share of households found non-compliant.
        seed: the same seed, program and period give the same results.
        path: when given, also write the CSV (``household_id,compliant,reason`` with ``si``/``no``).

    Returns:
        (household_id, compliant, reason) per verified household.
    """
    rng = random.Random(f"compliance:{seed}:{program}:{period}")
    results = []
    for h in households:
        if h.program != program or h.status != "active":
            continue
        if rng.random() < noncompliant_fraction:
            results.append((h.household_id, False, rng.choice(NONCOMPLIANCE_REASONS)))
        else:
            results.append((h.household_id, True, ""))
    if path is not None:
        with Path(path).open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["household_id", "compliant", "reason"])
            for hid, ok, reason in results:
                writer.writerow([hid, "si" if ok else "no", reason])
    return results
