"""RFC 9457 problem details: every error the API returns, with a stable ``type``.

``type`` is ``urn:cct-ledger:problem:<slug>``, where the slug is the error class's ``type``; clients may
switch on it. Unexpected failures return a bare 500 problem with a request id and no stack trace.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.errors import AppError, ErrorKind

PROBLEM_JSON = "application/problem+json"
_BODY_UNREADABLE = "There was an error parsing the body"  # FastAPI's 400 when a body is not JSON it can read
TYPE_PREFIX = "urn:cct-ledger:problem:"
STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 422,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.UNAVAILABLE: 503,
}
log = structlog.get_logger(__name__)


def problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


async def app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    status = STATUS[exc.kind]
    extra = {k: _jsonable(v) for k, v in exc.extra.items() if k not in {"type", "title", "status", "detail"}}
    return problem(status, exc.type, exc.title, exc.detail, instance=request.url.path, **extra)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        errors.append({"field": ".".join(loc), "message": e.get("msg", "invalid"), "type": e.get("type", "")})
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    detail = f"{first['field']}: {first['message']}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    return problem(422, "validation-error", "Invalid request", detail, errors=errors, instance=request.url.path)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _BODY_UNREADABLE:  # answered as every other malformed body is
        message = f"{exc.detail}: send one UTF-8 JSON document"
        return problem(
            422,
            "validation-error",
            "Invalid request",
            f"body: {message}",
            errors=[{"field": "body", "message": message, "type": "json_invalid"}],
            instance=request.url.path,
        )
    slug = {404: "not-found", 405: "method-not-allowed", 401: "not-authenticated"}.get(exc.status_code, "http-error")
    return problem(exc.status_code, slug, str(exc.detail), str(exc.detail), instance=request.url.path)


async def data_error(request: Request, exc: Exception) -> JSONResponse:
    """A value the database cannot hold (a number out of range, a malformed text): bad input, not a crash.

    The detail carries PostgreSQL's own reason (e.g. "value out of range for type bigint"), which names the
    request's own value at most. asyncpg's own refusals of a parameter ("invalid input for query argument
    $3: ...") name our query's internals, so only their last words (the reason, e.g. "value out of int64
    range") are kept."""
    log.warning("api.data_error", path=request.url.path, error=type(exc).__name__)
    reason = str(getattr(exc, "message", "") or exc).strip()
    if reason.startswith("invalid input for query argument"):
        reason = reason.rsplit("(", 1)[1].rstrip(")") if reason.endswith(")") else ""
    elif getattr(exc, "detail", None):
        reason += f" ({exc.detail})"  # type: ignore[attr-defined]
    reason = reason or "out of range or malformed"
    return problem(
        422,
        "invalid-value",
        "Invalid value",
        f"a value in the request cannot be stored: {reason}",
        instance=request.url.path,
    )


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = request.headers.get("x-request-id", "")
    log.error("api.unexpected_error", path=request.url.path, error=type(exc).__name__, request_id=request_id)
    return problem(
        500,
        "internal-error",
        "Internal error",
        "the server failed to handle this request; it has been logged",
        request_id=request_id,
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(asyncpg.DataError, data_error)
    app.add_exception_handler(Exception, unexpected_error)
