"""Fault profiles of the simulated bank: what goes wrong, how often, deterministically for a seed.

Two kinds of faults:

- *Transport faults*, decided per request in the HTTP layer: 503 or 500 before the request is applied, 429
  with ``Retry-After``, latency, and (``hostile``) a request applied and then answered with a 502 or never
  answered in time (the client times out after the bank applied it). A decision is a hash of the seed, the
  request's identity (method, path and idempotency key, or query) and how many times that request was seen,
  so a retry gets a fresh draw and a run is reproducible. After ``max_faulted_attempts`` sightings of the
  same request it always goes through, so a client with enough attempts always makes progress.
- *Settlement faults*, decided when a batch is accepted and recorded in the journal (they change state):
  batches settled hours later, settled in two tranches, and random ``processing_error`` rejections.

Webhook faults (``hostile``): events delivered twice and out of order.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from adapters.bank.simulator.rng import hash_ints, hash_text, unit16


class Fault(enum.Enum):
    """A transport fault injected into one request."""

    NONE = "none"
    UNAVAILABLE = "unavailable"  # 503 before applying
    INTERNAL_ERROR = "internal_error"  # 500 before applying
    RATE_LIMITED = "rate_limited"  # 429 before applying
    ERROR_AFTER_APPLY = "error_after_apply"  # applied, answered 502
    TIMEOUT_AFTER_APPLY = "timeout_after_apply"  # applied, answer held back past the client's timeout


@dataclass(frozen=True)
class Decision:
    """The fault and latency decided for one request."""

    fault: Fault
    latency_seconds: float


@dataclass(frozen=True)
class SettlementFaults:
    """The state-changing part of a profile; journaled whenever the profile changes."""

    settle_delay_seconds: tuple[int, int] = (60, 300)
    late_batch_rate: float = 0.0
    late_delay_hours: tuple[int, int] = (2, 12)
    split_batch_rate: float = 0.0
    reject_rate: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """As JSON, for the journal."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SettlementFaults:
        """From the journal's JSON."""
        return cls(
            settle_delay_seconds=tuple(data["settle_delay_seconds"]),
            late_batch_rate=float(data["late_batch_rate"]),
            late_delay_hours=tuple(data["late_delay_hours"]),
            split_batch_rate=float(data["split_batch_rate"]),
            reject_rate=float(data["reject_rate"]),
        )


@dataclass(frozen=True)
class FaultProfile:
    """A named set of fault rates (each a probability per request, per batch or per item)."""

    name: str
    unavailable_rate: float = 0.0
    internal_error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_seconds: int = 1
    latency_rate: float = 0.0
    latency_seconds: tuple[float, float] = (0.0, 0.0)
    error_after_apply_rate: float = 0.0
    timeout_after_apply_rate: float = 0.0
    hang_seconds: float = 15.0
    max_faulted_attempts: int = 6
    webhook_duplicate_rate: float = 0.0
    webhook_reorder: bool = False
    settlement: SettlementFaults = field(default_factory=SettlementFaults)

    def decide(self, seed: int, method: str, identity: str, sighting: int) -> Decision:
        """The transport fault for the ``sighting``-th time (1-based) this request is seen."""
        if sighting > self.max_faulted_attempts:
            return Decision(Fault.NONE, 0.0)
        h = hash_ints(seed, 0xFA17, hash_text(f"{method} {identity}"), sighting)
        latency = 0.0
        if unit16(h, 3) < self.latency_rate:
            low, high = self.latency_seconds
            latency = low + (high - low) * unit16(h, 2)
        u = unit16(h, 0)
        thresholds = [
            (self.unavailable_rate, Fault.UNAVAILABLE),
            (self.internal_error_rate, Fault.INTERNAL_ERROR),
            (self.rate_limit_rate, Fault.RATE_LIMITED),
        ]
        if method == "POST":
            thresholds += [
                (self.error_after_apply_rate, Fault.ERROR_AFTER_APPLY),
                (self.timeout_after_apply_rate, Fault.TIMEOUT_AFTER_APPLY),
            ]
        for rate, fault in thresholds:
            if u < rate:
                return Decision(fault, latency)
            u -= rate
        return Decision(Fault.NONE, latency)


NONE = FaultProfile(name="none")
FLAKY = FaultProfile(
    name="flaky",
    unavailable_rate=0.06,
    internal_error_rate=0.04,
    rate_limit_rate=0.05,
    latency_rate=0.2,
    latency_seconds=(0.0, 0.05),
)
HOSTILE = FaultProfile(
    name="hostile",
    unavailable_rate=0.06,
    internal_error_rate=0.04,
    rate_limit_rate=0.05,
    latency_rate=0.2,
    latency_seconds=(0.0, 0.05),
    error_after_apply_rate=0.05,
    timeout_after_apply_rate=0.05,
    webhook_duplicate_rate=0.2,
    webhook_reorder=True,
    settlement=SettlementFaults(
        settle_delay_seconds=(60, 900),
        late_batch_rate=0.1,
        late_delay_hours=(2, 12),
        split_batch_rate=0.2,
        reject_rate=0.002,
    ),
)
PROFILES: dict[str, FaultProfile] = {p.name: p for p in (NONE, FLAKY, HOSTILE)}


def get_profile(name_or_profile: str | FaultProfile) -> FaultProfile:
    """A profile by name (``none``, ``flaky``, ``hostile``), or the profile given."""
    if isinstance(name_or_profile, FaultProfile):
        return name_or_profile
    try:
        return PROFILES[name_or_profile]
    except KeyError:
        raise ValueError(f"unknown fault profile {name_or_profile!r}; use one of {sorted(PROFILES)}") from None
