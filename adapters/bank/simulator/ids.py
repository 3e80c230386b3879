"""Object ids of the simulated bank: a type prefix and ten letters, decodable back to a sequence number.

``acct_``, ``bat_``, ``itm_``, ``sln_``, ``evt_``, ``hld_``, ``req_``: each id is a 40-bit permutation of the
object's sequence number written with sixteen consonants. Ids look opaque (like a real bank's), decode in O(1)
without an index, and contain no digits, so the log masking of DNI- and account-shaped digit runs never
hides them.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from adapters.bank.simulator.rng import from_lanes, lane_constant, to_lanes

_ALPHABET: Final = "bcdfghjklmnpqrst"
_TO_LETTERS: Final = str.maketrans("0123456789abcdef", _ALPHABET)
_TO_HEX: Final = str.maketrans(_ALPHABET, "0123456789abcdef")
# Letters for every 16-bit and 8-bit value: encoding is three lookups instead of a translate per id.
_L16: Final = [format(i, "04x").translate(_TO_LETTERS) for i in range(1 << 16)]
_L8: Final = [s[2:] for s in _L16[:256]]
_BITS: Final = 40
_MASK: Final = (1 << _BITS) - 1
_WIDTH: Final = 10


def _encoder(prefix: str, multiplier: int, xor: int) -> Callable[[int], str]:
    # A closure: ids are made millions of times per run, and cell loads beat attribute loads.
    l16, l8, mask = _L16, _L8, _MASK

    def encode(seq: int) -> str:
        value = ((seq * multiplier) & mask) ^ xor
        return prefix + l16[value >> 24] + l16[(value >> 8) & 0xFFFF] + l8[value & 0xFF]

    return encode


class IdCodec:
    """Encode and decode one type of id.

    Args:
        prefix: the type prefix, with its underscore (``"itm_"``).
        salt: distinguishes the permutation of one type from another's.
    """

    __slots__ = ("_inverse", "_multiplier", "_xor", "encode", "prefix")

    def __init__(self, prefix: str, salt: int) -> None:
        self.prefix = prefix
        self._multiplier = ((0x9E3779B97F ^ (salt * 0x5851F42D)) & _MASK) | 1  # odd: invertible mod 2**40
        self._inverse = pow(self._multiplier, -1, 1 << _BITS)
        self._xor = (salt * 0x2545F4914F) & _MASK
        self.encode: Callable[[int], str] = _encoder(prefix, self._multiplier, self._xor)
        """The id of object number ``seq`` (0 ≤ seq < 2**40)."""

    def encode_many(self, seqs: Iterable[int]) -> list[str]:
        """The ids of many objects, as :attr:`encode` gives them.

        The permuted values go through one array: its bytes in hex (a ``:`` between values), translated to
        letters and cut into ids by ``str`` methods, without a table lookup or a slice per id (the letter
        tables' lookups miss the processor's caches when pages are made between other work).
        """
        multiplier, xor, mask = self._multiplier, self._xor, _MASK
        seqs = seqs if isinstance(seqs, Sequence) else list(seqs)
        n = len(seqs)
        if not n:
            return []
        if n < 64 or min(seqs) < 0:
            values = array("Q", [((seq * multiplier) & mask) ^ xor for seq in seqs])
        else:  # the permutation of every seq at once, in 128-bit lanes (seq * multiplier < 2**80)
            lanes = ((to_lanes(seqs) * multiplier) & lane_constant(mask, n)) ^ lane_constant(xor, n)
            values = array("Q", from_lanes(lanes, n))
        if sys.byteorder == "little":
            values.byteswap()
        # Each value is 8 bytes, the first 3 zero (values have 40 bits): 6 leading zero digits, "bbbbbb".
        text = values.tobytes().hex(":", 8).translate(_TO_LETTERS)
        prefix = self.prefix
        return (prefix + text[16 - _WIDTH :]).replace(":" + "b" * (16 - _WIDTH), "\n" + prefix).split("\n")

    def decode(self, text: str) -> int | None:
        """The sequence number of an id, or None if ``text`` is not an id of this type."""
        if len(text) != len(self.prefix) + _WIDTH or not text.startswith(self.prefix):
            return None
        body = text[len(self.prefix) :]
        if body.strip(_ALPHABET):
            return None
        value = int(body.translate(_TO_HEX), 16)
        return ((value ^ self._xor) * self._inverse) & _MASK


ACCOUNT = IdCodec("acct_", 1)
BATCH = IdCodec("bat_", 2)
ITEM = IdCodec("itm_", 3)
LINE = IdCodec("sln_", 4)
EVENT = IdCodec("evt_", 5)
HOLD = IdCodec("hld_", 6)
REQUEST = IdCodec("req_", 7)
