"""Online transfers in groups: the transfers of callers waiting at the same moment, in one statement.

Each online transfer costs PostgreSQL a statement's start and end, its locks, its triggers and a durable
commit; on two cores that, not the rows, is what limits one transfer per transaction (about 1 ms of the
database's CPU each, ``docs/performance.md``). :class:`TransferGroups` lets concurrent callers share it: a
caller hands its transfer (request, idempotency key, actor) and waits; a worker takes every transfer
waiting at that moment (up to ``max_items``) and writes them with one call of ``ledger.create_transfers``
(migration ``0008_transfer_groups``) in one transaction. Nothing waits for a group to fill: under light
load each transfer goes alone, as before; under load the groups grow by themselves (group commit).

Grouping never changes an answer. The group is written as the transfers would be written one after the other
in the order taken (one record time for the group, ids taken before the locks: ``docs/architecture.md``), or
not at all: when any of them would be refused or is a replay, the database writes nothing and each transfer
then runs on its own (:meth:`ledger.engine.Ledger.transfer`, its own transaction), which gives it its own
answer (the transfer, the replay, or the error). A transfer that waits in a group is committed durably before
its caller hears of it, like any other.

Only keyed transfers are grouped (the key is what makes a group's outcome checkable: a caller that loses
its connection retries with the key). Two transfers with the same key never share a group.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import asyncpg
import structlog

from ledger.db import Connection
from ledger.engine import Ledger, _raise_translated
from ledger.models import Transfer, TransferRequest

log = structlog.get_logger(__name__)

MAX_ITEMS = 64
"""The most transfers one group may hold."""

_ALONE_AT_ONCE = 4
"""Transfers of a group that could not be written as one, written alone at once (each on its own connection):
enough to overlap their round trips, not so many that one group takes the pool from every other route."""


@dataclass(frozen=True, slots=True)
class GroupedTransfer:
    """One caller's transfer: the request, its idempotency key and who asks."""

    request: TransferRequest
    key: str
    actor: str


async def create_together(conn: Connection, items: Sequence[GroupedTransfer]) -> list[Transfer] | None:
    """Write ``items`` as new transfers in one statement, in order, all or none.

    Returns the transfers, or None when any of them would not be written as a new transfer (a replay, a
    reused key, a refusal): then nothing was written and each must go on its own to get its answer. Keys
    must be distinct. Run it on a connection in autocommit mode (one transaction) or inside a unit of work.
    """
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError("a group's idempotency keys must be distinct")
    leg_items: list[int] = []
    legs: list[int] = []
    codes: list[str] = []
    amounts: list[int] = []
    for n, item in enumerate(items, start=1):
        for leg, posting in enumerate(item.request.postings, start=1):
            leg_items.append(n)
            legs.append(leg)
            codes.append(posting.account)
            amounts.append(posting.signed)
    requests = [item.request for item in items]
    try:
        data = await conn.fetchval(
            "select ledger.create_transfers($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            keys,
            [r.digest() for r in requests],
            [r.pending for r in requests],
            [r.currency for r in requests],
            [r.effective_at for r in requests],
            [r.expires_at for r in requests],
            [r.description for r in requests],
            [r.metadata for r in requests],
            [item.actor for item in items],
            leg_items,
            legs,
            codes,
            amounts,
        )
    except asyncpg.PostgresError as e:
        _raise_translated(e)
        raise
    if data is None:
        return None
    return [Transfer.created(r, d) for r, d in zip(requests, data, strict=True)]


@dataclass(slots=True)
class _Waiting:
    item: GroupedTransfer
    future: asyncio.Future[Transfer]


@dataclass
class GroupStats:
    """What the groups did since the start (read by metrics and tests)."""

    groups: int = 0
    together: int = 0  # groups written as one
    grouped: int = 0  # transfers written by those groups
    alone: int = 0  # transfers that went on their own (taken alone, or after a group that could not be written)
    fallbacks: int = 0  # groups that could not be written as one
    sizes: dict[int, int] = field(default_factory=dict)  # transfers taken together -> how many times


