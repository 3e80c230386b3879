"""The FastAPI application: lifespan (database, background sealer and expiry sweep), middleware, routes.

``create_app()`` resolves the database (``DATABASE_URL`` or the embedded server), refuses to start on an
unmigrated database (``cct-ledger db upgrade`` fixes it) and mounts every capability's router.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.bank.factory import bank_from_settings
from adapters.postgres import migrate
from adapters.postgres.bootstrap import resolve_database_url
from adapters.postgres.database import Database
from ledger import audit, bulk
from services.api import metrics, problems
from services.api.deps import OPENAPI_BODIES
from services.collector import server_collector
from services.config import Settings, get_settings
from services.ledgerapi import metrics as ledger_metrics
from services.ledgerapi.api import router as ledger_router
from services.logs import configure_logging
from services.payments.api import router as payments_router

log = structlog.get_logger(__name__)
Router = Any


_REQUEST_ID_PREFIX = secrets.token_hex(4)
_request_numbers = itertools.count(1)


def _request_id() -> str:
    """A request id unique within this process (a random prefix per process, then a counter): 16 hex digits,
    without asking the system for randomness on every request."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers) & 0xFFFFFFFF:08x}"


@functools.lru_cache(maxsize=2048)
def _route_metrics(method: str, path: str, status: int) -> tuple[Any, Any]:
    """The request counter and latency histogram of a route (their labelled children, looked up once: routes
    are templates, so there are few)."""
    return metrics.REQUESTS.labels(method, path, str(status)), metrics.LATENCY.labels(method, path)


class RequestContext:
    """Pure ASGI middleware: a request id bound to the logs, metrics per route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode() or _request_id()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            requests, latency = _route_metrics(scope["method"], getattr(route, "path", "unmatched"), status)
            requests.inc()
            latency.observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id")


async def _every(seconds: float, name: str, job: Callable[[], Awaitable[None]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception as e:  # a background job must not die; it reports and tries again
            log.error("background.failed", job=name, error=repr(e))


_DOCS_ASSETS = "/docs-assets"


def _serve_docs_offline(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts and styles served by this server.

    FastAPI's default pages load them from a CDN, so on a network that cannot reach it (a ministry's, a
    bank's) the pages are blank. The files come from the pinned ``fastapi-offline`` package.
    """
    static = importlib.resources.files("fastapi_offline") / "static"
    app.mount(_DOCS_ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
    title = f"{app.title}: API"
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{_DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{_DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def create_app(
    settings: Settings | None = None,
    database: Database | None = None,
    routers: list[Router] | None = None,
    background: bool = True,
    tune_gc: bool = False,
) -> FastAPI:
    """Build the application.

    Args:
        settings: configuration (default: from the environment).
        database: an open pool to use (tests); by default one is opened at startup.
        routers: extra routers to mount (capabilities register theirs in ``services.api.routes``).
        background: run the sealer and the expiry sweep.
        tune_gc: once started, tune the process's collector for serving
            (:func:`services.collector.server_collector`; a server process: freezing what startup built cut
            the HTTP p99 from 128 ms to 47 ms in ``bench/ledger_http.py``).
    """
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format)
        owned = database is None
        db = database
        if db is None:
            url = await resolve_database_url(settings)
            await migrate.assert_migrated(url)
            db = await Database.connect(url, max_size=settings.db_pool_size)
        app.state.database = db
        tasks: list[asyncio.Task[None]] = []
        if background and settings.seal_interval_seconds > 0:
            tasks.append(asyncio.create_task(_every(settings.seal_interval_seconds, "seal", lambda: _seal(db))))
        if background and settings.expiry_sweep_interval_seconds > 0:
            tasks.append(
                asyncio.create_task(_every(settings.expiry_sweep_interval_seconds, "expiry", lambda: _sweep(db)))
            )
        if tune_gc:
            server_collector()
        log.info("api.started")
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if owned:
                await db.close()

    app = FastAPI(
        title="cct-ledger",
        version="0.1.0",
        description=(
            "The payment and savings ledger of a conditional cash transfer program. Every `/v1` route needs "
            "`Authorization: Bearer <token>` (`cct-ledger token create`). Amounts are integers of minor units "
            "(céntimos: 20000 = S/ 200.00). Errors are RFC 9457 `application/problem+json` with a stable "
            "`type`; lists are paginated with `limit` and `cursor` and return `next_cursor`."
        ),
        lifespan=lifespan,
        docs_url=None,  # served below from the package's own files, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.bank_factory = lambda: bank_from_settings(settings)  # the bank runs are executed against
    if database is not None:
        app.state.database = database  # usable without the lifespan (in-process tests, ASGI transports)
    problems.install(app)
    app.add_middleware(RequestContext)

    # The capabilities' routers before the operations routes: routes are tried in order.
    app.include_router(ledger_router)
    app.include_router(payments_router)
    for router in routers if routers is not None else _capability_routers():
        app.include_router(router)

    _document_self_parsed_bodies(app)

    @app.get("/healthz", tags=["ops"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="The database answers and is migrated")
    async def readyz(request: Request) -> Response:
        try:
            async with request.app.state.database.connection() as conn:
                await migrate.assert_migrated(conn)
        except Exception as e:
            return problems.problem(503, "not-ready", "Not ready", str(e) or type(e).__name__)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    _serve_docs_offline(app)  # last: the API's routes are matched first
    return app


def _document_self_parsed_bodies(app: FastAPI) -> None:
    """Add the schemas of the bodies routes validate themselves (``deps.json_body``) to the OpenAPI
    document: FastAPI lists only the models of the parameters it parses."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().setdefault("components", {}).setdefault("schemas", {})
            for model in OPENAPI_BODIES:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, definition)
                schemas.setdefault(model.__name__, schema)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _capability_routers() -> list[Router]:
    from services.api.routes import routers

    return routers()


async def _seal(db: Database) -> None:
    async with db.connection() as conn:
        started = time.perf_counter()
        result = await audit.seal(conn)
        ledger_metrics.SEAL_SECONDS.observe(time.perf_counter() - started)
        ledger_metrics.SEALED_TRANSFERS.inc(result.transfers)


async def _sweep(db: Database) -> None:
    while True:
        async with db.unit_of_work() as conn:
            if await bulk.void_expired(conn) == 0:
                return


def serve_app() -> FastAPI:
    """The application as ``cct-ledger serve`` runs it (uvicorn's factory)."""
    return create_app(tune_gc=True)
