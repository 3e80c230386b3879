"""The bank the entry points talk to, chosen by configuration (``CCT_BANK_URL`` and its secrets)."""

from __future__ import annotations

from adapters.bank.client import BankClient
from services.config import Settings
from services.payments.errors import BankNotConfigured


def bank_from_settings(settings: Settings) -> BankClient:
    """A client for the configured bank.

    Raises:
        BankNotConfigured: ``CCT_BANK_URL`` is not set (only ``demo`` uses the in-process simulated bank).
    """
    if not settings.bank_url:
        raise BankNotConfigured(
            "no bank is configured: set CCT_BANK_URL (and CCT_BANK_API_KEY if the bank asks for one) to the bank's "
            "API, e.g. CCT_BANK_URL=http://127.0.0.1:8100 with `cct-ledger bank-sim --port 8100` running; "
            "only `cct-ledger demo` uses the in-process simulated bank"
        )
    return BankClient(
        settings.bank_url,
        api_key=settings.bank_api_key,
        webhook_secret=settings.bank_webhook_secret,
        timeout=settings.bank_timeout_seconds,
        max_attempts=settings.bank_max_attempts,
    )
