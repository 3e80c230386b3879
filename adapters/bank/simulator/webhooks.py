"""Webhook delivery from the simulated bank: signed, at least once, and (``hostile``) duplicated, reordered.

Events are recorded by the bank as batches settle; the dispatcher delivers the undelivered ones after each
request that changed state (and on ``POST /sim/webhooks/flush``), to a URL or, in-process, to an async
callable. A delivery succeeds on a 2xx answer; a failed one is tried again at the next flush, up to
``MAX_ATTEMPTS`` times. Deliveries are recorded in the journal, so a restart does not resend everything.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import structlog

from adapters.bank.simulator.rng import hash_ints, unit
from adapters.bank.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header

if TYPE_CHECKING:
    from adapters.bank.simulator.runtime import Simulator

log = structlog.get_logger()

MAX_ATTEMPTS = 8
WebhookReceiver = Callable[[Mapping[str, str], bytes], Awaitable[int]]
"""An in-process receiver: called with the headers and raw body, returns the HTTP status it answers."""


def asgi_receiver(app: Any, path: str = "/webhooks/bank") -> WebhookReceiver:
    """A receiver that POSTs deliveries to an ASGI app (e.g. the cct-ledger API) in-process.

    Args:
        app: the ASGI application.
        path: the webhook route in that application.
    """
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://webhooks.local")

    async def receive(headers: Mapping[str, str], body: bytes) -> int:
        response = await client.post(path, content=body, headers=dict(headers))
        return response.status_code

    return receive


class WebhookDispatcher:
    """Delivers the bank's events.

    Args:
        sim: the simulator (its bank holds the events; its fault profile shapes delivery).
        target: a URL, an in-process receiver, or None (events are only listed at ``/v1/events``).
        secret: the HMAC secret.
        wall_clock: unix time for the signature timestamp (receivers check it against their clock).
    """

    def __init__(
        self,
        sim: Simulator,
        target: str | WebhookReceiver | None,
        secret: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.sim = sim
        self.target = target
        self.secret = secret
        self.wall_clock = wall_clock
        self._attempts: dict[int, int] = {}
        self._deferred: set[int] = set()
        self._flushing = False
        self._flushes = 0
        self._http: httpx.AsyncClient | None = None

    def configure(self, target: str | WebhookReceiver | None, secret: str | None) -> None:
        """Change the target and (when given) the secret."""
        self.target = target
        if secret is not None:
            self.secret = secret

    async def aclose(self) -> None:
        """Close the HTTP client used for URL targets."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _pending(self) -> list[int]:
        state = self.sim.bank.ev_state
        out = []
        seq = state.find(0)  # C-speed scan: delivered events are skipped without a Python loop
        while seq >= 0:
            if self._attempts.get(seq, 0) < MAX_ATTEMPTS:
                out.append(seq)
            seq = state.find(0, seq + 1)
        return out

    async def flush(self) -> int:
        """Deliver what is due; return how many events were delivered. Never raises for a receiver's fault."""
        if self._flushing or self.target is None or not self.secret:
            return 0
        self._flushing = True
        delivered_total = 0
        try:
            tried: set[int] = set()
            # A receiver may call the bank while we deliver, creating events: those go in the next round.
            # An event that failed waits for the next flush.
            for _ in range(4):
                pending = [seq for seq in self._pending() if seq not in tried]
                if not pending:
                    break
                self._flushes += 1
                order = self._order(pending)
                tried.update(order)
                delivered = [seq for seq in order if await self._deliver(seq)]
                if delivered:
                    self.sim.execute({"op": "webhooks_delivered", "events": delivered})
                    delivered_total += len(delivered)
        finally:
            self._flushing = False
        return delivered_total

    def _order(self, pending: list[int]) -> list[int]:
        profile = self.sim.faults
        if not profile.webhook_reorder:
            return pending
        seed = self.sim.bank.seed
        order = sorted(pending, key=lambda seq: hash_ints(seed, 0x0DE5, self._flushes, seq))
        # Hold some events back once so they arrive after later ones, possibly in another flush.
        held = [seq for seq in order if seq not in self._deferred and unit(hash_ints(seed, 0xDEFE, seq)) < 0.2]
        self._deferred.update(held)
        kept = [seq for seq in order if seq not in held]
        return kept if kept else order

    async def _deliver(self, seq: int) -> bool:
        bank = self.sim.bank
        event = bank.event_json(seq)
        body = orjson.dumps(event)
        copies = 1
        if unit(hash_ints(bank.seed, 0xD0B1, seq)) < self.sim.faults.webhook_duplicate_rate:
            copies = 2
        ok = False
        for _ in range(copies):
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature_header(self.secret, int(self.wall_clock()), body),
                EVENT_ID_HEADER: event["id"],
            }
            try:
                status = await self._send(headers, body)
            except (httpx.HTTPError, OSError) as exc:
                log.warning("bank_sim.webhook_failed", event_id=event["id"], error=type(exc).__name__)
                status = 0
            if 200 <= status < 300:
                ok = True
                bank.stats.webhook_deliveries += 1
            else:
                bank.stats.webhook_failures += 1
        if not ok:
            self._attempts[seq] = self._attempts.get(seq, 0) + 1
        return ok

    async def _send(self, headers: Mapping[str, str], body: bytes) -> int:
        target = self.target
        if target is None:
            return 0
        if isinstance(target, str):
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=5.0)
            response = await self._http.post(target, content=body, headers=dict(headers))
            return response.status_code
        return await target(headers, body)
