"""The simulated bank's bulk paths give exactly what its one-at-a-time definitions give.

Settlement, household reactions, id encoding, page rendering, account codes and bulk openings work on whole
batches (and a million households) at once; each is checked here against the plain definition it replaces,
so a seed keeps making the same world.
"""

from __future__ import annotations

import gc
import math
import random
from array import array
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.bank.simulator import HOSTILE, ids
from adapters.bank.simulator.columns import CHUNK, StringColumn
from adapters.bank.simulator.core import CREDITED, SimConfig, SimulatedBank
from adapters.bank.simulator.households import (
    _U16,
    DAY,
    HOUR,
    BehaviourModel,
    Households,
    _credit_hashes,
    _first_withdrawal_delays,
    _move_hashes,
)
from adapters.bank.simulator.rng import M1, MASK64, mix64, mix64_many
from adapters.bank.simulator.store import load_snapshot, save_snapshot
from services.identifiers import make_cci, normalize_cci

UBIGEOS = ("080206", "150101", "010101", "250101", "130101", "211907")


def _bank(n: int, *, seed: int = 3, limit: int = 5_000_00, hostile: bool = False) -> SimulatedBank:
    bank = SimulatedBank(SimConfig(seed=seed, item_amount_limit=limit), HOSTILE.settlement if hostile else None)
    rows = [[f"{10_000_000 + i:08d}", f"Titular {i}", UBIGEOS[i % len(UBIGEOS)]] for i in range(n)]
    bank.execute({"op": "bulk_accounts", "rows": rows})
    bank.execute({"op": "deposit_funding", "amount": 10**12})
    return bank


def _submit(bank: SimulatedBank, key: str, items: list[list[Any]]) -> None:
    body = {
        "reference": key,
        "description": None,
        "control_count": len(items),
        "control_amount": sum(i[2] for i in items),
        "items": items,
    }
    bank.execute({"op": "submit_batch", "key": key, "fingerprint": key, "body": body})


# --- ids ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [ids.ACCOUNT, ids.BATCH, ids.ITEM, ids.LINE, ids.EVENT, ids.HOLD])
def test_ids_in_bulk_are_the_ids_one_by_one(codec: ids.IdCodec) -> None:
    rng = random.Random(1)
    seqs = [rng.randrange(1 << 40) for _ in range(2000)] + [0, 1, (1 << 40) - 1]
    for sample in (seqs, range(5000, 7000), range(3), array("q", [4, -1, 9] * 40), []):
        assert codec.encode_many(sample) == [codec.encode(s) for s in sample]
    assert codec.encode_many(iter(range(100, 300))) == [codec.encode(s) for s in range(100, 300)]


# --- hashes and the households' reactions ------------------------------------------------------------------


def test_hashes_in_lanes_are_mix64() -> None:
    rng = random.Random(2)
    values = [rng.randrange(1 << 64) for _ in range(3000)] + [0, MASK64, 1 << 63]
    assert mix64_many(values) == [mix64(v) for v in values]
    assert mix64_many(values[:5]) == [mix64(v) for v in values[:5]]
    accounts = [rng.randrange(1, 1 << 28) for _ in range(500)]
    counts = [rng.randrange(0, 50) for _ in accounts]
    salt = rng.randrange(1 << 64)
    first, second = _credit_hashes(salt, accounts, counts)
    assert first == [mix64((salt ^ (a << 20) ^ c) & MASK64) for a, c in zip(accounts, counts, strict=True)]
    assert second == [((h ^ (h >> 29)) * M1) & MASK64 for h in first]
    assert _credit_hashes(salt, accounts[:10], counts[:10]) == (first[:10], second[:10])


def test_move_hashes_in_lanes_are_the_per_move_hash() -> None:
    rng = random.Random(3)
    salt = rng.randrange(1 << 64)
    moves = sorted(
        rng.randrange(1, 50 * 366 * DAY) << 32 | rng.randrange(1, 5) << 28 | rng.randrange(1, 1 << 28)
        for _ in range(900)
    )
    for sample in (moves, moves[:10], []):
        assert _move_hashes(salt, sample) == [
            mix64(mix64(salt ^ (p & ((1 << 28) - 1))) ^ (p >> 32) ^ (((p >> 28) & 0xF) << 60)) for p in sample
        ]


