"""The running simulator: the bank's state, its store, the fault profile, webhooks and the clock policy.

The FastAPI app (``app.py``) is a thin HTTP layer over this object; tests and demos may also reach it as
``app.state.simulator``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from adapters.bank.simulator import ids
from adapters.bank.simulator.core import SimConfig, SimulatedBank
from adapters.bank.simulator.faults import FaultProfile
from adapters.bank.simulator.store import Store
from adapters.bank.simulator.webhooks import WebhookDispatcher, WebhookReceiver

log = structlog.get_logger()

DEFAULT_AUTO_ADVANCE_SECONDS = 300
_MAX_SIGHTINGS = 200_000


class Simulator:
    """One simulated bank, ready to serve.

    Args:
        store: where the state lives (``MemoryStore`` or ``FileStore``).
        config: the world's parameters for a new state (None: the stored ones, or the defaults).
        faults: the fault profile in force.
        api_key: the bearer token the bank accepts; empty accepts any non-empty token.
        auto_advance_seconds: the most simulated seconds a batch lookup moves the clock, towards the next
            settlement due (0: only the control API moves it).
        webhook_target: where events are delivered (URL or in-process receiver), or None.
        webhook_secret: the HMAC secret for webhook signatures.
        wall_clock: unix time, for webhook timestamps.
    """

    def __init__(
        self,
        store: Store,
        config: SimConfig | None,
        faults: FaultProfile,
        *,
        api_key: str = "",
        auto_advance_seconds: int = DEFAULT_AUTO_ADVANCE_SECONDS,
        webhook_target: str | WebhookReceiver | None = None,
        webhook_secret: str = "",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.faults = faults
        self.api_key = api_key
        self.auto_advance_seconds = auto_advance_seconds
        self.bank: SimulatedBank = store.open(config, faults.settlement)
        if self.bank.settlement != faults.settlement:
            self.execute({"op": "set_faults", "settlement": faults.settlement.to_json()})
        self.webhooks = WebhookDispatcher(self, webhook_target, webhook_secret, wall_clock)
        self._sightings: dict[str, int] = {}
        self._requests = 0
        self.closed = False

    def execute(self, cmd: dict[str, Any], encoded: bytes | None = None) -> tuple[int, bytes, bool]:
        """Apply a command to the bank (journaled by the store); snapshot when the journal grew large.

        ``encoded`` is the command as JSON when the caller made it already (see ``SimulatedBank.execute``).
        """
        result = self.bank.execute(cmd, encoded=encoded)
        if self.store.snapshot_due:
            self.store.snapshot(self.bank)
        return result

    def set_faults(self, faults: FaultProfile) -> None:
        """Switch the fault profile; its settlement part is journaled (it changes what batches do)."""
        self.faults = faults
        if self.bank.settlement != faults.settlement:
            self.execute({"op": "set_faults", "settlement": faults.settlement.to_json()})

    def advance_to(self, target: int) -> dict[str, Any]:
        """Advance the clock to simulated second ``target``; returns the clock's state."""
        _, body, _ = self.execute({"op": "advance", "to": target})
        result: dict[str, Any] = orjson.loads(body)
        return result

    def auto_advance(self, batch: int | None = None) -> None:
        """Let simulated time pass for a batch lookup, so settlement progresses without control calls: up to the
        next settlement the caller may be waiting for (``batch``'s, or any batch's when None), at most
        ``auto_advance_seconds``. A lookup with no settlement due moves no time: a payment run's thousand
        lookups take the clock minutes forward, as the bank's settlements take, not a week of households'
        withdrawals."""
        if self.auto_advance_seconds <= 0:
            return
        now = self.bank.now
        due = self.bank.next_settlement(batch)
        if due is not None and due > now:
            self.execute({"op": "advance", "to": min(due, now + self.auto_advance_seconds), "brief": True})

    def sighting(self, identity: str) -> int:
        """How many times (1-based) this request identity has been seen, for per-attempt fault draws."""
        if len(self._sightings) > _MAX_SIGHTINGS:
            self._sightings.clear()
        n = self._sightings.get(identity, 0) + 1
        self._sightings[identity] = n
        return n

    def next_request_id(self) -> str:
        """A fresh ``req_`` id."""
        self._requests += 1
        return ids.REQUEST.encode(self._requests)

    def count_fault(self, name: str) -> None:
        """Count an injected fault for ``/sim/stats``."""
        faults = self.bank.stats.faults
        faults[name] = faults.get(name, 0) + 1

    async def after_change(self) -> None:
        """Deliver webhooks that became due."""
        await self.webhooks.flush()

    def snapshot(self) -> None:
        """Write a snapshot now (a no-op in memory)."""
        self.store.snapshot(self.bank)

    async def aclose(self) -> None:
        """Write a final snapshot (file store), close the journal and the webhook client."""
        if self.closed:
            return
        self.closed = True
        await self.webhooks.aclose()
        self.store.close(self.bank)
        log.info("bank_sim.closed")
