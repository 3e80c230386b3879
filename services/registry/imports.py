"""Importing the registry's files: the padron (households) and a period's verification results (compliance).

Imports are all-or-nothing by default: every row is validated, and one bad row refuses the whole file
(:class:`ImportRejected` lists each bad row with line, column and reason). With ``skip_invalid`` the good
rows of a padron are imported and the bad ones returned (the CLI writes them to a rejects file).

A padron's valid rows stream into a temporary staging table with binary COPY, a chunk at a time, while the
file is validated; then set-based statements check DNIs against the registry, update changed households
(version + 1), insert new ones and append the history. Importing the same file again changes nothing and
records nothing.

Functions never commit: run them in a unit of work (``Database.unit_of_work()``); each import also runs in a
savepoint of its own, so a refused file leaves nothing behind whatever the caller does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

import structlog

from ledger.db import Connection
from services.identifiers import BN_BANK_CODE
from services.programs import repository as programs_repository
from services.programs.service import resolve_period
from services.registry import repository
from services.registry.errors import ImportRejected, InvalidImportFile
from services.registry.padron import (
    REQUIRED_COLUMNS,
    CsvSource,
    PadronValidator,
    Record,
    Rejected,
    RowError,
    open_rows,
    parse_bool,
)

log = structlog.get_logger(__name__)
Progress = Callable[[str, int, int | None], None]
"""Called with (phase, rows done, rows expected or None) while an import runs."""
COPY_CHUNK: Final = 50_000
COMPLIANCE_COLUMNS: Final = ("household_id", "compliant", "reason")
MAX_REASON: Final = 500


@dataclass(slots=True)
class ImportReport:
    """What an import did.

    Attributes:
        import_id: the ``registry.imports`` row, or None when nothing changed (nothing is recorded).
        rows: data rows read.
        inserted, updated, unchanged, rejected: row counts.
        rejected_rows: the rejected rows with their problems (``skip_invalid`` only).
        previous_import: the latest earlier import of a file with the same bytes, if any.
    """

    kind: str
    file_name: str
    sha256: str
    import_id: int | None = None
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejected_rows: list[Rejected] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    previous_import: int | None = None
    program: str | None = None
    period: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the import wrote anything."""
        return bool(self.inserted or self.updated)

    @property
    def errors(self) -> list[RowError]:
        """Every problem of every rejected row, in line order."""
        return [e for r in self.rejected_rows for e in r.errors]

    def counts(self) -> dict[str, int]:
        """The row counts, as stored on the import."""
        return {
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
        }

    def to_dict(self, max_errors: int = 1_000) -> dict[str, Any]:
        """The JSON form, with at most ``max_errors`` row errors."""
        errors = self.errors
        return {
            "kind": self.kind,
            "import_id": self.import_id,
            "file_name": self.file_name,
            "sha256": self.sha256,
            "program": self.program,
            "period": self.period,
            **self.counts(),
            "changed": self.changed,
            "previous_import": self.previous_import,
            "errors": [e.to_dict() for e in errors[:max_errors]],
            "errors_total": len(errors),
            "warnings": list(self.warnings),
        }


def _report(progress: Progress | None, phase: str, done: int, total: int | None) -> None:
    if progress is not None:
        progress(phase, done, total)


def _refuse(kind: str, source: CsvSource, rejected: list[Rejected], total_rows: int) -> ImportRejected:
    errors = [e.to_dict() for r in rejected for e in r.errors]
    first = rejected[0].errors[0]
    if kind == "households":
        fix = "Fix them, or import the valid rows with --skip-invalid (HTTP: ?skip_invalid=true)"
    else:
        fix = "Fix them and import the whole file again (households must be in the registry first)"
    return ImportRejected(
        f"{source.name}: {len(rejected):,} of {total_rows:,} rows are invalid (first: line {first.line}, "
        f"{first.column}: {first.reason}); nothing was imported. {fix}",
        errors,
        kind=kind,
        rows=total_rows,
        rejected=len(rejected),
    )