def test_first_withdrawal_delays_are_the_model_s_formula_for_every_draw() -> None:
    m = BehaviourModel()
    near, far = _first_withdrawal_delays(m)
    for k in range(65536):
        u = k * _U16
        delay = m.near_delay_min_hours * HOUR - math.log(1.0 - u) * m.near_delay_mean_days * DAY
        assert near[k] == int(min(delay, m.near_delay_max_days * DAY))
        delay = m.far_delay_min_days * DAY - math.log(1.0 - u) * m.far_delay_mean_days * DAY
        assert far[k] == int(min(delay, m.far_delay_max_days * DAY))


def test_credits_in_bulk_are_credits_one_by_one() -> None:
    def state(bank: SimulatedBank) -> tuple[Any, ...]:
        h = bank.households
        h.react()
        return (
            bank.acc_credits.tolist(),
            bank.acc_target.tolist(),
            {hour: sorted(b) for hour, b in h.buckets.items()},
            sorted(h.bucket_heap),
        )

    bulk, single = _bank(300), _bank(300)
    rng = random.Random(4)
    accounts = [rng.randrange(1, 301) for _ in range(700)]  # with repeats: an account credited twice at once
    amounts = [rng.choice((200_00, 100_00, 1_00, 5_000_00)) for _ in accounts]
    bulk.households.on_credits(accounts, amounts, 3600)
    for a, amount in zip(accounts, amounts, strict=True):
        single.households.on_credits([a], [amount], 3600)
    assert (bulk.households.unreacted_credits, bulk.households.buckets) == (700, {})  # not reacted to yet
    assert state(bulk) == state(single)
    assert bulk.households.unreacted_credits == 0
    assert sum(bulk.acc_credits) == 700
    profiles = bulk.households.profiles(1, 301)
    assert all(profiles[k] == bulk.households.profile(k + 1) for k in range(300))


def test_moves_in_bulk_are_moves_one_by_one() -> None:
    banks = []
    for _ in range(2):
        bank = _bank(400)
        bank.households.on_credits(list(range(1, 401)), [200_00] * 400, 0)
        for account in range(1, 401):  # credit the accounts, as a settlement would
            bank.append_line(account, bank.LT_PROGRAM_CREDIT, 200_00, 0, -1)
        banks.append(bank)
    bulk, single = banks
    for hour in range(0, 40 * 24):
        moves = (
            bulk.households.take_due(hour, hour * HOUR + HOUR - 1) if bulk.households.next_due_hour() == hour else []
        )
        assert moves == (
            single.households.take_due(hour, hour * HOUR + HOUR - 1)
            if single.households.next_due_hour() == hour
            else []
        )
        bulk.households.run_many(moves)
        for packed in moves:
            single.households.run(packed)
    assert len(bulk.ln_type) > 800
    for column in ("ln_acct", "ln_type", "ln_amount", "ln_balance", "ln_time", "ln_ref", "ln_prev", "acc_balance"):
        assert getattr(bulk, column) == getattr(single, column), column


# --- settlement, pages and statements -----------------------------------------------------------------------


def _world_state(bank: SimulatedBank) -> dict[str, Any]:
    columns = ("ln_acct", "ln_type", "ln_amount", "ln_balance", "ln_time", "ln_ref", "ln_prev")
    state: dict[str, Any] = {c: list(getattr(bank, c)) for c in (*columns, "acc_balance", "item_status")}
    state["pending_moves"] = bank.households.pending_count()  # reacts to what is left
    state["targets"], state["credits"] = list(bank.acc_target), list(bank.acc_credits)
    return state


