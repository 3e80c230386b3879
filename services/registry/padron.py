"""Reading and validating a padron (the household registry file) and verification files, row by row.

A padron is a UTF-8 CSV with a header. Required columns: ``household_id, titular_dni, titular_name,
ubigeo, cci, status, enrolled_on, children_under_4, upper_secondary_students``; ``program`` is optional
(default ``JUNTOS``); any other column is kept in the household's ``extra``. Each row is checked in one tight
loop (about a million rows in seconds): identifiers through :mod:`services.registry.fastcheck`, dates,
counts, statuses, and duplicates of household id or titular DNI within the file. Every problem is reported
with its line number (the header is line 1), column and reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Any, Final

import orjson

from services.identifiers import InvalidIdentifier
from services.registry.errors import InvalidImportFile
from services.registry.fastcheck import UbigeoChecker, check_cci, check_dni

REQUIRED_COLUMNS: Final = (
    "household_id",
    "titular_dni",
    "titular_name",
    "ubigeo",
    "cci",
    "status",
    "enrolled_on",
    "children_under_4",
    "upper_secondary_students",
)
OPTIONAL_COLUMNS: Final = ("program",)
STATUSES: Final = frozenset({"active", "inactive", "exited"})
DEFAULT_PROGRAM: Final = "JUNTOS"
MAX_COUNT: Final = 99
MAX_NAME: Final = 200
HOUSEHOLD_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
HOUSEHOLD_ID_RULE: Final = "1-40 letters, digits, _ or -, starting with a letter or digit"
_SMALL: Final = {str(i): i for i in range(MAX_COUNT + 1)}

Record = tuple[int, str, str, str, str, str | None, str, date, int, int, str, str | None]
"""A valid padron row as staged: line, household_id, titular_dni (8 digits), titular_name, ubigeo, cci or
None, status, enrolled_on, children_under_4, upper_secondary_students, program, extra (JSON text) or None."""


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem in one row of an imported file."""

    line: int
    column: str
    reason: str
    household_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"line": self.line, "column": self.column, "reason": self.reason, "household_id": self.household_id}


@dataclass(slots=True)
class Rejected:
    """A rejected row: its original fields and every problem found in it."""

    line: int
    raw: list[str]
    errors: list[RowError] = field(default_factory=list)


class CsvSource:
    """A CSV file to import: re-openable (rejects are re-read), with its SHA-256 and a row estimate.

    Use :meth:`from_path` or :meth:`from_bytes`.
    """

    def __init__(self, name: str, opener: Callable[[], IO[bytes]], sha256: str, size: int, lines: int) -> None:
        self.name = name
        self._opener = opener
        self.sha256 = sha256
        self.size = size
        self.lines = lines

    @classmethod
    def from_path(cls, path: Path | str) -> CsvSource:
        """A file on disk.

        Raises:
            InvalidImportFile: it cannot be read.
        """
        path = Path(path)
        digest = hashlib.sha256()
        lines = size = 0
        try:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    lines += chunk.count(b"\n")
                    size += len(chunk)
        except OSError as e:
            raise InvalidImportFile(f"cannot read {path}: {e.strerror or e}", file=str(path)) from e
        return cls(path.name, lambda: path.open("rb"), digest.hexdigest(), size, lines)

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> CsvSource:
        """A file received in memory (an HTTP request body)."""
        return cls(name, lambda: io.BytesIO(data), hashlib.sha256(data).hexdigest(), len(data), data.count(b"\n"))

    def open_text(self) -> IO[str]:
        """The file as text (UTF-8, an optional byte-order mark skipped), for ``csv.reader``."""
        return io.TextIOWrapper(self._opener(), encoding="utf-8-sig", newline="")


def read_header(reader: Any, source: str, required: Sequence[str]) -> list[str]:
    """The header row, normalised (trimmed, lower case), checked for missing and repeated columns.

    Raises:
        InvalidImportFile: empty file, missing or repeated columns.
    """
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidImportFile(f"{source} is empty: expected a header line ({', '.join(required)})") from None
    except UnicodeDecodeError as e:
        raise InvalidImportFile(f"{source} is not UTF-8 text ({e.reason}); save it as UTF-8 CSV") from e
    except csv.Error as e:
        raise InvalidImportFile(f"{source}: line 1: {e}") from e
    names = [h.strip().lower() for h in header]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidImportFile(f"{source}: column(s) {', '.join(repeated)} appear more than once in the header")
    missing = [c for c in required if c not in names]
    if missing:
        raise InvalidImportFile(
            f"{source}: missing column(s) {', '.join(missing)}; the header must include {', '.join(required)}",
            missing=missing,
        )
    return names


