"""Opaque pagination cursors: one format and one error for every list of the project.

A cursor is ``base64url("<kind>:<position>")`` without padding; the kind says which list made it (``v1``
accounts, ``s1.<account id>`` one account's statement, ``c1`` closed periods, ``p1`` programs, ``h1``
households, ``r1`` payment runs, ``x1`` reveals of personal data), so a cursor of one list is refused by
another instead of being read as a position in it. Anything else is :class:`InvalidCursor`
(``invalid-cursor``, 422), whichever list it was given to.
"""

from __future__ import annotations

import base64
import binascii

from ledger.errors import InvalidCursor

_MAX_POSITION = 2**63 - 1  # a bigint: positions are ids and versions


def encode_cursor(kind: str, position: int | str) -> str:
    """The cursor after ``position`` in the list ``kind``."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def invalid(cursor: str) -> InvalidCursor:
    """The error for a cursor that is not a next_cursor of the list it was given to."""
    return InvalidCursor(f"cursor {cursor!r} is not valid; use the next_cursor of a previous page", field="cursor")


def decode_text(cursor: str, kind: str) -> str:
    """The position inside a cursor of the list ``kind``.

    Raises:
        InvalidCursor: not a cursor of that list.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith(f"{kind}:") or len(raw) == len(kind) + 1:
        raise invalid(cursor)
    return raw[len(kind) + 1 :]


def decode_int(cursor: str, kind: str) -> int:
    """The numeric position (an id or a version, 0 to 2^63 - 1) inside a cursor of the list ``kind``.

    Raises:
        InvalidCursor: not a cursor of that list.
    """
    text = decode_text(cursor, kind)
    if not (text.isascii() and text.isdigit()) or int(text) > _MAX_POSITION:
        raise invalid(cursor)
    return int(text)