# ------------------------------------------------------------------------------------------------- padron
async def import_households(
    conn: Connection,
    source: CsvSource,
    *,
    actor: str,
    skip_invalid: bool = False,
    today: date | None = None,
    progress: Progress | None = None,
    chunk: int = COPY_CHUNK,
) -> ImportReport:
    """Import a padron: insert new households, update changed ones, leave the rest alone.

    Args:
        conn: a connection inside a transaction.
        source: the CSV (:meth:`CsvSource.from_path` or :meth:`CsvSource.from_bytes`).
        actor: who imports (recorded on the import).
        skip_invalid: import the valid rows and return the rejected ones instead of refusing the file.
        today: dates after it are refused (default: today, UTC).
        progress: called as rows are validated (phase ``validate``) and merged (phase ``merge``).
        chunk: rows per COPY.

    Returns:
        The counts; ``import_id`` is None when nothing changed.

    Raises:
        InvalidImportFile: the file cannot be read as a padron (encoding, header).
        ImportRejected: invalid rows and not ``skip_invalid``.
    """
    today = today or datetime.now(UTC).date()
    async with conn.transaction():  # a savepoint inside the caller's unit of work: all or nothing regardless
        return await _import_households(conn, source, actor, skip_invalid, today, progress, chunk)


async def _import_households(
    conn: Connection,
    source: CsvSource,
    actor: str,
    skip_invalid: bool,
    today: date,
    progress: Progress | None,
    chunk: int,
) -> ImportReport:
    report = ImportReport("households", source.name, source.sha256)
    await repository.lock_registry(conn, "households")
    report.previous_import = await repository.previous_import(conn, "households", source.sha256)
    programs = await programs_repository.program_codes(conn)
    await repository.create_padron_staging(conn)
    expected = max(source.lines - 1, 0)
    rejected: list[Rejected] = []
    total = 0
    with source.open_text() as text:
        header, records = open_rows(text, source.name, REQUIRED_COLUMNS)
        report.header = header
        validate = PadronValidator(header, programs, today).validate
        batch: list[Record] = []
        loading = True  # all-or-nothing stops loading at the first bad row, but still reports every one
        for line, raw in records:
            total += 1
            out = validate(line, raw)
            if type(out) is tuple:
                if loading:
                    batch.append(out)
                    if len(batch) >= chunk:
                        await repository.copy_padron(conn, batch)
                        batch = []
            else:
                assert isinstance(out, list)
                rejected.append(Rejected(line, raw, out))
                if not skip_invalid:
                    loading = False
                    batch = []
            if total % chunk == 0:
                _report(progress, "validate", total, expected)
        if batch and loading:
            await repository.copy_padron(conn, batch)
        _report(progress, "validate", total, total)
    report.rows = total
    if total == 0:
        raise InvalidImportFile(f"{source.name} has a header but no rows")
    if rejected and not skip_invalid:
        raise _refuse("households", source, rejected, total)
    _report(progress, "merge", 0, None)
    await repository.analyze_staging(conn, repository.PADRON_STAGING)
    conflicts = await repository.dni_conflicts(conn)
    if conflicts:
        errors = {
            c["line"]: RowError(
                c["line"],
                "titular_dni",
                f"the same DNI is already the titular of household {c['other']} in the registry",
                c["household_id"],
            )
            for c in conflicts
        }
        raws = _raw_lines(source, set(errors))
        db_rejected = [Rejected(line, raws.get(line, []), [err]) for line, err in errors.items()]
        if not skip_invalid:
            raise _refuse("households", source, sorted(rejected + db_rejected, key=lambda r: r.line), total)
        await repository.drop_staged_lines(conn, repository.PADRON_STAGING, list(errors))
        rejected.extend(db_rejected)
    rejected.sort(key=lambda r: r.line)
    report.rejected_rows = rejected
    report.rejected = len(rejected)
    elsewhere = await repository.staged_other_bank_ccis(conn)
    if elsewhere:
        report.warnings.append(
            f"{elsewhere:,} household(s) have the CCI of another bank than Banco de la Nación ({BN_BANK_CODE}): "
            "payments go only to Banco de la Nación savings accounts, so their entitlements accrue until the "
            "registry gives them one"
        )
    import_id = await repository.create_import(
        conn, kind="households", file_name=source.name, sha256=source.sha256, actor=actor
    )
    report.inserted, report.updated = await repository.merge_padron(conn, import_id)
    report.unchanged = total - report.rejected - report.inserted - report.updated
    if report.changed:
        report.import_id = import_id
        await repository.finish_import(conn, import_id, report.counts())
    else:
        await repository.delete_import(conn, import_id)
    _report(progress, "merge", total, total)
    log.info("registry.imported", import_id=report.import_id, file=source.name, **report.counts())
    return report


def _raw_lines(source: CsvSource, lines: set[int]) -> dict[int, list[str]]:
    """The original fields of the records ending on ``lines`` (re-read from the source)."""
    found: dict[int, list[str]] = {}
    with source.open_text() as text:
        for line, raw in open_rows(text, source.name, ())[1]:
            if line in lines:
                found[line] = raw
                if len(found) == len(lines):
                    break
    return found


