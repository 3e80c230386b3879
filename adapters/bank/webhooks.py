"""Webhook signatures of the bank interface: HMAC-SHA256 over a timestamp and the body, a freshness window.

Each delivery carries a header ``Bank-Signature: t=<unix seconds>,v1=<hex>`` where
``hex = HMAC-SHA256(secret, "<t>.<raw body>")``. A receiver recomputes the HMAC over the *raw* bytes it
received (before any JSON parsing), compares in constant time, and refuses a timestamp more than
``tolerance`` seconds away from its own clock, so a captured delivery cannot be replayed later. Several
``v1=`` entries may appear (secret rotation); one match is enough. The same event may legitimately arrive
twice (the bank retries): receivers deduplicate by the event ``id``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from services.ports.bank import WebhookEvent, WebhookVerificationError

SIGNATURE_HEADER = "Bank-Signature"
EVENT_ID_HEADER = "Bank-Event-Id"
DEFAULT_TOLERANCE_SECONDS = 300


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` with ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Bank-Signature`` header value for a delivery of ``body`` at ``timestamp``.

    Args:
        secret: the shared webhook secret.
        timestamp: unix seconds (the sender's clock).
        body: the exact bytes sent.

    Returns:
        ``"t=<timestamp>,v1=<hex>"``.
    """
    return f"t={timestamp},v1={compute_signature(secret, timestamp, body)}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def verify_signature(
    secrets: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """Check a delivery's signature and freshness; return its timestamp.

    Args:
        secrets: the shared secret, or several during a rotation.
        headers: the delivery's headers (any case).
        body: the raw body bytes.
        now: the receiver's clock, unix seconds.
        tolerance: the largest accepted distance between ``t`` and ``now``, in seconds.

    Raises:
        WebhookVerificationError: missing or malformed header, no matching signature, or a stale timestamp.
    """
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not any(keys):
        raise WebhookVerificationError("no webhook secret is configured", code="secret_missing")
    header = _header(headers, SIGNATURE_HEADER)
    if not header:
        raise WebhookVerificationError(f"the {SIGNATURE_HEADER} header is missing", code="signature_missing")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookVerificationError(
            f"the {SIGNATURE_HEADER} header must look like t=<unix>,v1=<hex>", code="signature_malformed"
        )
    expected = [compute_signature(key, timestamp, body) for key in keys if key]
    if not any(hmac.compare_digest(e, s) for e in expected for s in signatures):
        raise WebhookVerificationError("the signature does not match the body", code="signature_mismatch")
    if abs(now - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"the signature timestamp is {abs(now - timestamp):.0f} s away from now "
            f"(tolerance {tolerance:.0f} s): refusing a possible replay",
            code="timestamp_out_of_tolerance",
        )
    return timestamp


def verify_webhook(
    secrets: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> WebhookEvent:
    """Verify a delivery (see :func:`verify_signature`) and parse its event.

    Raises:
        WebhookVerificationError: the signature check failed or the body is not an event.
    """
    verify_signature(secrets, headers, body, now=now, tolerance=tolerance)
    try:
        return WebhookEvent.model_validate_json(body)
    except ValidationError as exc:
        raise WebhookVerificationError(
            f"the signed body is not a bank event: {exc.errors()[0]['msg']}", code="body_invalid"
        ) from exc
