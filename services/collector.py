"""Python's cyclic garbage collector, tuned while a long batch job runs.

A payment run makes and drops millions of short-lived objects (rows, items, models) that live across a few
awaits. With CPython's default young threshold (700 allocations), many of them are still alive at a young
collection, are promoted, and every promotion counts towards the next *full* collection, which walks every
object of the process. In a process that also holds much long-lived state (the demo's and the benchmark's
in-process bank with its accounts), each full collection costs a fraction of a second and they come every
second or so; measured at 200,000 households, they were about a sixth of the executor's time
(docs/performance.md). A larger young threshold lets those objects die by reference counting before any
collection sees them. Nothing else changes: reference counting frees what it always did, cycles are still
collected, only less often.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

BATCH_YOUNG_THRESHOLD = 100_000
"""Allocations between young collections while a batch job runs (CPython's default: 700)."""

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, ...] = ()


@contextlib.contextmanager
def batch_collector(young: int = BATCH_YOUNG_THRESHOLD) -> Iterator[None]:
    """Raise the collector's young threshold for the duration; the process's own setting comes back after.

    Nested and concurrent uses (two runs executed by one process) share one change: the first to enter
    sets it, the last to leave restores it.
    """
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(max(young, _saved[0]), *_saved[1:])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
