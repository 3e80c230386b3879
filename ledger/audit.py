"""The sealed audit chain and the verifier.

**Sealing**, off the write path: every transfer row records the id of the database transaction that wrote
it (``txid``). All transactions older than the oldest one still running (the snapshot's ``xmin``) have
finished, so every transfer with ``txid < xmin`` is final: none can appear there later. The sealer takes the
next transfers in ``(txid, id)`` order below that horizon, up to a block size, hashes each one's canonical
form (the transfer, its postings and their balances after: ``ledger.transfer_digests``), and stores a block
with the member ids, their digests, and ``block_hash = sha256(prev_hash || block_no || bound || count ||
sha256(digests))``. Status changes (post, void, expiry) and reversals are transfer rows, so they are
sealed too. A gap left by an in-flight transaction simply waits for the next run.

**Verifying** recomputes everything from the rows, in one repeatable-read snapshot:

* the chain links and every block hash; every block's members (missing, unexpected, changed rows);
* every account's balances and version against the sum and count of its postings;
* every posting's balances-after and version against the running sum of the account's postings;
* every transfer balanced, with two or more postings, and no posting without a transfer;
* the trial balance: per currency, posted debits equal posted credits and pending debits equal pending
  credits.

Editing, deleting or inserting any historical row behind the engine's back makes at least one check fail
and name the block, transfer, account or posting.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ledger.db import Connection

GENESIS = bytes(32)
DEFAULT_BLOCK_SIZE = 10_000
_SEAL_LOCK = 0x5EA1  # advisory lock id: one sealer at a time
MAX_PROBLEMS_PER_CHECK = 50


@dataclass(frozen=True, slots=True)
class SealResult:
    """What a sealing run did."""

    blocks: int
    transfers: int
    head: str | None


@dataclass(slots=True)
class VerifyReport:
    """The verifier's findings.

    Attributes:
        ok: no problem found.
        problems: each a dict with ``check``, ``message`` and the ids involved.
        transfers: transfers in the ledger.
        sealed: transfers covered by the chain.
        blocks: blocks in the chain.
        head: hex hash of the last block (publish it to anchor the chain), or None.
    """

    ok: bool = True
    problems: list[dict[str, Any]] = field(default_factory=list)
    transfers: int = 0
    sealed: int = 0
    blocks: int = 0
    head: str | None = None

    def add(self, check: str, message: str, **ids: Any) -> None:
        self.ok = False
        self.problems.append({"check": check, "message": message, **ids})

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "transfers": self.transfers,
            "sealed": self.sealed,
            "blocks": self.blocks,
            "head": self.head,
        }


def block_hash(prev_hash: bytes, block_no: int, to_txid: int, to_id: int, count: int, digest: bytes) -> bytes:
    """``sha256(prev_hash || block_no || bound || count || transfers_hash)``, fixed-width big-endian ints."""
    h = hashlib.sha256()
    h.update(prev_hash)
    h.update(block_no.to_bytes(8, "big"))
    h.update(int(to_txid).to_bytes(8, "big"))
    h.update(to_id.to_bytes(8, "big"))
    h.update(count.to_bytes(8, "big"))
    h.update(digest)
    return h.digest()


_MAX_ID = 2**63 - 1
_CANONICAL_SESSION = "set local timezone = 'UTC'; set local datestyle = 'ISO, YMD'; set local work_mem = '64MB'"


_HORIZON = """
with s as (select pg_snapshot_xmax(pg_current_snapshot())::text::bigint as xmax,
                  pg_snapshot_xmin(pg_current_snapshot())::text::bigint as xmin),
     sees_all as (select coalesce((select rolsuper from pg_roles where rolname = current_user), false)
                         or pg_has_role(current_user, 'pg_read_all_stats', 'member') as ok),
     running as (select a.backend_xid::text::bigint as x from pg_stat_activity a
                  where a.datname = current_database() and a.backend_xid is not null and a.pid <> pg_backend_pid())
select case when (select ok from sees_all)
            then least(s.xmax, (select min(((s.xmax >> 32) << 32) + r.x
                                           - case when r.x > (s.xmax & 4294967295) then 4294967296 else 0 end)
                                  from running r))
            else s.xmin end
  from s