# --------------------------------------------------------------------------------------------- compliance
async def import_compliance(
    conn: Connection,
    source: CsvSource,
    *,
    program: str,
    period: str,
    actor: str,
    progress: Progress | None = None,
) -> ImportReport:
    """Record a period's verification results: non-compliant households are suspended for that period only.

    Columns ``household_id, compliant, reason``; ``compliant`` accepts true/false, 1/0, si/no, yes/no in any
    case. All-or-nothing: a bad value, an unknown household or a duplicate refuses the file. Re-importing
    updates the values that changed and keeps every earlier value in ``registry.compliance_history``.

    ``progress`` is called as rows are validated (phase ``validate``) and merged (phase ``merge``).

    Raises:
        ProgramNotFound, InvalidPeriod, InvalidImportFile, ImportRejected.
    """
    async with conn.transaction():
        return await _import_compliance(conn, source, program, period, actor, progress)


async def _import_compliance(
    conn: Connection, source: CsvSource, program: str, period: str, actor: str, progress: Progress | None
) -> ImportReport:
    parsed_program, parsed_period = await resolve_period(conn, program, period)
    code, period_code = parsed_program.code, parsed_period.code
    report = ImportReport("compliance", source.name, source.sha256, program=code, period=period_code)
    await repository.lock_registry(conn, f"compliance:{code}:{period_code}")
    report.previous_import = await repository.previous_import(conn, "compliance", source.sha256)
    await repository.create_compliance_staging(conn)
    rejected: list[Rejected] = []
    records: list[tuple[int, str, bool, str]] = []
    seen: dict[str, int] = {}
    total = 0
    expected = max(source.lines - 1, 0)
    with source.open_text() as text:
        header, lines = open_rows(text, source.name, COMPLIANCE_COLUMNS)
        report.header = header
        ix = {name: i for i, name in enumerate(header)}
        for line, raw in lines:
            total += 1
            if total % COPY_CHUNK == 0:
                _report(progress, "validate", total, expected)
            if len(raw) != len(header):
                rejected.append(
                    Rejected(
                        line,
                        raw,
                        [RowError(line, "*", f"the line has {len(raw)} fields, the header has {len(header)}")],
                    )
                )
                continue
            errors: list[RowError] = []
            hid = raw[ix["household_id"]].strip()
            if not hid:
                errors.append(RowError(line, "household_id", "is required"))
            elif hid in seen:
                errors.append(
                    RowError(line, "household_id", f"duplicate: {hid} already appears on line {seen[hid]}", hid)
                )
            else:
                seen[hid] = line
            value = raw[ix["compliant"]]
            compliant = parse_bool(value)
            if compliant is None:
                reason = (
                    "is required"
                    if not value.strip()
                    else f"{value.strip()!r} is not true/false, 1/0, si/sí/no or yes (any case)"
                )
                errors.append(RowError(line, "compliant", reason, hid or None))
            why = raw[ix["reason"]].strip()
            if len(why) > MAX_REASON:
                errors.append(RowError(line, "reason", f"is longer than {MAX_REASON} characters", hid or None))
            if errors:
                rejected.append(Rejected(line, raw, errors))
            elif compliant is not None:
                records.append((line, hid, compliant, why))
    report.rows = total
    _report(progress, "validate", total, total)
    if total == 0:
        raise InvalidImportFile(f"{source.name} has a header but no rows")
    if not rejected:
        for start in range(0, len(records), COPY_CHUNK):
            await repository.copy_compliance(conn, records[start : start + COPY_CHUNK])
        for r in await repository.compliance_unknown_households(conn, code):
            hid = r["household_id"]
            reason = (
                f"household {hid} is not in the registry"
                if r["program"] is None
                else f"household {hid} is enrolled in {r['program']}, not {code}"
            )
            rejected.append(Rejected(r["line"], [], [RowError(r["line"], "household_id", reason, hid)]))
    if rejected:
        rejected.sort(key=lambda r: r.line)
        raise _refuse("compliance", source, rejected, total)
    import_id = await repository.create_import(
        conn,
        kind="compliance",
        file_name=source.name,
        sha256=source.sha256,
        actor=actor,
        program=code,
        period=period_code,
    )
    _report(progress, "merge", 0, None)
    report.inserted, report.updated = await repository.merge_compliance(conn, import_id, code, period_code)
    _report(progress, "merge", total, total)
    report.unchanged = total - report.inserted - report.updated
    if report.changed:
        report.import_id = import_id
        await repository.finish_import(conn, import_id, report.counts())
    else:
        await repository.delete_import(conn, import_id)
    log.info("registry.compliance_imported", import_id=report.import_id, program=code, period=period_code)
    return report