def test_the_households_world_does_not_depend_on_how_the_clock_is_advanced() -> None:
    """Credits are reacted to lazily (when the clock could reach their first move, or something reads what a
    reaction changes): the world is the one reacting at once makes, whatever steps the clock takes."""
    eager, lazy_steps, lazy_jump = _mixed_world(), _mixed_world(), _mixed_world()
    h = eager.households

    def react_at_once(accounts: Any, amounts: Any, t: int) -> None:
        Households.on_credits(h, accounts, amounts, t)
        h.react()

    h.on_credits = react_at_once  # type: ignore[method-assign]
    numbers, _ = eager.accounts_codes(range(1, 3001))
    closing = 0

    def at(to: int, banks: tuple[SimulatedBank, ...]) -> None:
        nonlocal closing
        if to == 600:  # an account credited minutes ago closes: its target was raised before it closed
            if not closing:
                closing = eager.item_acct[eager.item_status.index(CREDITED)]
            for bank in banks:
                bank.execute({"op": "close_account", "account": closing})
        if to == DAY:  # every account paid again while the first credits' moves are under way
            for bank in banks:
                for b in range(0, 3000, 500):
                    items = [[f"S:{i}", f"{10_000_000 + i:08d}", 150_00, numbers[i], None] for i in range(b, b + 500)]
                    _submit(bank, f"S{b}", items)
        if to == 2 * DAY:
            for bank in banks:
                bank.execute({"op": "close_account", "account": 12})

    steps = [*range(300, 4 * HOUR, 300), *range(4 * HOUR, DAY + 6 * HOUR, 600), *range(DAY + 6 * HOUR, 3 * DAY, HOUR)]
    for to in [*steps, 40 * DAY]:
        banks = (eager, lazy_steps, lazy_jump) if to in (600, DAY, 2 * DAY) else (eager, lazy_steps)
        for bank in banks:
            # As a batch lookup moves the clock (Simulator.auto_advance): an answer without the pending moves.
            assert bank.execute({"op": "advance", "to": to, "brief": True})[1] == orjson.dumps({"seconds": to})
        if to == 600:
            # Minutes in: the first batches have settled, and their credits wait for their reaction.
            assert lazy_steps.item_status.count(CREDITED) > 0
            assert lazy_steps.households.unreacted_credits > 0
            assert lazy_steps.households.buckets == {}
            assert lazy_jump.households.unreacted_credits > 0
            assert lazy_jump.savings_json() == eager.savings_json()  # the credit counts, read meanwhile
        at(to, banks)
    lazy_jump.execute({"op": "advance", "to": 40 * DAY})
    reference = _world_state(eager)
    withdrawals = {eager.LT_WITHDRAWAL_AGENT, eager.LT_WITHDRAWAL_ATM, eager.LT_WITHDRAWAL_BRANCH}
    assert sum(t in withdrawals for t in reference["ln_type"]) > 3000  # households withdrew both credits
    assert max(reference["credits"]) == 2
    assert _world_state(lazy_steps) == reference
    assert _world_state(lazy_jump) == reference


def test_a_snapshot_taken_before_the_credits_reactions_holds_them(tmp_path: Path) -> None:
    original = _mixed_world()
    original.execute({"op": "advance", "to": 900, "brief": True})
    assert original.households.unreacted_credits > 0
    save_snapshot(original, tmp_path / "snap")
    restored = SimulatedBank(SimConfig(seed=3, item_amount_limit=300_00), HOSTILE.settlement)
    load_snapshot(restored, tmp_path / "snap")
    for bank in (original, restored):
        bank.execute({"op": "advance", "to": 20 * DAY})
    assert _world_state(restored) == _world_state(original)
    assert sum(original.acc_target) > 0


def _mixed_world() -> SimulatedBank:
    bank = _bank(3000, limit=300_00, hostile=True)
    numbers, ccis = bank.accounts_codes(range(1, 3001))
    bank.execute({"op": "close_account", "account": 7})
    for b in range(0, 3000, 500):
        items: list[list[Any]] = []
        for i in range(b, b + 500):
            number = numbers[i] if i % 37 else numbers[i][:5] + "9999999"
            dni = f"{10_000_000 + i:08d}" if i % 29 else "10117410"
            amount = 200_00 if i % 31 else 400_00
            if i % 3 == 0:  # by CCI, some with a reference already used (duplicates)
                items.append([f"R:{i % 2900}", dni, amount, None, ccis[i]])
            else:
                items.append([f"R:{i}", dni, amount, number, None])
        _submit(bank, f"B{b}", items)
    return bank


