"""Deterministic randomness for the simulated bank: stateless 64-bit hashing (splitmix64).

Every random choice the simulator makes (a household's profile, a withdrawal's day, a fault) is a hash of
the seed and of stable facts (account number, credit count, request key), never a draw from a shared
generator. The outcome therefore does not depend on the order requests arrive in, which is what makes a run
reproducible for a seed even under concurrency and after a restart.
"""

from __future__ import annotations

import hashlib
import math
import sys
from array import array
from collections.abc import Sequence
from typing import Final

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
M1 = 0xBF58476D1CE4E5B9
M2 = 0x94D049BB133111EB
"""The splitmix64 constants, for loops that inline :func:`mix64` (a call per item costs more than the hash)."""
_GOLDEN, _M1, _M2 = GOLDEN, M1, M2


def mix64(x: int) -> int:
    """The splitmix64 finalizer: a bijective, well-mixed 64-bit hash of ``x``."""
    x = (x + _GOLDEN) & MASK64
    x = ((x ^ (x >> 30)) * _M1) & MASK64
    x = ((x ^ (x >> 27)) * _M2) & MASK64
    return x ^ (x >> 31)


# --- many values at once -------------------------------------------------------------------------------
#
# A settlement hashes a thousand credits, a bulk opening fifty thousand accounts: one Python-level mix64 each
# costs more than everything else done for them. The values are placed in 128-bit lanes of one integer
# (each 64-bit value with 64 zero bits above it), and every step of mix64 runs on the whole integer: additions
# and 64-bit x 64-bit products stay inside their lane, and the bits a right shift moves down from the next
# lane land in the upper half, cleared by the mask before the next product. The result is exactly mix64 of
# each value.

_BULK: Final = 64
"""Below this many values, the plain loop is as fast."""


def to_lanes(values: Sequence[int]) -> int:
    """``values`` (each 0 <= v < 2**64) in 128-bit lanes of one integer, the first in the lowest lane."""
    words = array("Q", bytes(16 * len(values)))
    words[::2] = array("Q", values)
    if sys.byteorder == "big":
        words.byteswap()
    return int.from_bytes(words.tobytes(), "little")


def from_lanes(lanes: int, n: int) -> list[int]:
    """The ``n`` values of :func:`to_lanes` (each lane must hold less than 2**64)."""
    words = array("Q", lanes.to_bytes(16 * n, "little"))
    if sys.byteorder == "big":
        words.byteswap()
    return words[::2].tolist()


def lane_constant(value: int, n: int) -> int:
    """``value`` (0 <= value < 2**64) in each of ``n`` lanes."""
    return int.from_bytes(value.to_bytes(16, "little") * n, "little")


def mix64_lanes(lanes: int, n: int) -> int:
    """:func:`mix64` of each of ``n`` lanes (see :func:`to_lanes`)."""
    mask = lane_constant(MASK64, n)
    x = (lanes + lane_constant(GOLDEN, n)) & mask
    x = (((x ^ (x >> 30)) & mask) * M1) & mask
    x = (((x ^ (x >> 27)) & mask) * M2) & mask
    return (x ^ (x >> 31)) & mask


def mix64_many(values: Sequence[int]) -> list[int]:
    """``[mix64(v) for v in values]`` for 0 <= v < 2**64, computed a lane at a time for many values."""
    n = len(values)
    if n < _BULK:
        return [mix64(v) for v in values]
    return from_lanes(mix64_lanes(to_lanes(values), n), n)


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
