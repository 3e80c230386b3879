"""Prometheus metrics of the ledger capability."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRANSFERS = Counter("cct_ledger_transfers_total", "Transfers written through the API", ["kind", "replayed"])
LEDGER_ERRORS = Counter("cct_ledger_errors_total", "Ledger conditions refused", ["type"])
VERIFY_PROBLEMS = Gauge("cct_ledger_verify_problems", "Problems found by the last verification")
SEALED_TRANSFERS = Counter("cct_ledger_sealed_transfers_total", "Transfers sealed into the audit chain")
SEAL_SECONDS = Histogram("cct_ledger_seal_seconds", "Time of one sealing run")
TRANSFER_GROUPS = Histogram(
    "cct_ledger_transfer_group_size",
    "Concurrent HTTP transfers taken together (together: written as one; false: each went alone)",
    ["together"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
