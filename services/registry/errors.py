"""The household registry's named conditions (rendered as problem+json by the API)."""

from __future__ import annotations

from typing import Any

from ledger.errors import AppError, ErrorKind

MAX_REPORTED_ERRORS = 1_000
"""Row errors carried in an error's ``errors`` list; ``errors_total`` always has the full count."""


class RegistryError(AppError):
    """Base of the registry's conditions."""

    type = "registry-error"
    title = "Registry error"


class InvalidImportFile(RegistryError):
    """The file as a whole cannot be read: not UTF-8, no header, missing or repeated columns, empty."""

    type = "invalid-import-file"
    title = "Invalid import file"


class ImportRejected(RegistryError):
    """Some rows are invalid and the import is all-or-nothing: nothing was written.

    Attributes:
        errors: every row error (line, column, reason, household_id).
    """

    type = "import-rejected"
    title = "Import rejected: invalid rows"

    def __init__(self, detail: str, errors: list[dict[str, Any]], **extra: Any) -> None:
        super().__init__(detail, errors=errors[:MAX_REPORTED_ERRORS], errors_total=len(errors), **extra)
        self.errors = errors


class HouseholdNotFound(RegistryError):
    """No household has this id."""

    type = "household-not-found"
    title = "Household not found"
    kind = ErrorKind.NOT_FOUND


class InvalidFilter(RegistryError):
    """A list filter with an impossible value."""

    type = "invalid-filter"
    title = "Invalid filter"


class InvalidRevealReason(RegistryError):
    """The reason given for revealing a household's personal data: given without a reveal, blank, without a
    letter or digit, holding control or invisible characters, or longer than 500 characters."""

    type = "invalid-reveal-reason"
    title = "Invalid reason for a reveal"
