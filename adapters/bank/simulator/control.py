"""A small client for the simulator-only controls (``/sim/...``): clock, bulk accounts, funding, webhooks.

For tests, benchmarks and ``make demo``; production code talks to the bank only through the port.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, Final, Literal, NotRequired

import httpx
import orjson
from pydantic import TypeAdapter
from typing_extensions import TypedDict

from adapters.bank.client import BankClient
from adapters.bank.schemas import MAX_BULK_ACCOUNTS, OpenedAccount, SimClockState
from adapters.bank.simulator.transport import InProcessTransport
from adapters.bank.wire import paused_gc
from services.ports.bank import FundingAccount

IN_PROCESS_URL = "http://bank.sim"


class _OpenedRow(TypedDict):
    dni: str
    account_id: str
    account_number: str
    cci: str
    created: bool


class _Opened(TypedDict):
    """``BulkAccountsResult``, validated by pydantic-core into plain dicts (then into ``OpenedAccount``)."""

    object: NotRequired[Literal["list"]]
    data: list[_OpenedRow]
    has_more: NotRequired[bool]
    next_cursor: NotRequired[str | None]


_OPENED: Final = TypeAdapter(_Opened)
_ROW: Final = itemgetter("dni", "account_id", "account_number", "cci", "created")


def connect(
    app: Any, *, api_key: str = "sim", webhook_secret: str = "", **options: Any
) -> tuple[BankClient, SimControl]:
    """A bank client and a control client talking to a simulator app in-process (no socket).

    Args:
        app: the app made by ``create_app``.
        api_key: the bearer token the client sends.
        webhook_secret: the secret the client verifies webhooks with.
        **options: more :class:`BankClient` options (``timeout``, ``max_attempts``, ``sleep``...).

    Returns:
        (bank client, control client); close both with ``aclose()`` when done.
    """
    transport = InProcessTransport(app)
    bank = BankClient(IN_PROCESS_URL, api_key=api_key, webhook_secret=webhook_secret, transport=transport, **options)
    control = SimControl(httpx.AsyncClient(transport=transport, base_url=IN_PROCESS_URL), owns_http=True)
    return bank, control


class SimControlError(RuntimeError):
    """A control request was refused; the message carries the simulator's error."""


class SimControl:
    """Drive a simulated bank.

    Args:
        http: an ``httpx.AsyncClient`` whose base URL is the simulator (socket or ``ASGITransport``).
        owns_http: close ``http`` in :meth:`aclose`.
    """

    def __init__(self, http: httpx.AsyncClient, *, owns_http: bool = False) -> None:
        self.http = http
        self._owns_http = owns_http

    async def aclose(self) -> None:
        """Close the HTTP client if this object owns it."""
        if self._owns_http:
            await self.http.aclose()

    async def _post_raw(self, path: str, body: dict[str, Any]) -> bytes:
        response = await self.http.post(path, content=orjson.dumps(body), headers={"Content-Type": "application/json"})
        if response.status_code >= 400:
            raise SimControlError(f"{path}: {response.status_code} {response.text}")
        return response.content

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        return orjson.loads(await self._post_raw(path, body))

    async def clock(self) -> SimClockState:
        """The simulated clock."""
        response = await self.http.get("/sim/clock")
        response.raise_for_status()
        return SimClockState.model_validate_json(response.content)

    async def advance(
        self,
        *,
        seconds: int = 0,
        minutes: int = 0,
        hours: int = 0,
        days: int = 0,
        until: datetime | None = None,
    ) -> SimClockState:
        """Advance the simulated clock (settling batches and running household moves that come due)."""
        body: dict[str, Any] = {"seconds": seconds, "minutes": minutes, "hours": hours, "days": days}
        if until is not None:
            body = {"until": until.isoformat()}
        return SimClockState.model_validate(await self._post("/sim/clock/advance", body))

    async def seed_accounts(
        self, accounts: Iterable[tuple[str, str, str]], *, chunk: int = MAX_BULK_ACCOUNTS
    ) -> list[OpenedAccount]:
        """Open accounts in bulk from (dni, name, ubigeo) rows; existing titulars get their open account back.

        Args:
            accounts: rows of (DNI, titular's name, ubigeo).
            chunk: rows per request (at most 50,000).

        Returns:
            One result per row, in order, with the account id, number and CCI (``dni``, ``account_id``,
            ``account_number``, ``cci``, ``created``).
        """
        out: list[OpenedAccount] = []
        batch: list[dict[str, str]] = []

        async def send(rows: Sequence[dict[str, str]]) -> None:
            raw = await self._post_raw("/sim/accounts/bulk", {"accounts": list(rows)})
            with paused_gc():
                out.extend(map(OpenedAccount._make, map(_ROW, _OPENED.validate_json(raw)["data"])))

        for dni, name, ubigeo in accounts:
            batch.append({"dni": dni, "name": name, "ubigeo": ubigeo})
            if len(batch) == chunk:
                await send(batch)
                batch = []
        if batch:
            await send(batch)
        return out

    async def deposit_funding(self, amount: int, reference: str | None = None) -> FundingAccount:
        """Deposit ``amount`` céntimos into the program's funding account."""
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError("amount must be an int of céntimos")
        body: dict[str, Any] = {"amount": amount}
        if reference is not None:
            body["reference"] = reference
        return FundingAccount.model_validate(await self._post("/sim/funding/deposits", body))

    async def configure_webhooks(self, url: str | None, secret: str | None = None) -> None:
        """Send webhooks to ``url`` (None stops them), signed with ``secret``."""
        await self._post("/sim/webhooks/config", {"url": url, "secret": secret})

    async def flush_webhooks(self) -> int:
        """Deliver pending webhooks now; returns how many were delivered."""
        return int((await self._post("/sim/webhooks/flush", {}))["delivered"])

    async def set_faults(self, profile: str) -> None:
        """Switch the fault profile (``none``, ``flaky``, ``hostile``)."""
        await self._post("/sim/faults", {"profile": profile})

    async def stats(self) -> dict[str, Any]:
        """Counters: items by status, faults injected, idempotency replays and conflicts..."""
        response = await self.http.get("/sim/stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def savings(self, monthly_transfer: int = 100_00) -> dict[str, Any]:
        """Savers, their average balance and its share of the monthly transfer, overall and near/far."""
        response = await self.http.get("/sim/savings", params={"monthly_transfer": monthly_transfer})
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def snapshot(self) -> None:
        """Write a snapshot now (file-backed state)."""
        await self._post("/sim/snapshot", {})
