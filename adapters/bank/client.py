"""The bank client: :class:`services.ports.bank.BankPort` over HTTP with ``httpx.AsyncClient``.

Every call has a per-attempt timeout and a bounded number of attempts. 5xx answers, 429 and network errors
are retried with exponential backoff and full jitter (``Retry-After`` wins when the bank sends one); a POST
is retried with the *same* ``Idempotency-Key`` and the same bytes, so the bank applies it at most once.

How a failure ends, once the attempts run out:

- a POST that may have been applied (a timeout or a dropped connection after sending, or a 500/502/504)
  at any attempt → :class:`BankAmbiguousError`: look the object up (``get_batch_by_reference``) before
  sending it again. The client does not decide this alone because only the caller knows whether it recorded
  the attempt;
- otherwise → :class:`BankUnavailable` or :class:`BankRateLimited` (retryable: nothing was applied);
- a 4xx answer ends the call at once with a permanent error (:class:`BankNotFound`,
  :class:`BankBatchRefused`, :class:`BankIdempotencyConflict`...), never retried.

Logs carry operations, references, ids and attempt numbers, never DNI, names, account numbers or CCI.
"""

from __future__ import annotations

import asyncio
import random as random_module
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

import httpx
import orjson
import structlog
from pydantic import BaseModel, ValidationError

from adapters.bank import webhooks
from adapters.bank.retry import RetryPolicy, parse_retry_after
from adapters.bank.schemas import ErrorEnvelope
from adapters.bank.wire import item_outcomes_page, paused_gc
from services.config import Settings, get_settings
from services.ports.bank import (
    Account,
    BankAmbiguousError,
    BankAuthError,
    BankBatchRefused,
    BankConflict,
    BankDuplicateBatch,
    BankError,
    BankIdempotencyConflict,
    BankInsufficientFunds,
    BankInvalidRequest,
    BankNotFound,
    BankPermanentError,
    BankPort,
    BankProtocolError,
    BankRateLimited,
    BankUnavailable,
    Batch,
    BatchStatus,
    CreditBatch,
    FundingAccount,
    ItemOutcome,
    ItemResult,
    ItemStatus,
    OpenAccount,
    OutgoingBatch,
    Page,
    RenderedCreditBatch,
    StatementLine,
    WebhookEvent,
    item_outcome,
)

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

USER_AGENT: Final = "cct-ledger-bank-client/1"
MAX_PAGE: Final = 1000
# Answers after which a POST may have been applied by the bank. 503 and 429 promise it was not.
_MAYBE_APPLIED_STATUSES: Final = frozenset({500, 502, 504})
_NOT_SENT_ERRORS: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _check_key(idempotency_key: object) -> str:
    if not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 255:
        raise ValueError("idempotency_key must be a string of 1 to 255 characters derived from stable facts")
    return idempotency_key


def _check_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return quote(value, safe="")


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an int from 1 to {MAX_PAGE}")
    return limit


def _check_date(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(f"{name} must be a datetime.date")
    return value.isoformat()


def error_from_response(response: httpx.Response, operation: str, attempts: int) -> BankError:
    """Map a 4xx (or final 5xx) answer to a named error, using the envelope's ``code`` when present.

    Args:
        response: the bank's answer.
        operation: the client method, for the message.
        attempts: how many attempts were made.
    """
    status = response.status_code
    code: str | None = None
    message = response.reason_phrase or "error"
    param: str | None = None
    request_id = response.headers.get("Request-Id")
    try:
        envelope = ErrorEnvelope.model_validate_json(response.content)
    except ValidationError:
        pass
    else:
        code, message, param = envelope.error.code, envelope.error.message, envelope.error.param
        request_id = envelope.error.request_id or request_id
    detail = f"{operation}: the bank answered {status}" + (f" {code}" if code else "") + f": {message}"
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": request_id,
        "attempts": attempts,
        "operation": operation,
        "param": param,
    }
    if status in (401, 403):
        return BankAuthError(detail, **kwargs)
    if status == 404:
        return BankNotFound(detail, **kwargs)
    if status == 409:
        if code == "idempotency_key_reused":
            return BankIdempotencyConflict(detail, **kwargs)
        if code == "batch_reference_exists":
            return BankDuplicateBatch(detail, **kwargs)
        if code == "insufficient_funds":
            return BankInsufficientFunds(detail, **kwargs)
        return BankConflict(detail, **kwargs)
    if status == 422 and code == "control_totals_mismatch":
        return BankBatchRefused(detail, **kwargs)
    if status in (400, 422):
        return BankInvalidRequest(detail, **kwargs)
    if status >= 500:
        return BankUnavailable(detail, **kwargs)
    return BankPermanentError(detail, **kwargs)