class TransferGroups:
    """Group the online transfers of concurrent callers (see the module's description).

    Args:
        connection: opens a pooled connection in autocommit mode (``Database.connection``).
        max_items: the most transfers written together (1: each is written alone, in its caller's task).
        workers: groups written at once, each on its own connection.
        observe: called with each group's size and whether it was written as one (metrics).
    """

    def __init__(
        self,
        connection: Callable[[], AbstractAsyncContextManager[Connection]],
        *,
        max_items: int = 32,
        workers: int = 1,
        observe: Callable[[int, bool], None] | None = None,
    ) -> None:
        if not 1 <= max_items <= MAX_ITEMS:
            raise ValueError(f"max_items must be between 1 and {MAX_ITEMS}, got {max_items}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._connection = connection
        self.max_items = max_items
        self.workers = workers
        self._observe = observe
        self._waiting: deque[_Waiting] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = 0  # workers started and not ended
        self._in_flight: set[str] = set()  # keys of the groups being written
        self.stats = GroupStats()

    @property
    def waiting(self) -> int:
        """Transfers queued and not yet taken into a group."""
        return len(self._waiting)

    async def transfer(self, request: TransferRequest, key: str, actor: str) -> Transfer:
        """Create the transfer (as :meth:`ledger.engine.Ledger.transfer` with this key and actor would) and
        return it once committed; raises the same errors."""
        if self.max_items == 1:  # nothing to group: written in the caller's own task, with no worker between
            self.stats.alone += 1
            self._report(1, False)
            async with self._connection() as conn:
                return await Ledger(conn, actor).transfer(request, key)
        future: asyncio.Future[Transfer] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(GroupedTransfer(request, key, actor), future))
        if self._active < self.workers:
            # Counted here and uncounted by the worker itself, with no await between its last look at the
            # queue and the count: a transfer never waits in a queue no worker will look at again.
            self._active += 1
            # In a context of its own: the worker outlives this caller's request (and its log context).
            task = asyncio.create_task(self._work(), context=contextvars.Context())
            self._tasks.add(task)  # a reference, so the task is not collected while it runs
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _work(self) -> None:
        """Write groups while transfers wait; end when none can be taken (no task lingers while idle)."""
        try:
            while self._waiting:
                group = self._take()
                if not group:
                    return  # what waits has a key in another worker's group: that worker takes it next
                keys = {w.item.key for w in group}
                self._in_flight |= keys
                try:
                    await self._write(group)
                except BaseException as e:  # cancelled (shutdown) or a bug: no caller may wait forever
                    for w in group:
                        if w.future.done():
                            continue
                        if isinstance(e, Exception):
                            w.future.set_exception(e)
                        else:
                            w.future.cancel()
                    if not isinstance(e, Exception):
                        raise
                    log.exception("transfer_groups.failed", size=len(group))
                finally:
                    self._in_flight -= keys
        finally:
            self._active -= 1

    def _take(self) -> list[_Waiting]:
        """The transfers waiting now, in arrival order, up to ``max_items``. A key already in this group or in
        a group being written waits for a later group: its second use is answered (a replay or a conflict)
        after the first is written, in arrival order."""
        group: list[_Waiting] = []
        keys: set[str] = set()
        skipped: list[_Waiting] = []
        while self._waiting and len(group) < self.max_items:
            w = self._waiting.popleft()
            if w.future.done():  # its caller went away before it was taken
                continue
            if w.item.key in keys or w.item.key in self._in_flight:
                skipped.append(w)
                continue
            keys.add(w.item.key)
            group.append(w)
        self._waiting.extendleft(reversed(skipped))
        return group

    async def _write(self, group: list[_Waiting]) -> None:
        size = len(group)
        self.stats.groups += 1
        self.stats.sizes[size] = self.stats.sizes.get(size, 0) + 1
        if size > 1:
            written: list[Transfer] | None = None
            try:
                async with self._connection() as conn:
                    written = await create_together(conn, [w.item for w in group])
            except Exception as e:  # each transfer alone gives its own answer (or the same failure)
                log.warning("transfer_groups.group_failed", size=size, error=type(e).__name__)
            if written is not None:
                self.stats.together += 1
                self.stats.grouped += size
                self._report(size, True)
                for w, t in zip(group, written, strict=True):
                    if not w.future.done():
                        w.future.set_result(t)
                return
            self.stats.fallbacks += 1
        self.stats.alone += size
        self._report(size, False)
        gate = asyncio.Semaphore(_ALONE_AT_ONCE)
        await asyncio.gather(*(self._alone(w, gate) for w in group))

    async def _alone(self, w: _Waiting, gate: asyncio.Semaphore) -> None:
        async with gate:
            if w.future.done():  # its caller went away meanwhile: nothing to answer, nothing to write
                return
            try:
                async with self._connection() as conn:
                    t = await Ledger(conn, w.item.actor).transfer(w.item.request, w.item.key)
            except Exception as e:
                if not w.future.done():
                    w.future.set_exception(e)
            else:
                if not w.future.done():
                    w.future.set_result(t)

    def _report(self, size: int, together: bool) -> None:
        if self._observe is not None:
            self._observe(size, together)