def _orjson_page(bank: SimulatedBank, indices: Any, has_more: bool) -> bytes:
    data = bank.items_json(indices)
    cursor = data[-1]["id"] if has_more and data else None
    return orjson.dumps({"object": "list", "data": data, "has_more": has_more, "next_cursor": cursor})


def test_item_pages_are_the_bytes_orjson_writes() -> None:
    bank = _mixed_world()
    rng = random.Random(6)
    for until in (0, 3 * 3600, 40 * 3600):  # pending, partly settled (tranches), settled
        bank.execute({"op": "advance", "to": until})
        for b in bank.batches:
            for lo, hi in ((0, b.count), (0, 3), (5, b.count), (b.count - 1, b.count)):
                span = range(b.start + lo, b.start + hi)
                chosen = [i for i in span if rng.random() < 0.5]
                for more in (True, False):
                    assert bank.items_page(span, more) == _orjson_page(bank, span, more)
                    assert bank.items_page(chosen, more) == _orjson_page(bank, chosen, more)
    assert bank.items_page(range(0, 0), False) == _orjson_page(bank, range(0, 0), False)
    statuses = bank.stats_json()["items"]
    assert statuses["rejected"] > 0
    assert statuses["credited"] > 0


def test_settlement_posts_lines_that_chain_per_account() -> None:
    bank = _mixed_world()
    bank.execute({"op": "advance", "to": 40 * 86400})
    balances: dict[int, int] = {}
    for seq in range(len(bank.ln_type)):
        acct = bank.ln_acct[seq]
        balances[acct] = balances.get(acct, 0) + bank.ln_amount[seq]
        assert bank.ln_balance[seq] == balances[acct]
    assert all(bank.acc_balance[a] == b for a, b in balances.items())
    for i in range(len(bank.item_ref)):
        line = bank.item_line[i]
        if bank.item_status[i] == 1:
            assert (bank.ln_ref[line], bank.ln_amount[line], bank.ln_acct[line]) == (
                i,
                bank.item_amount[i],
                bank.item_acct[i],
            )
        else:
            assert line == -1


# --- accounts -----------------------------------------------------------------------------------------------


def test_account_codes_in_bulk_are_the_codes_one_by_one() -> None:
    bank = _bank(5000)
    rng = random.Random(7)
    for seqs in (range(0, 5001), [rng.randrange(1, 5001) for _ in range(300)], [0, 5], []):
        numbers, ccis = bank.accounts_codes(seqs)
        assert list(zip(numbers, ccis, strict=True)) == [bank.account_codes(s) for s in seqs]
    for number, cci in zip(*bank.accounts_codes(range(1, 5001)), strict=True):
        assert normalize_cci(cci) == cci == make_cci("018", cci[3:6], number)


def test_accounts_resolved_in_bulk_are_resolved_one_by_one() -> None:
    bank = _bank(2000)
    numbers, ccis = bank.accounts_codes(range(0, 2001))
    rng = random.Random(8)
    targets: list[tuple[str | None, str | None]] = []
    for _ in range(5000):
        k = rng.randrange(0, 2001)
        number, cci = numbers[k], ccis[k]
        r = rng.random()
        if r < 0.1:
            number = number[:2] + f"{rng.randrange(1000):03d}" + number[5:]
        elif r < 0.2:
            number = f"{rng.randrange(100):02d}" + number[2:]
        elif r < 0.3:
            number = number[:5] + f"{rng.randrange(10**7):07d}"
        elif r < 0.4:
            cci = cci[:3] + f"{rng.randrange(1000):03d}" + cci[6:]
        targets.append((number, None) if rng.random() < 0.5 else (None, cci))
    got = bank.resolve_accounts([t[0] for t in targets], [t[1] for t in targets])
    assert got == [bank.resolve_account(n, c) for n, c in targets]
    assert 0 < sum(seq > 0 for seq in got) < len(got)