"""


async def _horizon(conn: Connection) -> int:
    """The oldest transaction of *this* database that may still write transfers.

    Every transfer written by a transaction with an older id is final. Transactions of other databases
    on the server do not hold sealing back (a long job elsewhere would otherwise stall it), but reading them
    needs ``pg_read_all_stats`` (or superuser): without it, the server-wide snapshot horizon is used, which
    is always safe.
    """
    await conn.execute("select pg_stat_clear_snapshot()")
    value: int = await conn.fetchval(_HORIZON)
    return value


async def seal_block(conn: Connection, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """Seal the next block of final transfers; returns how many transfers it holds (0: nothing to seal).

    Runs in its own transaction on ``conn`` (which must not be inside one).
    """
    async with conn.transaction():
        await conn.execute(_CANONICAL_SESSION)
        await conn.execute("select pg_advisory_xact_lock($1)", _SEAL_LOCK)
        last = await conn.fetchrow(
            "select block_no, to_txid::text::bigint as to_txid, to_id, block_hash "
            "from ledger.audit_blocks order by block_no desc limit 1"
        )
        prev_txid, prev_id = (last["to_txid"], last["to_id"]) if last else (0, 0)
        prev_hash = bytes(last["block_hash"]) if last else GENESIS
        block_no = (last["block_no"] + 1) if last else 1
        horizon = await _horizon(conn)
        rows = await conn.fetch(
            """select id, txid::text::bigint as txid, digest, postings
                 from ledger.transfer_digests($1::text::xid8, $2, $3::text::xid8, $4, $5)""",
            str(prev_txid),
            prev_id,
            str(horizon - 1),
            _MAX_ID,
            block_size,
        )
        if not rows:
            return 0
        ids = [r["id"] for r in rows]
        digests = b"".join(bytes(r["digest"]) for r in rows)
        transfers_hash = hashlib.sha256(digests).digest()
        to_txid, to_id = rows[-1]["txid"], rows[-1]["id"]
        bh = block_hash(prev_hash, block_no, to_txid, to_id, len(rows), transfers_hash)
        await conn.execute(
            """insert into ledger.audit_blocks (block_no, to_txid, to_id, transfer_count, posting_count,
                                                member_ids, member_hashes, transfers_hash, prev_hash, block_hash)
               values ($1, $2::text::xid8, $3, $4, $5, $6, $7, $8, $9, $10)""",
            block_no,
            str(to_txid),
            to_id,
            len(rows),
            sum(r["postings"] for r in rows),
            ids,
            digests,
            transfers_hash,
            prev_hash,
            bh,
        )
        return len(rows)


async def seal(conn: Connection, block_size: int = DEFAULT_BLOCK_SIZE, max_blocks: int | None = None) -> SealResult:
    """Seal blocks until every final transfer is sealed (or ``max_blocks`` were written)."""
    blocks = transfers = 0
    while max_blocks is None or blocks < max_blocks:
        n = await seal_block(conn, block_size)
        if n == 0:
            break
        blocks += 1
        transfers += n
    head = await conn.fetchval(
        "select encode(block_hash, 'hex') from ledger.audit_blocks order by block_no desc limit 1"
    )
    return SealResult(blocks, transfers, head)


async def verify(conn: Connection, helper: Connection | None = None) -> VerifyReport:
    """Recompute the chain, every balance and the trial balance from the rows (read-only).

    Runs in one repeatable-read, read-only snapshot so concurrent writes cannot produce false alarms.

    Args:
        conn: the connection to verify on.
        helper: a second connection (not inside a transaction): the chain and the balance checks then run at
            the same time, on the same snapshot (exported by ``conn``), each on its own connection.
    """
    report = VerifyReport()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(_CANONICAL_SESSION)
        report.transfers = await conn.fetchval("select count(*) from ledger.transfers")
        if helper is None:
            await _verify_chain(conn, report)
            await _verify_books(conn, report)
            return report
        snapshot = await conn.fetchval("select pg_export_snapshot()")
        books = VerifyReport()
        async with helper.transaction(isolation="repeatable_read", readonly=True):
            await helper.execute(f"set transaction snapshot '{snapshot}'")
            await helper.execute(_CANONICAL_SESSION)
            await asyncio.gather(_verify_chain(conn, report), _verify_books(helper, books))
    for problem in books.problems:
        report.add(**problem)
    return report


async def _verify_books(conn: Connection, report: VerifyReport) -> None:
    """Balances against postings, running balances, transfers, trial balance."""
    await _verify_balances(conn, report)
    await _verify_running_balances(conn, report)
    await _verify_transfers(conn, report)
    await _verify_trial_balance(conn, report)


async def _verify_chain(conn: Connection, report: VerifyReport) -> None:
    blocks = await conn.fetch(
        """select block_no, to_txid::text::bigint as to_txid, to_id, transfer_count, member_ids,
                  member_hashes, transfers_hash, prev_hash, block_hash
             from ledger.audit_blocks order by block_no"""
    )
    prev_hash, prev_txid, prev_id = GENESIS, 0, 0
    reported = 0
    for expected_no, b in enumerate(blocks, start=1):
        no = b["block_no"]
        problems_before = len(report.problems)
        if no != expected_no:
            report.add("chain", f"block {expected_no} is missing (found block {no} in its place)", block=expected_no)
        if bytes(b["prev_hash"]) != prev_hash:
            report.add("chain", f"block {no} does not link to the block before it", block=no)
        members: list[int] = list(b["member_ids"])
        digests = bytes(b["member_hashes"])
        if len(digests) != 32 * len(members) or len(members) != b["transfer_count"]:
            report.add("chain", f"block {no} has a malformed member list", block=no)
        if hashlib.sha256(digests).digest() != bytes(b["transfers_hash"]):
            report.add("chain", f"block {no}: its member hashes do not match its transfers hash", block=no)
        recomputed = block_hash(
            bytes(b["prev_hash"]),
            no,
            b["to_txid"],
            b["to_id"],
            b["transfer_count"],
            bytes(b["transfers_hash"]),
        )
        if recomputed != bytes(b["block_hash"]):
            report.add("chain", f"block {no}: stored block hash does not match its contents", block=no)
        actual = await conn.fetch(
            """select id, digest, postings, total, phases_bad
                 from ledger.transfer_digests($1::text::xid8, $2, $3::text::xid8, $4, null)""",
            str(prev_txid),
            prev_id,
            str(b["to_txid"]),
            b["to_id"],
        )
        _check_transfer_rows(report, actual)
        stored = {members[i]: digests[32 * i : 32 * i + 32] for i in range(len(members))}
        found = {r["id"]: bytes(r["digest"]) for r in actual}
        for tid in sorted(set(stored) | set(found)):
            if tid not in found:
                verb = "was deleted or moved out of it"
            elif tid not in stored:
                verb = "was inserted into it after sealing"
            elif stored[tid] != found[tid]:
                verb = "was changed after sealing (the transfer or its postings)"
            else:
                continue
            report.add("chain", f"block {no}: transfer {tid} {verb}", block=no, transfer=tid)
        if len(report.problems) > problems_before:
            reported += 1
        report.sealed += b["transfer_count"]
        prev_hash, prev_txid, prev_id = bytes(b["block_hash"]), b["to_txid"], b["to_id"]
        if reported >= MAX_PROBLEMS_PER_CHECK:
            break
    report.blocks = len(blocks)
    report.head = prev_hash.hex() if blocks else None
    # The unsealed tail: not in the chain yet, but its transfers must still balance.
    tail = await conn.fetch(
        """select id, digest, postings, total, phases_bad
             from ledger.transfer_digests($1::text::xid8, $2, '18446744073709551615'::xid8, $3, null)""",
        str(prev_txid),
        prev_id,
        _MAX_ID,
    )
    _check_transfer_rows(report, tail)


def _check_transfer_rows(report: VerifyReport, rows: list[asyncpg.Record]) -> None:
    """Each transfer has two or more postings that sum to zero, all of one phase."""
    for r in rows:
        if r["postings"] < 2 or r["total"] != 0 or r["phases_bad"]:
            if r["postings"] == 0:
                message = f"transfer {r['id']} has no postings"
            else:
                message = (
                    f"transfer {r['id']} does not balance: its {r['postings']} postings are off by {r['total']}"
                    + (" and mix phases" if r["phases_bad"] else "")
                )
            report.add("transfers", message, transfer=r["id"])


async def _verify_balances(conn: Connection, report: VerifyReport) -> None:
    rows = await conn.fetch(
        """with s as (
               select p.account_id,
                      sum(ledger.posted_delta(p.amount, p.phase, a.normal_balance)) as posted,
                      sum(ledger.pending_debit_delta(p.amount, p.phase)) as pd,
                      sum(ledger.pending_credit_delta(p.amount, p.phase)) as pc,
                      count(*) as n, max(p.version) as max_version
                 from ledger.postings p join ledger.accounts a on a.id = p.account_id
                group by p.account_id)
           select a.code, a.posted, a.pending_debits, a.pending_credits, a.version,
                  coalesce(s.posted, 0) as s_posted, coalesce(s.pd, 0) as s_pd, coalesce(s.pc, 0) as s_pc,
                  coalesce(s.n, 0) as s_n, coalesce(s.max_version, 0) as s_max
             from ledger.accounts a left join s on s.account_id = a.id
            where a.posted <> coalesce(s.posted, 0) or a.pending_debits <> coalesce(s.pd, 0)
               or a.pending_credits <> coalesce(s.pc, 0) or a.version <> coalesce(s.n, 0)
               or a.version <> coalesce(s.max_version, 0)
            order by a.id limit $1""",
        MAX_PROBLEMS_PER_CHECK,
    )
    for r in rows:
        report.add(
            "balances",
            f"account {r['code']}: balance {r['posted']} (pending {r['pending_debits']}/{r['pending_credits']}, "
            f"version {r['version']}) but its postings sum to {r['s_posted']} (pending {r['s_pd']}/{r['s_pc']}, "
            f"{r['s_n']} postings, last version {r['s_max']})",
            account=r["code"],
        )
    orphans = await conn.fetch(
        """select distinct p.account_id from ledger.postings p
            where not exists (select 1 from ledger.accounts a where a.id = p.account_id) limit $1""",
        MAX_PROBLEMS_PER_CHECK,
    )
    for r in orphans:
        report.add(
            "balances",
            f"postings refer to account id {r['account_id']}, which does not exist",
            account_id=r["account_id"],
        )


async def _verify_running_balances(conn: Connection, report: VerifyReport) -> None:
    rows = await conn.fetch(
        """select distinct on (code) * from (
               select a.code, p.account_id, p.version, p.transfer_id, p.posted_after, p.pending_debits_after,
                      p.pending_credits_after,
                      sum(ledger.posted_delta(p.amount, p.phase, a.normal_balance)) over w as run_posted,
                      sum(ledger.pending_debit_delta(p.amount, p.phase)) over w as run_pd,
                      sum(ledger.pending_credit_delta(p.amount, p.phase)) over w as run_pc,
                      row_number() over w as n
                 from ledger.postings p join ledger.accounts a on a.id = p.account_id
               window w as (partition by p.account_id order by p.version
                            rows between unbounded preceding and current row)) x
            where posted_after <> run_posted or pending_debits_after <> run_pd
               or pending_credits_after <> run_pc or version <> n
            order by code, version
            limit $1""",
        MAX_PROBLEMS_PER_CHECK,
    )
    for r in rows:
        report.add(
            "postings",
            f"account {r['code']} posting version {r['version']} (transfer {r['transfer_id']}) is the first "
            f"that disagrees with its history: recorded balance after {r['posted_after']} (pending "
            f"{r['pending_debits_after']}/{r['pending_credits_after']}), history sums to {r['run_posted']} "
            f"(pending {r['run_pd']}/{r['run_pc']})"
            + (f"; expected version {r['n']}" if r["version"] != r["n"] else ""),
            account=r["code"],
            version=r["version"],
            transfer=r["transfer_id"],
        )


async def _verify_transfers(conn: Connection, report: VerifyReport) -> None:
    rows = await conn.fetch(
        """select distinct p.transfer_id from ledger.postings p
            where not exists (select 1 from ledger.transfers t where t.id = p.transfer_id)
            order by 1 limit $1""",
        MAX_PROBLEMS_PER_CHECK,
    )
    for r in rows:
        report.add(
            "transfers",
            f"postings refer to transfer {r['transfer_id']}, which does not exist",
            transfer=r["transfer_id"],
        )
    rows = await conn.fetch(
        """select p.transfer_id, a.code from ledger.postings p
             join ledger.transfers t on t.id = p.transfer_id join ledger.accounts a on a.id = p.account_id
            where a.currency <> t.currency
               or not (p.phase = t.kind or (t.kind = 2 and p.phase = 3))
            limit $1""",
        MAX_PROBLEMS_PER_CHECK,
    )
    for r in rows:
        report.add(
            "transfers",
            f"transfer {r['transfer_id']} posts to account {r['code']} in another currency or phase",
            transfer=r["transfer_id"],
            account=r["code"],
        )


async def _verify_trial_balance(conn: Connection, report: VerifyReport) -> None:
    rows = await conn.fetch(
        """select currency, sum(posted * normal_balance) as net, sum(pending_debits) as pd,
                  sum(pending_credits) as pc
             from ledger.accounts group by currency
           having sum(posted * normal_balance) <> 0 or sum(pending_debits) <> sum(pending_credits)"""
    )
    for r in rows:
        report.add(
            "trial_balance",
            f"{r['currency']}: debits minus credits is {r['net']} (must be 0); pending debits {r['pd']} vs "
            f"pending credits {r['pc']}",
            currency=r["currency"],
        )
