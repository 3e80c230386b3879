"""The programs capability's named conditions (rendered as problem+json by the API)."""

from __future__ import annotations

from ledger.errors import AppError, ErrorKind


class ProgramError(AppError):
    """Base of the programs capability's conditions."""

    type = "program-error"
    title = "Program error"


class InvalidPeriod(ProgramError):
    """A period code that does not parse for the program's schedule."""

    type = "invalid-period"
    title = "Invalid period"


class InvalidProgramFile(ProgramError):
    """The programs file is malformed: a wrong type, an unknown key or field, a broken version sequence."""

    type = "invalid-program-file"
    title = "Invalid programs file"


class ProgramNotFound(ProgramError):
    """No program has this code."""

    type = "program-not-found"
    title = "Program not found"
    kind = ErrorKind.NOT_FOUND


class ProgramChanged(ProgramError):
    """A program's currency or schedule differs from the loaded one; they cannot change once loaded."""

    type = "program-immutable-field"
    title = "Program field cannot change"
    kind = ErrorKind.CONFLICT


class RuleVersionChanged(ProgramError):
    """A rule version already loaded has different content in the file; versions are append-only."""

    type = "rule-version-changed"
    title = "Rule version cannot change"
    kind = ErrorKind.CONFLICT


class RuleVersionNotAllowed(ProgramError):
    """A new rule version would change periods already started or out of order."""

    type = "rule-version-not-allowed"
    title = "Rule version not allowed"
    kind = ErrorKind.CONFLICT


class NoRuleVersion(ProgramError):
    """No rule version is in force at the period's start date."""

    type = "no-rule-version"
    title = "No rule version in force"
    kind = ErrorKind.CONFLICT


class ProgramAccountMismatch(ProgramError):
    """A program's ledger account exists with another currency, side or flags than the program needs."""

    type = "program-account-mismatch"
    title = "Program account mismatch"
    kind = ErrorKind.CONFLICT


class InvalidAppropriation(ProgramError):
    """An appropriation request is malformed (its reference)."""

    type = "invalid-appropriation"
    title = "Invalid appropriation"


class AppropriationConflict(ProgramError):
    """The appropriation reference (or idempotency key) was used before with another amount."""

    type = "appropriation-conflict"
    title = "Appropriation reference already used"
    kind = ErrorKind.CONFLICT
