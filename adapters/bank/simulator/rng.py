"""Deterministic randomness for the simulated bank: stateless 64-bit hashing (splitmix64).

Every random choice the simulator makes (a household's profile, a withdrawal's day, a fault) is a hash of
the seed and of stable facts (account number, credit count, request key), never a draw from a shared
generator. The outcome therefore does not depend on the order requests arrive in, which is what makes a run
reproducible for a seed even under concurrency and after a restart.
"""

from __future__ import annotations

import hashlib
import math

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def mix64(x: int) -> int:
    """The splitmix64 finalizer: a bijective, well-mixed 64-bit hash of ``x``."""
    x = (x + _GOLDEN) & MASK64
    x = ((x ^ (x >> 30)) * _M1) & MASK64
    x = ((x ^ (x >> 27)) * _M2) & MASK64
    return x ^ (x >> 31)


def hash_ints(*parts: int) -> int:
    """A 64-bit hash of a sequence of integers."""
    h = 0
    for part in parts:
        h = mix64(h ^ (part & MASK64))
    return h


def hash_text(text: str) -> int:
    """A 64-bit hash of a string, stable across processes (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def unit(h: int) -> float:
    """A float in [0, 1) from the top 53 bits of a 64-bit hash."""
    return (h >> 11) * (1.0 / (1 << 53))


def unit16(h: int, lane: int) -> float:
    """A float in [0, 1) from one of the four 16-bit lanes of a 64-bit hash (coarse but cheap)."""
    return ((h >> (16 * lane)) & 0xFFFF) / 65536.0


def exponential(u: float, mean: float) -> float:
    """An exponential variate with the given mean from a uniform ``u`` in [0, 1)."""
    return -math.log(1.0 - u) * mean
