"""Python's cyclic garbage collector, tuned for a long batch job and for a server process.

A payment run makes and drops millions of short-lived objects (rows, items, models) that live across a few
awaits. With CPython's default young threshold (700 allocations), many of them are still alive at a young
collection, are promoted, and every promotion counts towards the next *full* collection, which walks every
object of the process. In a process that also holds much long-lived state (the demo's and the benchmark's
in-process bank with its accounts), each full collection costs a fraction of a second and they come every
second or so; measured at 200,000 households, they were about a sixth of the executor's time
(docs/performance.md). A larger young threshold lets those objects die by reference counting before any
collection sees them. Nothing else changes: reference counting frees what it always did, cycles are still
collected, only less often. A server makes the same kind of short-lived objects on every request: in-process,
``POST /v1/transfers`` took 5 to 21% less CPU per request with the larger threshold (docs/performance.md).
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


def server_collector(young: int = BATCH_YOUNG_THRESHOLD) -> None:
    """For a server process, once it has started: what startup built (the application, its routes and
    models, the pool) moves to the permanent generation, out of every later collection's walk, and the young
    threshold is raised for good, as :func:`batch_collector` does for a job."""
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(young, threshold[0]), *threshold[1:])
