"""Authentication and authorisation conditions."""

from __future__ import annotations

from ledger.errors import AppError, ErrorKind


class AuthError(AppError):
    type = "auth-error"
    title = "Authentication error"
    kind = ErrorKind.UNAUTHENTICATED


class NotAuthenticated(AuthError):
    """No token, or a token that is unknown or revoked."""

    type = "not-authenticated"
    title = "Not authenticated"


class Forbidden(AuthError):
    """The token's role may not perform this action."""

    type = "forbidden"
    title = "Forbidden"
    kind = ErrorKind.FORBIDDEN


class InvalidToken(AuthError):
    """A token request is malformed (unknown role, bad name)."""

    type = "invalid-token-request"
    title = "Invalid token request"
    kind = ErrorKind.INVALID


class TokenNotFound(AuthError):
    type = "token-not-found"
    title = "Token not found"
    kind = ErrorKind.NOT_FOUND
