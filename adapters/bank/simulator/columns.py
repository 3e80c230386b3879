"""A column of strings that the garbage collector does not walk (account names, item references).

A ``list`` of a million strings costs nothing to keep, but every full collection of the cyclic garbage
collector walks it, touching each of the million strings only to learn that a string holds no reference:
at a million households that was a tenth of a second per full collection, and a bulk run has dozens. Here
the strings live in chunks of :data:`CHUNK`; a full chunk becomes a ``tuple``, and CPython stops tracking a
tuple of strings after its first young collection, so the collector never visits them again. Only the last,
partial chunk is a list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, overload

CHUNK: Final = 4096
_SHIFT: Final = 12
_LOW: Final = CHUNK - 1
assert 1 << _SHIFT == CHUNK


class StringColumn:
    """An append-only sequence of strings, indexed from 0 like a list.

    Args:
        values: the initial strings.
    """

    __slots__ = ("_chunks", "_tail")

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._chunks: list[tuple[str, ...]] = []
        self._tail: list[str] = []
        self.extend(values)

    def __len__(self) -> int:
        return (len(self._chunks) << _SHIFT) + len(self._tail)

    def append(self, value: str) -> None:
        """Add one string at the end."""
        tail = self._tail
        tail.append(value)
        if len(tail) == CHUNK:
            self._chunks.append(tuple(tail))
            self._tail = []

    def extend(self, values: Iterable[str]) -> None:
        """Add strings at the end, in order."""
        tail = self._tail
        tail.extend(values)
        if len(tail) >= CHUNK:
            full = len(tail) - len(tail) % CHUNK
            self._chunks.extend(tuple(tail[k : k + CHUNK]) for k in range(0, full, CHUNK))
            self._tail = tail[full:]

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._range(start, stop)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("StringColumn index out of range")
        chunk = index >> _SHIFT
        if chunk < len(self._chunks):
            return self._chunks[chunk][index & _LOW]
        return self._tail[index & _LOW]

    def _range(self, start: int, stop: int) -> list[str]:
        out: list[str] = []
        chunks, tail = self._chunks, self._tail
        while start < stop:
            chunk = start >> _SHIFT
            end = min(stop, (chunk + 1) << _SHIFT)
            values = chunks[chunk] if chunk < len(chunks) else tail
            out.extend(values[start & _LOW : ((end - 1) & _LOW) + 1])
            start = end
        return out

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks:
            yield from chunk
        yield from self._tail

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StringColumn):
            return self._chunks == other._chunks and self._tail == other._tail
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StringColumn(<{len(self)} strings>)"