def test_a_bulk_opening_answers_in_request_order_with_repeated_titulars() -> None:
    bank = _bank(10)
    rows = [["10000003", "Again", "080206"], ["30000001", "New", "150101"], ["30000001", "Twice", "150101"]]
    _, body, _ = bank.execute({"op": "bulk_accounts", "rows": rows})
    data = orjson.loads(body)["data"]
    assert [(r["dni"], r["created"]) for r in data] == [("10000003", False), ("30000001", True), ("30000001", False)]
    assert data[1]["account_id"] == data[2]["account_id"] == ids.ACCOUNT.encode(11)
    assert data[0]["account_id"] == ids.ACCOUNT.encode(4)
    assert (data[1]["account_number"], data[1]["cci"]) == bank.account_codes(11)
    assert len(bank.acc_name) == 12
    assert bank.acc_name[11] == "New"


# --- columns ------------------------------------------------------------------------------------------------


def test_a_string_column_behaves_like_a_list_the_collector_does_not_walk() -> None:
    rng = random.Random(9)
    column, plain = StringColumn(), []
    for _ in range(200):
        values = [f"s{len(plain) + j}" for j in range(rng.choice((0, 1, 7, CHUNK - 1, CHUNK, 2 * CHUNK + 3)))]
        if len(values) == 1:
            column.append(values[0])
        else:
            column.extend(iter(values))
        plain.extend(values)
    assert len(column) == len(plain)
    assert list(column) == plain
    for _ in range(2000):
        k = rng.randrange(-len(plain), len(plain))
        assert column[k] == plain[k]
        i, j = sorted(rng.randrange(0, len(plain) + 3) for _ in range(2))
        assert column[i:j] == plain[i:j]
    assert column[::7] == plain[::7]
    assert StringColumn(plain) == column
    with pytest.raises(IndexError):
        column[len(plain)]
    gc.collect()
    assert not any(gc.is_tracked(chunk) for chunk in column._chunks)


# --- the journal --------------------------------------------------------------------------------------------


def test_a_journal_in_either_form_replays_to_the_same_state() -> None:
    def world(journal: list[bytes]) -> SimulatedBank:
        bank = SimulatedBank(SimConfig(seed=2), journal=journal.append)
        rows = [(f"{40_000_000 + i:08d}", f"T {i}", "080206") for i in range(50)]
        bank.execute({"op": "bulk_accounts", "rows": rows})
        bank.execute({"op": "deposit_funding", "amount": 10**9})
        numbers, _ = bank.accounts_codes(range(1, 51))
        items = [(f"J:{i}", f"{40_000_000 + i:08d}", 200_00, numbers[i], None) for i in range(50)]
        payload = {"reference": "J", "description": None, "control_count": 50, "control_amount": 50 * 200_00}
        canonical = orjson.dumps({**payload, "items": items}, option=orjson.OPT_SORT_KEYS)
        cmd = {"op": "submit_batch", "key": "J", "fingerprint": "f", "body": {**payload, "items": items}}
        bank.execute(cmd, encoded=orjson.dumps({**cmd, "body": orjson.Fragment(canonical)}))
        bank.execute({"op": "advance", "to": 5 * 86400})
        return bank

    journal: list[bytes] = []
    original = world(journal)
    replayed = SimulatedBank(SimConfig(seed=2))
    for line in journal:  # lists where the running bank had tuples, the body's keys sorted
        replayed.execute(orjson.loads(line), replaying=True)
    assert replayed.ln_balance == original.ln_balance
    assert replayed.item_status == original.item_status
    assert list(replayed.item_ref) == list(original.item_ref)
    assert replayed.credited_refs == original.credited_refs
    number = original.account_codes(1)[0]
    assert orjson.loads(journal[2])["body"]["items"][0] == ["J:0", "40000000", 200_00, number, None]
