"""Request dependencies: the database, the unit of work, the caller, pagination."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from adapters.postgres.database import Database
from ledger.db import Connection
from ledger.engine import Ledger
from ledger.errors import AppError
from services.auth.service import Principal, Role, authenticate, cached_principal

M = TypeVar("M", bound=BaseModel)

Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="A numeric id.")]
"""A path id: a positive 64-bit integer (anything else is a 422, never a database error)."""


class Pagination:
    """``limit`` (1 to 1,000, default 100) and an opaque ``cursor`` from the previous page."""

    def __init__(self, limit: int = 100, cursor: str | None = None) -> None:
        self.limit = limit
        self.cursor = cursor


async def pagination(
    limit: Annotated[int, Query(ge=1, le=1000, description="Items per page.")] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> Pagination:
    # Dependencies are coroutines: a plain function would run in the thread pool on every request.
    return Pagination(limit, cursor)


def page(data: list[Any], next_cursor: str | None) -> dict[str, Any]:
    """The envelope of every list: ``data``, ``next_cursor`` and ``has_more``."""
    return {"data": data, "next_cursor": next_cursor, "has_more": next_cursor is not None}


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def connection(request: Request) -> AsyncIterator[Connection]:
    """A pooled connection in autocommit mode: for reads and single-statement writes (one ledger call is one
    atomic statement)."""
    async with get_database(request).connection() as conn:
        yield conn


async def unit_of_work(request: Request) -> AsyncIterator[Connection]:
    """A connection inside a transaction: committed when the route returns, rolled back if it raises."""
    async with get_database(request).unit_of_work() as conn:
        yield conn


_AUTHORIZATION = "`Bearer <token>`"
_IDEMPOTENCY_KEY = "Client-chosen key (1-200 characters); a replay returns the first answer."
Authorization = Annotated[str | None, Header(description=_AUTHORIZATION)]
IdempotencyKeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", description=_IDEMPOTENCY_KEY)]


async def principal(request: Request, authorization: Authorization = None) -> Principal:
    token = None
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    ttl = request.app.state.settings.token_cache_seconds
    cached = cached_principal(token, ttl)
    if cached is not None:
        return cached
    async with get_database(request).connection() as conn:
        return await authenticate(conn, token, ttl)


def require(*roles: Role) -> Any:
    """A dependency that admits admin and ``roles``; returns the principal."""

    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        who.require(*roles)
        return who

    return Depends(check)


READ = (Role.OPERATOR, Role.APPROVER, Role.AUDITOR)
WRITE = (Role.OPERATOR,)
Reader = Annotated[Principal, require(*READ)]
"""Any role may read."""
Writer = Annotated[Principal, require(*WRITE)]
"""Operators (and admins) write."""
Approver = Annotated[Principal, require(Role.APPROVER)]
Auditor = Annotated[Principal, require(Role.AUDITOR)]
Admin = Annotated[Principal, require()]


async def idempotency_key(key: IdempotencyKeyHeader = None) -> str:
    return _checked_key(key)


def _checked_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise MissingIdempotencyKey(
            "the Idempotency-Key header is required on this route; choose a unique value per "
            "operation and reuse it on retries"
        )
    if len(key) > 200:
        raise MissingIdempotencyKey("the Idempotency-Key header must be at most 200 characters")
    return key.strip()


class MissingIdempotencyKey(AppError):
    type = "idempotency-key-required"
    title = "Idempotency-Key header required"


@dataclass(frozen=True, slots=True)
class KeyedWrite:
    """What an idempotent write needs: the caller (an operator or admin), its key, and the ledger on a pooled
    connection (``async with call.ledger() as led``)."""

    who: Principal
    key: str
    database: Database

    @contextlib.asynccontextmanager
    async def ledger(self) -> AsyncIterator[Ledger]:
        """The ledger acting as the caller, on a pooled connection in autocommit mode (released after)."""
        async with self.database.connection() as conn:
            yield Ledger(conn, self.who.name)


async def keyed_write(
    request: Request, authorization: Authorization = None, key: IdempotencyKeyHeader = None
) -> KeyedWrite:
    """The caller, checked (401, 403), and the ``Idempotency-Key`` (422).

    One dependency instead of four (principal, role, key, connection), and a coroutine rather than a
    generator: FastAPI's cost is per dependency, a generator's exit is the costliest part of it, and these
    routes carry most of the write traffic. The route takes its connection with ``call.ledger()``.
    """
    who = await principal(request, authorization)
    who.require(*WRITE)
    return KeyedWrite(who, _checked_key(key), get_database(request))


async def keyed_write_of(request: Request) -> KeyedWrite:
    """:func:`keyed_write` for a route that takes only the request: the same checks and errors, the headers
    read directly (the route documents them with :func:`keyed_write_openapi`)."""
    headers = request.headers
    return await keyed_write(request, headers.get("authorization"), headers.get("idempotency-key"))


async def json_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``, decoded and validated in one pass of pydantic-core.

    What FastAPI does for a body parameter in three steps of Python (decode with the standard library,
    solve the parameter, validate the objects); the errors are the same 422 (``RequestValidationError``,
    each located under ``body``).
    """
    raw = await request.body()
    if not raw.strip():
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in e.errors(include_url=False)]
        raise RequestValidationError(errors, body=raw) from None


OPENAPI_BODIES: list[type[BaseModel]] = []
"""Body models of routes that validate their body themselves (:func:`json_body`): added to the OpenAPI
document's components, which FastAPI fills only from the parameters it parses."""


def keyed_write_openapi(body: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI of a keyed write that reads its headers and body itself (``openapi_extra``): the
    ``Idempotency-Key`` header and the JSON body ``body``, whose schema ``services.api.app`` adds to the
    document's components (:data:`OPENAPI_BODIES`)."""
    if body not in OPENAPI_BODIES:
        OPENAPI_BODIES.append(body)
    return {
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "description": _IDEMPOTENCY_KEY,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            },
            {
                "name": "authorization",
                "in": "header",
                "required": False,
                "description": _AUTHORIZATION,
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}},
        },
    }


Conn = Annotated[Connection, Depends(connection)]
"""A pooled connection in autocommit mode."""
UoW = Annotated[Connection, Depends(unit_of_work)]
"""A connection inside a transaction committed when the route returns."""
Key = Annotated[str, Depends(idempotency_key)]
"""The request's ``Idempotency-Key``."""
Paging = Annotated[Pagination, Depends(pagination)]
"""``limit`` and ``cursor`` of a list route."""
Write = Annotated[KeyedWrite, Depends(keyed_write)]
"""An operator's idempotent write: ``who``, ``key`` and ``ledger()`` in one dependency."""