class BankClient:
    """The bank port over HTTP.

    Args:
        base_url: the bank's base URL (``http://127.0.0.1:8100``).
        api_key: sent as ``Authorization: Bearer``.
        webhook_secret: the HMAC secret(s) to verify webhooks with (several during a rotation).
        timeout: seconds per attempt (connect, send and answer together).
        retry: the retry policy (``max_attempts`` overrides its attempts).
        max_attempts: attempts per call, the first included.
        http_client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`); else one is made.
        transport: a transport for the client made here (e.g. ``httpx.ASGITransport`` in-process).
        sleep: awaited between attempts (injectable for tests).
        random: uniform [0, 1) source for the jitter (injectable for tests).
        clock: unix time, for webhook freshness.
        webhook_tolerance: seconds a webhook timestamp may be away from ``clock``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        webhook_secret: str | Sequence[str] = "",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_attempts: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.time,
        webhook_tolerance: float = webhooks.DEFAULT_TOLERANCE_SECONDS,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        policy = retry or RetryPolicy()
        if max_attempts is not None:
            policy = RetryPolicy(max_attempts, policy.base_delay, policy.max_delay, policy.max_retry_after)
        self.retry = policy
        self.timeout = float(timeout)
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), transport=transport)
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self._webhook_secrets = [webhook_secret] if isinstance(webhook_secret, str) else list(webhook_secret)
        self._webhook_tolerance = webhook_tolerance

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> BankClient:
        """A client configured from ``CCT_BANK_*`` settings (``kwargs`` override them)."""
        s = settings or get_settings()
        if not s.bank_url and "base_url" not in kwargs:
            raise ValueError("CCT_BANK_URL is not set: the bank client needs the bank's base URL")
        options: dict[str, Any] = {
            "base_url": s.bank_url,
            "api_key": s.bank_api_key,
            "webhook_secret": s.bank_webhook_secret,
            "timeout": s.bank_timeout_seconds,
            "max_attempts": s.bank_max_attempts,
        }
        options.update(kwargs)
        return cls(**options)

    async def aclose(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> BankClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- transport ---------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str | int] | None = None,
        content: bytes | None = None,
        idempotency_key: str | None = None,
        reference: str | None = None,
        read_only: bool = False,
    ) -> httpx.Response:
        headers = dict(self._headers)
        if content is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        url = self.base_url + path
        is_post = method == "POST" and not read_only  # a request that may change the bank's state
        maybe_applied = False
        last_status: int | None = None
        last_error = ""
        retry_after: float | None = None
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self._http.request(method, url, params=params, content=content, headers=headers)
            except httpx.UnsupportedProtocol as exc:
                raise BankPermanentError(f"{operation}: bad bank URL {url!r}", operation=operation) from exc
            except _NOT_SENT_ERRORS as exc:
                last_status, last_error = None, f"{type(exc).__name__} (not sent)"
            except (httpx.TransportError, TimeoutError) as exc:
                # Sent, or partly sent: the bank may have applied it.
                maybe_applied = maybe_applied or is_post
                last_status, last_error = (
                    None,
                    type(exc).__name__ if str(exc) == "" else f"{type(exc).__name__}: {exc}",
                )
            else:
                status = response.status_code
                if status < 400:
                    if attempt > 1:
                        log.info("bank.recovered", operation=operation, attempt=attempt, reference=reference)
                    return response
                if status != 429 and status < 500:
                    raise error_from_response(response, operation, attempt)
                last_status, last_error = status, f"HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if is_post and status in _MAYBE_APPLIED_STATUSES:
                    maybe_applied = True
                if retry_after is not None and retry_after > self.retry.max_retry_after:
                    attempt = self.retry.max_attempts  # the bank asks for a longer pause than we may wait
            if attempt >= self.retry.max_attempts:
                break
            delay = retry_after if retry_after is not None else self.retry.backoff(attempt, self._random())
            log.warning(
                "bank.retry",
                operation=operation,
                attempt=attempt,
                error=last_error,
                delay=round(delay, 3),
                reference=reference,
                idempotency_key=idempotency_key,
            )
            await self._sleep(delay)
        log.error("bank.gave_up", operation=operation, attempts=attempt, error=last_error, reference=reference)
        if maybe_applied:
            raise BankAmbiguousError(
                f"{operation}: outcome unknown after {attempt} attempts (last: {last_error}); the bank may "
                "have applied it: look it up before sending it again with the same Idempotency-Key",
                operation=operation,
                idempotency_key=idempotency_key,
                reference=reference,
                status=last_status,
                attempts=attempt,
            )
        if last_status == 429:
            raise BankRateLimited(
                f"{operation}: still rate limited after {attempt} attempts",
                retry_after=retry_after,
                status=429,
                attempts=attempt,
                operation=operation,
            )
        raise BankUnavailable(
            f"{operation}: the bank is unavailable after {attempt} attempts (last: {last_error})",
            status=last_status,
            attempts=attempt,
            operation=operation,
        )

    @staticmethod
    def _parse(model: type[M], response: httpx.Response, operation: str) -> M:
        # The whole body in one pass of pydantic-core (a page of 1,000 items is one call), with the cyclic
        # collector held meanwhile: it would only promote the objects being made (see ``wire.paused_gc``).
        try:
            with paused_gc():
                return model.model_validate_json(response.content)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error.get("loc", ()))
            raise BankProtocolError(
                f"{operation}: unexpected answer from the bank ({where}: {error['msg']})",
                status=response.status_code,
                request_id=response.headers.get("Request-Id"),
                operation=operation,
            ) from exc

    # --- accounts ----------------------------------------------------------------------------------------

    async def open_account(self, request: OpenAccount, *, idempotency_key: str) -> Account:
        """Open a savings account for a titular.

        Args:
            request: DNI, name and ubigeo (validated when the model was built).
            idempotency_key: stable key for this opening (e.g. ``"open:<household id>"``).

        Raises:
            BankConflict: the titular already has an open account (``code == "account_exists"``).
        """
        if not isinstance(request, OpenAccount):
            raise TypeError("request must be an OpenAccount")
        response = await self._call(
            "POST",
            "/v1/accounts",
            operation="open_account",
            content=request.model_dump_json().encode(),
            idempotency_key=_check_key(idempotency_key),
        )
        return self._parse(Account, response, "open_account")

    async def close_account(self, account_id: str, *, idempotency_key: str) -> Account:
        """Close an account; a positive balance is paid out at the branch first.

        Raises:
            BankNotFound: no such account.
            BankConflict: already closed.
        """
        path = f"/v1/accounts/{_check_id('account_id', account_id)}/close"
        response = await self._call(
            "POST",
            path,
            operation="close_account",
            content=b"{}",
            idempotency_key=_check_key(idempotency_key),
        )
        return self._parse(Account, response, "close_account")

    async def get_account(self, account_id: str) -> Account:
        """An account by its bank id (``acct_...``).

        Raises:
            BankNotFound: no such account.
        """
        response = await self._call(
            "GET", f"/v1/accounts/{_check_id('account_id', account_id)}", operation="get_account"
        )
        return self._parse(Account, response, "get_account")

    async def find_accounts(
        self, *, dni: str | None = None, account_number: str | None = None, cci: str | None = None
    ) -> list[Account]:
        """Accounts matching exactly one of ``dni``, ``account_number``, ``cci`` (the open one for a DNI)."""
        given = {k: v for k, v in (("dni", dni), ("account_number", account_number), ("cci", cci)) if v is not None}
        if len(given) != 1 or not all(isinstance(v, str) for v in given.values()):
            raise ValueError("give exactly one of dni, account_number, cci (as a string)")
        # A POST so that the DNI stays out of URLs (and out of every access log on the way); it is a read.
        response = await self._call(
            "POST",
            "/v1/accounts/search",
            operation="find_accounts",
            content=orjson.dumps(given),
            read_only=True,
        )
        return list(self._parse(Page[Account], response, "find_accounts").data)

    async def get_funding_account(self) -> FundingAccount:
        """The program's funding account: balance, held, available and the holds of unsettled batches."""
        response = await self._call("GET", "/v1/funding_account", operation="get_funding_account")
        return self._parse(FundingAccount, response, "get_funding_account")

    # --- credit batches ----------------------------------------------------------------------------------

    async def submit_batch(self, batch: OutgoingBatch, *, idempotency_key: str) -> Batch:
        """Submit a credit batch; the answer is its acknowledgement (status ``received``).

        Args:
            batch: the batch with our stable reference and its control totals (a
                :class:`~services.ports.bank.RenderedCreditBatch` is sent with its items as they were rendered).
            idempotency_key: derived by the caller from the run and batch number, never from the clock.

        Raises:
            BankBatchRefused: control totals do not match the items (nothing was created).
            BankDuplicateBatch: the reference was used by another submission.
            BankInsufficientFunds: the funding account cannot cover the batch.
            BankIdempotencyConflict: the key was used for different content.
            BankAmbiguousError: the outcome is unknown; look the batch up by reference.
        """
        if isinstance(batch, RenderedCreditBatch):
            content = batch.to_json()
        elif isinstance(batch, CreditBatch):
            content = batch.model_dump_json().encode()
        else:
            raise TypeError("batch must be a CreditBatch or a RenderedCreditBatch")
        response = await self._call(
            "POST",
            "/v1/credit_batches",
            operation="submit_batch",
            content=content,
            idempotency_key=_check_key(idempotency_key),
            reference=batch.reference,
        )
        ack = self._parse(Batch, response, "submit_batch")
        log.info(
            "bank.batch_acknowledged",
            reference=batch.reference,
            batch_id=ack.id,
            items=ack.item_count,
            replayed=response.headers.get("Idempotent-Replayed") == "true",
        )
        return ack

    async def get_batch(self, batch_id: str) -> Batch:
        """A batch by bank id.

        Raises:
            BankNotFound: no such batch.
        """
        response = await self._call(
            "GET", f"/v1/credit_batches/{_check_id('batch_id', batch_id)}", operation="get_batch"
        )
        return self._parse(Batch, response, "get_batch")

    async def get_batch_by_reference(self, reference: str) -> Batch | None:
        """The batch with our reference, or None if the bank never saw it (after an ambiguous submission)."""
        if not isinstance(reference, str) or not reference:
            raise ValueError("reference must be a non-empty string")
        response = await self._call(
            "GET",
            "/v1/credit_batches",
            operation="get_batch_by_reference",
            params={"reference": reference},
            reference=reference,
        )
        page = self._parse(Page[Batch], response, "get_batch_by_reference")
        matches = [b for b in page.data if b.reference == reference]
        return matches[0] if matches else None

    async def list_batches(
        self, *, status: BatchStatus | None = None, cursor: str | None = None, limit: int = MAX_PAGE
    ) -> Page[Batch]:
        """One page of batches in submission order; ``status`` keeps those in that state.

        ``status=BatchStatus.SETTLED`` tells in one call which batches can be read back (instead of a
        :meth:`get_batch` per batch). Like the other batch lookups, it lets the simulated bank's clock move.
        """
        params: dict[str, str | int] = {"limit": _check_limit(limit)}
        if status is not None:
            params["status"] = BatchStatus(status).value
        if cursor is not None:
            params["cursor"] = cursor
        response = await self._call("GET", "/v1/credit_batches", operation="list_batches", params=params)
        return self._parse(Page[Batch], response, "list_batches")

    async def iter_batches(
        self, *, status: BatchStatus | None = None, page_size: int = MAX_PAGE
    ) -> AsyncIterator[Batch]:
        """Every batch (in ``status``), following cursors.

        Raises:
            BankProtocolError: the bank's cursor did not advance.
        """

        async def fetch(cursor: str | None) -> Page[Batch]:
            return await self.list_batches(status=status, cursor=cursor, limit=page_size)

        async for data in self._pages(fetch, None, "list_batches"):
            for batch in data:
                yield batch
            del data

    async def get_item(self, item_id: str) -> ItemResult:
        """One item by bank id (``itm_...``).

        Raises:
            BankNotFound: no such item.
        """
        response = await self._call("GET", f"/v1/credit_items/{_check_id('item_id', item_id)}", operation="get_item")
        return self._parse(ItemResult, response, "get_item")

    async def list_batch_items(
        self,
        batch_id: str,
        *,
        status: ItemStatus | None = None,
        cursor: str | None = None,
        limit: int = MAX_PAGE,
    ) -> Page[ItemResult]:
        """One page of a batch's items in submission order (``status`` filters)."""
        params: dict[str, str | int] = {"limit": _check_limit(limit)}
        if status is not None:
            params["status"] = ItemStatus(status).value
        if cursor is not None:
            params["cursor"] = cursor
        path = f"/v1/credit_batches/{_check_id('batch_id', batch_id)}/items"
        response = await self._call("GET", path, operation="list_batch_items", params=params)
        return self._parse(Page[ItemResult], response, "list_batch_items")

    async def iter_batch_items(
        self, batch_id: str, *, status: ItemStatus | None = None, page_size: int = MAX_PAGE
    ) -> AsyncIterator[ItemResult]:
        """Every item of a batch, following cursors.

        Raises:
            BankProtocolError: the bank's cursor did not advance (instead of looping forever).
        """

        async def fetch(cursor: str | None) -> Page[ItemResult]:
            return await self.list_batch_items(batch_id, status=status, cursor=cursor, limit=page_size)

        async for data in self._pages(fetch, None, "list_batch_items"):
            for item in data:
                yield item
            del data  # not kept alive while the next page is fetched

    async def iter_batch_outcomes(self, batch_id: str) -> AsyncIterator[ItemOutcome]:
        """Every item of a batch as :data:`~services.ports.bank.ItemOutcome`, following cursors.

        Each page is read by :func:`adapters.bank.wire.item_outcomes_page` (no model per item); a page not in
        the plain form is validated by the model, as :meth:`list_batch_items` does, with the same errors.

        Raises:
            BankProtocolError: an item the model refuses, or the bank's cursor did not advance.
        """
        path = f"/v1/credit_batches/{_check_id('batch_id', batch_id)}/items"

        async def fetch(cursor: str | None) -> Page[ItemOutcome]:
            params: dict[str, str | int] = {"limit": MAX_PAGE}
            if cursor is not None:
                params["cursor"] = cursor
            response = await self._call("GET", path, operation="list_batch_items", params=params)
            fast = item_outcomes_page(response.content)
            if fast is None:
                page = self._parse(Page[ItemResult], response, "list_batch_items")
                fast = ([item_outcome(i) for i in page.data], page.has_more, page.next_cursor)
            data, has_more, next_cursor = fast
            return Page[ItemOutcome].model_construct(data=data, has_more=has_more, next_cursor=next_cursor)

        async for data in self._pages(fetch, None, "list_batch_items"):
            for outcome in data:
                yield outcome
            del data

    # --- statements ----------------------------------------------------------------------------------------

    async def list_statement_lines(
        self,
        account_id: str | None = None,
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        cursor: str | None = None,
        limit: int = MAX_PAGE,
    ) -> Page[StatementLine]:
        """One page of statement lines, oldest first: one account's (the funding account's included), or all.

        Args:
            account_id: ``acct_...``; None for every account (the daily statement file).
            from_date: first value date (inclusive).
            to_date: last value date (inclusive).
            cursor: ``next_cursor`` of the previous page, or a line id already processed.
            limit: lines per page (1 to 1000).
        """
        params: dict[str, str | int] = {"limit": _check_limit(limit)}
        for name, value in (("from_date", from_date), ("to_date", to_date)):
            text = _check_date(name, value)
            if text is not None:
                params[name] = text
        if cursor is not None:
            params["cursor"] = cursor
        if account_id is None:
            path = "/v1/statement_lines"
        else:
            path = f"/v1/accounts/{_check_id('account_id', account_id)}/statement_lines"
        response = await self._call("GET", path, operation="list_statement_lines", params=params)
        return self._parse(Page[StatementLine], response, "list_statement_lines")

    async def iter_statement_lines(
        self,
        account_id: str | None = None,
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        after: str | None = None,
        page_size: int = MAX_PAGE,
    ) -> AsyncIterator[StatementLine]:
        """Every statement line, following cursors; ``after`` resumes after a line id already processed."""

        async def fetch(cursor: str | None) -> Page[StatementLine]:
            return await self.list_statement_lines(
                account_id, from_date=from_date, to_date=to_date, cursor=cursor, limit=page_size
            )

        async for data in self._pages(fetch, after, "list_statement_lines"):
            for line in data:
                yield line
            del data

    async def list_events(self, *, cursor: str | None = None, limit: int = 100) -> Page[WebhookEvent]:
        """Events the bank generated, oldest first."""
        params: dict[str, str | int] = {"limit": _check_limit(limit)}
        if cursor is not None:
            params["cursor"] = cursor
        response = await self._call("GET", "/v1/events", operation="list_events", params=params)
        return self._parse(Page[WebhookEvent], response, "list_events")

    @staticmethod
    async def _pages(
        fetch: Callable[[str | None], Awaitable[Page[T]]], cursor: str | None, operation: str
    ) -> AsyncIterator[list[T]]:
        """The data of each page, following cursors (the iterators yield its objects one level up, so an
        object passes through one generator, not two)."""
        seen: set[str] = set()
        while True:
            page = await fetch(cursor)
            data, has_more, next_cursor = page.data, page.has_more, page.next_cursor
            del page
            yield data
            if not has_more:
                return
            if not next_cursor or next_cursor in seen or not data:
                raise BankProtocolError(f"{operation}: the bank's cursor did not advance", operation=operation)
            del data  # the page's objects may be freed while the next page is fetched
            seen.add(next_cursor)
            cursor = next_cursor

    # --- webhooks ----------------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify a webhook delivery (signature and freshness) and return its event.

        Args:
            headers: the delivery's headers.
            body: the raw body bytes, exactly as received.

        Raises:
            WebhookVerificationError: bad or missing signature, stale timestamp, or not an event.
        """
        return webhooks.verify_webhook(
            self._webhook_secrets, headers, body, now=self._clock(), tolerance=self._webhook_tolerance
        )


if TYPE_CHECKING:  # mypy checks that the client satisfies the port, method by method

    def _implements_the_port(client: BankClient) -> BankPort:
        return client