def open_rows(text: IO[str], source: str, required: Sequence[str]) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The normalised header and an iterator of (line number, fields) of every non-empty record after it.

    Raises:
        InvalidImportFile: bad header; while iterating, a decoding or CSV error (with its line).
    """
    reader = csv.reader(text, strict=True)
    header = read_header(reader, source, required)
    return header, _records(reader, source)


def _records(reader: Any, source: str) -> Iterator[tuple[int, list[str]]]:
    try:
        for record in reader:
            if record:
                yield reader.line_num, record
    except UnicodeDecodeError as e:
        raise InvalidImportFile(
            f"{source} is not UTF-8 text (after line {reader.line_num}: {e.reason}); save it as UTF-8 CSV"
        ) from e
    except csv.Error as e:
        raise InvalidImportFile(f"{source}: line {reader.line_num}: {e}") from e


class PadronValidator:
    """Validates padron rows one at a time and remembers ids and DNIs to catch duplicates in the file.

    Args:
        header: the normalised header (from :func:`read_header`).
        programs: program codes a row may name.
        today: rows may not be dated after it.
    """

    def __init__(self, header: list[str], programs: set[str], today: date) -> None:
        self.header = header
        self.width = len(header)
        self.programs = programs
        self.today = today
        ix = {name: i for i, name in enumerate(header)}
        self.ix = ix
        self.extra_columns = [(i, n) for i, n in enumerate(header) if n not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        self.program_ix = ix.get("program")
        self.seen_ids: dict[str, int] = {}
        self.seen_dnis: dict[str, str] = {}  # DNI -> household id
        self.ubigeo = UbigeoChecker()
        self._dates: dict[str, date] = {}

    def validate(self, line: int, row: list[str]) -> Record | list[RowError]:
        """The staged record of a valid row, or every problem found in it."""
        if len(row) != self.width:
            return [RowError(line, "*", f"the line has {len(row)} fields, the header has {self.width}")]
        ix = self.ix
        errors: list[RowError] = []
        hid = row[ix["household_id"]].strip()
        if not hid:
            errors.append(RowError(line, "household_id", "is required"))
            hid_or_none: str | None = None
        elif HOUSEHOLD_ID.fullmatch(hid) is None:
            errors.append(RowError(line, "household_id", f"{hid!r} is not a valid id ({HOUSEHOLD_ID_RULE})"))
            hid_or_none = None
        else:
            hid_or_none = hid
            first = self.seen_ids.get(hid)
            if first is not None:
                errors.append(RowError(line, "household_id", f"duplicate: {hid} already appears on line {first}", hid))
        dni = row[ix["titular_dni"]].strip()
        if not dni:
            errors.append(RowError(line, "titular_dni", "is required", hid_or_none))
        else:
            try:
                dni = check_dni(dni)
            except InvalidIdentifier as e:
                errors.append(RowError(line, "titular_dni", e.reason, hid_or_none))
                dni = ""
        name = row[ix["titular_name"]].strip()
        if not name:
            errors.append(RowError(line, "titular_name", "is required", hid_or_none))
        elif len(name) > MAX_NAME:
            errors.append(RowError(line, "titular_name", f"is longer than {MAX_NAME} characters", hid_or_none))
        ubigeo = row[ix["ubigeo"]].strip()
        if not ubigeo:
            errors.append(RowError(line, "ubigeo", "is required", hid_or_none))
        else:
            try:
                ubigeo = self.ubigeo(ubigeo)
            except InvalidIdentifier as e:
                errors.append(RowError(line, "ubigeo", e.reason, hid_or_none))
        cci: str | None = row[ix["cci"]].strip() or None
        if cci is not None:
            try:
                cci = check_cci(cci)
            except InvalidIdentifier as e:
                errors.append(RowError(line, "cci", e.reason, hid_or_none))
        status = row[ix["status"]].strip().lower()
        if status not in STATUSES:
            reason = "is required" if not status else f"{status!r} is not one of active, inactive, exited"
            errors.append(RowError(line, "status", reason, hid_or_none))
        enrolled = self._date(row[ix["enrolled_on"]].strip(), line, "enrolled_on", hid_or_none, errors)
        children = self._count(row[ix["children_under_4"]].strip(), line, "children_under_4", hid_or_none, errors)
        students = self._count(
            row[ix["upper_secondary_students"]].strip(), line, "upper_secondary_students", hid_or_none, errors
        )
        program = DEFAULT_PROGRAM
        if self.program_ix is not None:
            program = row[self.program_ix].strip() or DEFAULT_PROGRAM
        if program not in self.programs:
            errors.append(
                RowError(
                    line,
                    "program",
                    f"unknown program {program!r} (load programs first: `cct-ledger programs load`)",
                    hid_or_none,
                )
            )
        claims = hid_or_none is not None and hid not in self.seen_ids
        if claims and dni:
            other = self.seen_dnis.get(dni)
            if other is not None:
                errors.append(
                    RowError(
                        line,
                        "titular_dni",
                        f"duplicate: the same DNI is the titular of household {other} on line {self.seen_ids[other]}",
                        hid,
                    )
                )
            else:
                self.seen_dnis[dni] = hid
        if claims:
            # Even a rejected row claims its id, so a second row with the same id is reported as well.
            self.seen_ids[hid] = line
        if errors:
            return errors
        extra = None
        if self.extra_columns:
            extra = orjson.dumps({n: row[i] for i, n in self.extra_columns}).decode()
        assert enrolled is not None
        assert children is not None
        assert students is not None
        return (line, hid, dni, name, ubigeo, cci, status, enrolled, children, students, program, extra)

    def _date(self, value: str, line: int, column: str, hid: str | None, errors: list[RowError]) -> date | None:
        cached = self._dates.get(value)
        if cached is not None:
            return cached
        if not value:
            errors.append(RowError(line, column, "is required", hid))
            return None
        if len(value) != 10 or value[4] != "-" or value[7] != "-":
            errors.append(RowError(line, column, f"{value!r} is not a date written YYYY-MM-DD", hid))
            return None
        try:
            day = date.fromisoformat(value)
        except ValueError:
            errors.append(RowError(line, column, f"{value!r} is not a calendar date", hid))
            return None
        if day > self.today:
            errors.append(RowError(line, column, f"{value} is in the future (today is {self.today})", hid))
            return None
        self._dates[value] = day
        return day

    @staticmethod
    def _count(value: str, line: int, column: str, hid: str | None, errors: list[RowError]) -> int | None:
        small = _SMALL.get(value)
        if small is not None:
            return small
        reason = count_problem(value)
        if reason is None:
            return int(value)
        errors.append(RowError(line, column, reason, hid))
        return None


def count_problem(value: str) -> str | None:
    """Why ``value`` is not a count of people (0 to 99), or None when it is one."""
    if not value:
        return "is required"
    if value.isascii() and value.isdigit():
        n = int(value)
        return None if n <= MAX_COUNT else f"{n} is more than {MAX_COUNT}"
    body = value[1:] if value[0] in "+-" else value
    if body.isascii() and body.isdigit():
        return f"{value} is negative" if value[0] == "-" and int(body) else f"{value!r} is not a whole number"
    try:
        float(value)
    except ValueError:
        return f"{value!r} is not a number"
    if value.lstrip("+").startswith("-"):
        return f"{value} is negative"
    return f"{value!r} is not a whole number (write 1, not 1.0)"


def rejects_csv(header: list[str], rejected: list[Rejected]) -> str:
    """Rejected rows (original fields) with ``reject_line``, ``reject_column`` and ``reject_reason``, as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*header, "reject_line", "reject_column", "reject_reason"])
    for r in sorted(rejected, key=lambda r: r.line):
        raw = (list(r.raw) + [""] * len(header))[: len(header)]
        columns = "; ".join(dict.fromkeys(e.column for e in r.errors))
        writer.writerow([*raw, r.line, columns, "; ".join(e.reason for e in r.errors)])
    return buffer.getvalue()


def write_rejects(path: Path, header: list[str], rejected: list[Rejected]) -> None:
    """Write :func:`rejects_csv` to ``path``."""
    path.write_text(rejects_csv(header, rejected), encoding="utf-8")


def parse_bool(value: str) -> bool | None:
    """``true/false/1/0/si/sí/no/yes`` (any case) as a bool, or None when it is none of them."""
    return _BOOLS.get(value.strip().lower())


_BOOLS: Final = {
    "true": True,
    "1": True,
    "si": True,
    "sí": True,
    "yes": True,
    "false": False,
    "0": False,
    "no": False,
}
