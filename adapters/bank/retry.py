"""Retry policy of the bank client: bounded attempts, exponential backoff with full jitter, Retry-After.

Full jitter (a uniform delay between 0 and the exponential cap) spreads the retries of many clients after
a shared outage instead of synchronising them. A ``Retry-After`` from the bank wins over the backoff, but a
bank asking us to wait longer than ``max_retry_after`` ends the call instead of parking it.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class RetryPolicy:
    """How a request is retried.

    Attributes:
        max_attempts: attempts in total, the first included (at least 1).
        base_delay: the backoff cap of the first retry, in seconds; it doubles per retry.
        max_delay: the largest backoff cap, in seconds.
        max_retry_after: the longest ``Retry-After`` honoured, in seconds.
    """

    max_attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def backoff_cap(self, retry: int) -> float:
        """The upper bound of the delay before retry number ``retry`` (1 for the first retry)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        return min(self.max_delay, self.base_delay * math.pow(2, retry - 1))

    def backoff(self, retry: int, random_value: float) -> float:
        """The delay before retry number ``retry``, given a uniform ``random_value`` in [0, 1)."""
        return self.backoff_cap(retry) * min(max(random_value, 0.0), 1.0)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date); None if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
