"""Fixtures of the bank adapter tests: a client with no real sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.bank.client import BankClient
from adapters.bank.retry import RetryPolicy
from tests.adapters.bank.bank_fixtures import BASE, Sleeps


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(sleeps: Sleeps) -> AsyncIterator[BankClient]:
    """A client on ``https://bank.test`` (mock it with respx), 4 attempts, jitter fixed at its maximum."""
    bank = BankClient(
        BASE,
        api_key="test-key",
        webhook_secret="whsec_test_secret",
        timeout=1.0,
        retry=RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=2.0, max_retry_after=30),
        sleep=sleeps,
        random=lambda: 0.999999,
    )
    yield bank
    await bank.aclose()
