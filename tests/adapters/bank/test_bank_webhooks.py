"""Webhook signatures: accept a fresh signed delivery, reject tampering, wrong secrets and replays."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from adapters.bank import webhooks
from adapters.bank.client import BankClient
from services.ports.bank import EventType, WebhookVerificationError
from tests.adapters.bank.bank_fixtures import batch_json, item_json

SECRET = "whsec_test_secret"
NOW = 1_736_168_400  # 2025-01-06T13:00:00Z
EVENT = {
    "id": "evt_bcdfghjklm",
    "object": "event",
    "type": "credit_items.settled",
    "created_at": "2025-01-06T08:05:00-05:00",
    "data": {"batch": batch_json(status="settled", pending_count=0), "items": [item_json(0), item_json(1)]},
}
BODY = orjson.dumps(EVENT)


def signed(body: bytes = BODY, t: int = NOW, secret: str = SECRET) -> dict[str, str]:
    return {"Bank-Signature": webhooks.signature_header(secret, t, body), "Content-Type": "application/json"}


def test_the_documented_scheme() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert webhooks.signature_header(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"


def test_fresh_signed_delivery_is_accepted_and_parsed() -> None:
    event = webhooks.verify_webhook(SECRET, signed(), BODY, now=NOW + 10)
    assert event.type is EventType.CREDIT_ITEMS_SETTLED
    assert [i.reference for i in event.data.items] == ["2025-B1:0000000", "2025-B1:0000001"]


def test_header_name_is_case_insensitive() -> None:
    headers = {"bank-signature": signed()["Bank-Signature"]}
    assert webhooks.verify_signature(SECRET, headers, BODY, now=NOW) == NOW


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [
        (signed(), BODY.replace(b"20000", b"90000"), "signature_mismatch"),
        (signed(secret="another-secret"), BODY, "signature_mismatch"),
        ({}, BODY, "signature_missing"),
        ({"Bank-Signature": "sha256=abc"}, BODY, "signature_malformed"),
        ({"Bank-Signature": f"t={NOW}"}, BODY, "signature_malformed"),
        ({"Bank-Signature": f"t=soon,v1={'0' * 64}"}, BODY, "signature_malformed"),
        (signed(t=NOW - 301), BODY, "timestamp_out_of_tolerance"),
        (signed(t=NOW + 301), BODY, "timestamp_out_of_tolerance"),
        (signed(b"{}"), b"{}", "body_invalid"),
    ],
    ids=[
        "tampered",
        "wrong-secret",
        "missing",
        "malformed",
        "no-v1",
        "bad-t",
        "replayed-late",
        "future",
        "not-an-event",
    ],
)
def test_rejections_name_their_reason(headers: dict[str, str], body: bytes, code: str) -> None:
    with pytest.raises(WebhookVerificationError) as info:
        webhooks.verify_webhook(SECRET, headers, body, now=NOW)
    assert info.value.code == code


def test_replay_within_the_window_is_accepted_outside_refused() -> None:
    headers = signed(t=NOW)
    assert webhooks.verify_signature(SECRET, headers, BODY, now=NOW + 300) == NOW
    with pytest.raises(WebhookVerificationError, match="possible replay"):
        webhooks.verify_signature(SECRET, headers, BODY, now=NOW + 301)
    assert webhooks.verify_signature(SECRET, headers, BODY, now=NOW + 3600, tolerance=3600) == NOW


def test_secret_rotation_accepts_either_secret() -> None:
    old = signed(secret="old-secret-123")["Bank-Signature"]
    new = signed(secret="new-secret-456")["Bank-Signature"]
    both = {"Bank-Signature": f"{old},v1={new.split('v1=')[1]}"}
    for headers in ({"Bank-Signature": old}, {"Bank-Signature": new}, both):
        webhooks.verify_signature(["new-secret-456", "old-secret-123"], headers, BODY, now=NOW)
    with pytest.raises(WebhookVerificationError):
        webhooks.verify_signature(["new-secret-456"], {"Bank-Signature": old}, BODY, now=NOW)


def test_no_secret_configured_refuses_everything() -> None:
    with pytest.raises(WebhookVerificationError) as info:
        webhooks.verify_signature("", signed(), BODY, now=NOW)
    assert info.value.code == "secret_missing"


async def test_client_verifies_with_its_secret_and_clock() -> None:
    clock = [float(NOW)]
    client = BankClient("https://bank.test", api_key="k", webhook_secret=SECRET, clock=lambda: clock[0])
    assert client.verify_webhook(signed(), BODY).id == "evt_bcdfghjklm"
    clock[0] += 301
    with pytest.raises(WebhookVerificationError, match="replay"):
        client.verify_webhook(signed(), BODY)
    await client.aclose()
