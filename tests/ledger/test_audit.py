"""The sealed audit chain: sealing waits for in-flight transactions; tampering is found and located."""

from __future__ import annotations

import asyncpg
import pytest

from adapters.postgres.database import Database
from ledger import audit
from ledger.engine import Ledger
from ledger.models import AccountSpec, NormalBalance, PostingSpec, TransferRequest


def pay(debit: str, credit: str, amount: int, pending: bool = False) -> TransferRequest:
    return TransferRequest(
        (PostingSpec(debit, debit=amount), PostingSpec(credit, credit=amount)), "PEN", pending=pending
    )


async def _history(conn: asyncpg.Connection, transfers: int = 12) -> Ledger:
    led = Ledger(conn, actor="auditor-test")
    await led.create_account(AccountSpec("treasury", "PEN", NormalBalance.DEBIT))
    await led.create_account(AccountSpec("fund", "PEN", NormalBalance.CREDIT, no_overdraft=True))
    await led.create_account(AccountSpec("hh", "PEN", NormalBalance.CREDIT))
    await led.transfer(pay("treasury", "fund", 1_000_00), "fund")
    for i in range(transfers - 3):
        await led.transfer(pay("fund", "hh", 10_00 + i), f"pay-{i}")
    hold = await led.transfer(pay("fund", "hh", 5_00, pending=True), "hold")
    await led.void(hold.id, "void")
    return led


async def test_seal_then_verify_ok(conn: asyncpg.Connection) -> None:
    await _history(conn)
    sealed = await audit.seal(conn, block_size=5)
    assert (sealed.blocks, sealed.transfers) == (3, 12)
    report = await audit.verify(conn)
    assert report.ok, report.problems
    assert (report.transfers, report.sealed, report.blocks) == (12, 12, 3)
    assert report.head == sealed.head
    assert (await audit.seal(conn)).transfers == 0  # nothing new


async def test_sealing_waits_for_an_in_flight_transaction(db: Database) -> None:
    async with db.connection() as conn:
        await _history(conn, transfers=3)
        await Ledger(conn).create_account(AccountSpec("other", "PEN", NormalBalance.CREDIT))
        assert (await audit.seal(conn)).transfers == 3
    async with db.connection() as slow, db.connection() as fast, db.connection() as sealer:
        tx = slow.transaction()
        await tx.start()
        early = await Ledger(slow).transfer(pay("fund", "hh", 1_00), "early")  # in flight
        late = await Ledger(fast).transfer(pay("treasury", "other", 1_00), "late")  # committed after it
        assert (await audit.seal(sealer)).transfers == 0  # the later commit waits behind the gap
        await tx.commit()
        assert (await audit.seal(sealer)).transfers == 2
        members = await sealer.fetchval("select member_ids from ledger.audit_blocks order by block_no desc limit 1")
        assert members == [early.id, late.id]
        assert (await audit.verify(sealer)).ok


async def _tampered(conn: asyncpg.Connection, *statements: str) -> audit.VerifyReport:
    await _history(conn)
    await audit.seal(conn, block_size=5)
    await conn.execute("set session_replication_role = replica")  # switch the guard triggers off
    for statement in statements:
        await conn.execute(statement)
    await conn.execute("set session_replication_role = origin")
    return await audit.verify(conn)


async def test_changed_description_is_located(conn: asyncpg.Connection) -> None:
    report = await _tampered(conn, "update ledger.transfers set description = 'nothing to see' where id = 7")
    assert not report.ok
    assert report.problems == [
        {
            "check": "chain",
            "message": "block 2: transfer 7 was changed after sealing (the transfer or its postings)",
            "block": 2,
            "transfer": 7,
        }
    ]


async def test_changed_amount_is_located_to_the_posting(conn: asyncpg.Connection) -> None:
    report = await _tampered(
        conn,
        """update ledger.postings set amount = amount - 100
            where transfer_id = 3 and leg = 1""",
    )
    checks = {(p["check"], p.get("transfer")) for p in report.problems}
    assert ("chain", 3) in checks
    assert ("transfers", 3) in checks  # no longer balances
    first_bad = [p for p in report.problems if p["check"] == "postings"]
    assert first_bad[0]["transfer"] == 3


async def test_deleted_transfer_is_found(conn: asyncpg.Connection) -> None:
    report = await _tampered(
        conn, "delete from ledger.postings where transfer_id = 4", "delete from ledger.transfers where id = 4"
    )
    messages = [p["message"] for p in report.problems]
    assert "block 1: transfer 4 was deleted or moved out of it" in messages
    assert any(p["check"] == "balances" for p in report.problems)


async def test_inserted_transfer_is_found(conn: asyncpg.Connection) -> None:
    report = await _tampered(
        conn,
        """insert into ledger.transfers (id, txid, kind, currency, effective_at, created_at, description)
           select 3000, txid, 0, 'PEN', now(), now(), 'forged' from ledger.transfers where id = 2""",
    )
    messages = [p["message"] for p in report.problems]
    assert "block 1: transfer 3000 was inserted into it after sealing" in messages
    assert "transfer 3000 has no postings" in messages


async def test_rewritten_block_breaks_the_chain(conn: asyncpg.Connection) -> None:
    report = await _tampered(conn, "update ledger.audit_blocks set transfers_hash = sha256('x') where block_no = 2")
    messages = [p["message"] for p in report.problems]
    assert "block 2: its member hashes do not match its transfers hash" in messages
    assert "block 2: stored block hash does not match its contents" in messages


async def test_unsealed_tail_is_still_checked(conn: asyncpg.Connection) -> None:
    await _history(conn)
    await conn.execute("set session_replication_role = replica")
    await conn.execute("delete from ledger.postings where transfer_id = 5 and leg = 2")
    report = await audit.verify(conn)
    assert report.sealed == 0
    assert any(p["check"] == "transfers" and p["transfer"] == 5 for p in report.problems)


@pytest.mark.parametrize("size", [1, 4, 100])
async def test_block_size_does_not_change_what_verifies(conn: asyncpg.Connection, size: int) -> None:
    await _history(conn)
    result = await audit.seal(conn, block_size=size)
    assert result.transfers == 12
    assert (await audit.verify(conn)).ok


async def test_parallel_verify_reports_the_same_problems(db: Database) -> None:
    async with db.connection() as conn, db.connection() as helper:
        await _history(conn)
        await audit.seal(conn, block_size=5)
        await conn.execute("set session_replication_role = replica")
        await conn.execute("update ledger.postings set amount = amount - 100 where transfer_id = 3 and leg = 1")
        await conn.execute("update ledger.transfers set description = 'x' where id = 9")
        await conn.execute("set session_replication_role = origin")
        alone = await audit.verify(conn)
        together = await audit.verify(conn, helper)
    assert not together.ok
    assert together.problems == alone.problems
    assert (together.transfers, together.sealed, together.blocks, together.head) == (
        alone.transfers,
        alone.sealed,
        alone.blocks,
        alone.head,
    )
