"""Migrations that rewrite data or functions downgrade and upgrade again without losing anything.

0006 (the one-statement transfer): a transfer stored with its idempotency key by either version replays the
same way through the other. 0007 (payment outcomes in their own table): outcomes move back into the
payments and out again, and each version's guards hold. 0008 (transfer groups): the function goes and comes
back with its setting. 0009 (maker-checker by person): approvals compare names without case or spaces, and
runs the old check allowed go on through their states. 0010 (reveals of personal data): the downgrade
refuses to erase records. 0013 (runs created in parts): the downgrade refuses while a run is being created.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from alembic import command

from adapters.postgres.database import init_connection
from adapters.postgres.migrate import DatabaseNotMigrated, alembic_config, assert_migrated
from ledger.engine import Ledger
from ledger.models import AccountSpec, NormalBalance, PostingSpec, TransferRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _request(amount: int) -> TransferRequest:
    return TransferRequest((PostingSpec("mig:a", debit=amount), PostingSpec("mig:b", credit=amount)), "PEN")


async def _settings(conn: asyncpg.Connection) -> list[str] | None:
    config: list[str] | None = await conn.fetchval(
        "select proconfig from pg_proc where oid = 'ledger.create_transfer'::regproc"
    )
    return config


async def test_downgrade_to_0005_and_back(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    await init_connection(conn)
    try:
        ledger = Ledger(conn, actor="mig")
        for code in ("mig:a", "mig:b"):
            await ledger.create_account(AccountSpec(code, "PEN", NormalBalance.DEBIT))
        new = await ledger.transfer(_request(5), "k-new")
        assert await _settings(conn) == ["plan_cache_mode=force_generic_plan"]

        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0005_online_path")
        await conn.reload_schema_state()
        assert await _settings(conn) == ["plan_cache_mode=force_generic_plan"]
        old = await ledger.transfer(_request(7), "k-old")  # the step-by-step function, whole response
        assert (old.status, old.postings) == (
            "posted",
            ({"account": "mig:a", "debit": 7}, {"account": "mig:b", "credit": 7}),
        )
        replay_new = await ledger.transfer(_request(5), "k-new")
        assert (replay_new.id, replay_new.replayed, replay_new.postings) == (new.id, True, new.postings)

        await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
        await conn.reload_schema_state()
        replay_old = await ledger.transfer(_request(7), "k-old")  # stored whole, read as it is
        assert (replay_old.id, replay_old.replayed, replay_old.created_at) == (old.id, True, old.created_at)
        balances = await conn.fetch("select code, posted, version from ledger.accounts order by code")
        assert [tuple(r) for r in balances] == [("mig:a", 12, 2), ("mig:b", -12, 2)]
    finally:
        await conn.close()


_PAYMENT = """insert into payments.payments (run_id, batch_no, household_id, dni, cci, ubigeo, amount, breakdown)
              values (1, 0, $1, '40000001', '01812300012345678911', '080101', 20000, '{}') returning id"""


async def test_payment_outcomes_downgrade_to_0006_and_back(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    await init_connection(conn)
    try:
        credited = await conn.fetchval(_PAYMENT, "H1")
        rejected = await conn.fetchval(_PAYMENT, "H2")
        waiting = await conn.fetchval(_PAYMENT, "H3")
        await conn.execute(
            """insert into payments.outcomes (payment_id, status, reason, bank_item_id, ledger_transfer_id)
               values ($1, 'credited', null, 'itm_1', 41), ($2, 'rejected', 'account_closed', 'itm_2', null)""",
            credited,
            rejected,
        )
        before = await conn.fetch("select * from payments.payment_states order by id")

        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0006_one_statement_transfer")
        await conn.reload_schema_state()
        rows = await conn.fetch(
            "select id, status, reason, bank_item_id, ledger_transfer_id from payments.payments order by id"
        )
        assert [tuple(r) for r in rows] == [
            (credited, "credited", None, "itm_1", 41),
            (rejected, "rejected", "account_closed", "itm_2", None),
            (waiting, "snapshotted", None, None, None),
        ]
        with pytest.raises(asyncpg.PostgresError, match="already credited"):  # the 0004 guard is back
            await conn.execute("update payments.payments set status = 'rejected' where id = $1", credited)

        await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
        await conn.reload_schema_state()
        assert await conn.fetch("select * from payments.payment_states order by id") == before
        with pytest.raises(asyncpg.PostgresError, match="final"):
            await conn.execute("update payments.outcomes set status = 'rejected' where payment_id = $1", credited)
    finally:
        await conn.close()


async def test_transfer_groups_downgrade_to_0007_and_back(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        exists = (
            "select proconfig from pg_proc where proname = 'create_transfers' and pronamespace = 'ledger'::regnamespace"
        )
        assert await conn.fetchval(exists) == ["plan_cache_mode=force_generic_plan"]
        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0007_payment_outcomes")
        assert await conn.fetchval(exists) is None
        await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
        assert await conn.fetchval(exists) == ["plan_cache_mode=force_generic_plan"]
    finally:
        await conn.close()


async def test_maker_checker_names_downgrade_to_0008_and_back(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    run = """insert into payments.runs (program, period, currency, rule_version, batch_size, created_by, approved_by)
             values ('X', $1, 'PEN', 1, 10, 'maria', $2)"""
    try:
        for approver in ("Maria", " maria "):
            with pytest.raises(asyncpg.CheckViolationError, match="runs_maker_checker"):
                await conn.execute(run, "2026-B1", approver)
        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0008_transfer_groups")
        await conn.execute(run, "2026-B1", "Maria")  # the old check compared spellings
        await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
        # A run approved before the migration goes on through its states: only approvals are checked.
        await conn.execute("update payments.runs set status = 'executing' where period = '2026-B1'")
        await conn.execute("update payments.runs set status = 'settled' where period = '2026-B1'")
        with pytest.raises(asyncpg.CheckViolationError, match="runs_maker_checker"):
            await conn.execute(run, "2026-B2", "MARIA")
        await conn.execute(run, "2026-B2", None)  # created, not approved yet
        with pytest.raises(asyncpg.CheckViolationError, match="runs_maker_checker"):
            await conn.execute("update payments.runs set approved_by = 'maria ' where period = '2026-B2'")
        await conn.execute("update payments.runs set approved_by = 'jorge' where period = '2026-B2'")
    finally:
        await conn.close()


async def test_reveals_downgrade_only_while_there_is_nothing_to_erase(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0009_maker_checker_names")
        assert await conn.fetchval("select to_regclass('registry.reveals')") is None
        await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
        await conn.execute(
            """insert into registry.households (household_id, titular_dni, titular_name, ubigeo, status, enrolled_on,
                                                children_under_4, upper_secondary_students)
               values ('H1', '10117410', 'Rosa Quispe', '080206', 'active', '2020-01-01', 0, 0)"""
        )
        await conn.execute("insert into registry.reveals (household_id, actor, channel) values ('H1', 'ana', 'api')")
        with pytest.raises(Exception, match="would erase"):
            await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0009_maker_checker_names")
        assert await conn.fetchval("select count(*) from registry.reveals") == 1
        assert await conn.fetchval("select version_num from alembic_version") == "0010_personal_data_reveals"
    finally:
        await conn.close()


async def test_an_unmigrated_database_is_named_and_the_demos_is_pointed_at(pg_server_url: str) -> None:
    # The maintenance database was never migrated: as a user who forgot CCT_DB_NAME=cct_demo would find theirs.
    with pytest.raises(DatabaseNotMigrated) as refused:
        await assert_migrated(pg_server_url)
    assert "The database 'postgres' is at migration none" in refused.value.detail
    assert "set CCT_DB_NAME=cct_demo" in refused.value.detail
    assert "cct-ledger db upgrade" in refused.value.detail


async def test_who_revoked_a_token_is_not_erased_by_a_downgrade(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """insert into auth.tokens (name, role, token_hash, prefix, revoked_at)
               values ('old', 'auditor', '\\x01', 'p1', clock_timestamp())"""
        )
        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0010_personal_data_reveals")
        assert (
            await conn.fetchval(
                """select count(*) from information_schema.columns
                    where table_schema = 'auth' and table_name = 'tokens' and column_name = 'revoked_by'"""
            )
            == 0
        )
        await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
        await conn.execute(
            """insert into auth.tokens (name, role, token_hash, prefix, revoked_at, revoked_by)
               values ('maria', 'operator', '\\x02', 'p2', clock_timestamp(), 'ana')"""
        )
        with pytest.raises(Exception, match="would erase"):
            await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0010_personal_data_reveals")
        assert await conn.fetchval("select revoked_by from auth.tokens where name = 'maria'") == "ana"
        assert await conn.fetchval("select version_num from alembic_version") == "0011_token_revoked_by"
        with pytest.raises(asyncpg.CheckViolationError):  # nobody revokes a live token
            await conn.execute("update auth.tokens set revoked_at = null where name = 'maria'")
    finally:
        await conn.close()


async def test_transfer_json_probes_downgrade_to_0011_and_back(db_url: str) -> None:
    """Both definitions of ledger.transfer_json answer the same JSON; only the plan differs."""
    conn = await asyncpg.connect(db_url)
    await init_connection(conn)
    try:
        led = Ledger(conn)
        await led.create_account(AccountSpec("treasury", "PEN", NormalBalance.DEBIT))
        await led.create_account(AccountSpec("fund", "PEN", NormalBalance.CREDIT))
        await led.transfer(
            TransferRequest((PostingSpec("treasury", debit=500), PostingSpec("fund", credit=500)), "PEN"), "a"
        )
        hold = await led.transfer(
            TransferRequest((PostingSpec("fund", debit=300), PostingSpec("treasury", credit=300)), "PEN", pending=True),
            "h",
        )
        await led.post(hold.id, "p", amount=200)
        ids = [r["id"] for r in await conn.fetch("select id from ledger.transfers order by id")]
        read = "select array_agg(ledger.transfer_json(i) order by i) from unnest($1::bigint[]) i"
        now = await conn.fetchval(read, ids)
        body = "select prosrc from pg_proc where proname = 'transfer_json'"
        assert "(select a.code from ledger.accounts a where a.id = p.account_id)" in await conn.fetchval(body)
        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0011_token_revoked_by")
        assert "join ledger.accounts a" in await conn.fetchval(body)
        assert await conn.fetchval(read, ids) == now
        await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
        assert await conn.fetchval(read, ids) == now
        assert [t["posted_amount"] for t in now if t["id"] == hold.id] == [200]
    finally:
        await conn.close()


async def test_run_parts_downgrade_only_while_no_run_is_being_created(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    await init_connection(conn)
    try:
        await conn.execute(
            """insert into payments.runs (program, period, status, currency, rule_version, batch_size, created_by)
               values ('JUNTOS', '2026-B5', 'creating', 'PEN', 1, 1000, 'maria')"""
        )
        with pytest.raises(Exception, match="still being created"):
            await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0012_transfer_json_probes")
        assert await conn.fetchval("select version_num from alembic_version") == "0013_run_parts"
        await conn.execute("update payments.runs set status = 'created'")
        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0012_transfer_json_probes")
        assert await conn.fetchval("select to_regclass('payments.run_parts')") is None
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("update payments.runs set status = 'creating'")
        await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
        assert await conn.fetchval("select status from payments.runs") == "created"
        assert await conn.fetchval("select part_bounds from payments.runs") == []
    finally:
        await conn.close()
