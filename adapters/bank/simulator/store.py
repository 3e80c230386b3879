"""Where the simulated bank keeps its state: nowhere (tests) or a folder of plain files.

The file store is a journal plus snapshots, no database:

- ``sim.json``: the world's parameters (seed, start, item limit, behaviour), fixed at creation;
- ``journal-<generation>.jsonl``: one line per successful state-changing command (a whole batch, a whole bulk
  of accounts or a clock advance per line, never one line per item), flushed after each command and fsynced
  only on request (``fsync=True``) and at snapshots;
- ``snapshot-<generation>/``: the columns as raw arrays plus a ``meta.json``, written when the journal grows
  past a threshold, on ``POST /sim/snapshot`` and at shutdown; ``CURRENT`` names the latest.

Opening a folder loads the latest snapshot and replays the journal written after it. Replaying is exact
because every command is deterministic for the seed (``core.py``). A torn last journal line (a crash in
the middle of a write) is ignored: its request was never answered.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from array import array
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

from adapters.bank.simulator import core
from adapters.bank.simulator.columns import StringColumn
from adapters.bank.simulator.core import IdempotencyRecord, SimBatch, SimConfig, SimulatedBank
from adapters.bank.simulator.faults import SettlementFaults
from adapters.bank.simulator.households import BehaviourModel

log = structlog.get_logger()

FORMAT = 1


class SimStateMismatch(ValueError):
    """The state folder was created with other world parameters (seed, start...)."""


class Store(Protocol):
    """Persistence of a simulated bank."""

    @property
    def snapshot_due(self) -> bool:
        """Whether the journal grew enough to deserve a snapshot."""
        ...

    def stored_config(self) -> SimConfig | None:
        """The parameters of the saved world, or None when there is none."""
        ...

    def open(self, config: SimConfig | None, settlement: SettlementFaults) -> SimulatedBank:
        """Build the bank: load the saved state, or start a new one with ``config``."""
        ...

    def snapshot(self, bank: SimulatedBank) -> None:
        """Write a snapshot and start a new journal generation."""
        ...

    def close(self, bank: SimulatedBank | None) -> None:
        """Flush and release files (writing a final snapshot when given the bank)."""
        ...


class MemoryStore:
    """No persistence: the state lives and dies with the process (tests, benchmarks, demos)."""

    snapshot_due = False

    def stored_config(self) -> SimConfig | None:
        """The parameters of the saved world, or None."""
        return None

    def open(self, config: SimConfig | None, settlement: SettlementFaults) -> SimulatedBank:
        """Build the bank: load the saved state, or start a new one with ``config``."""
        return SimulatedBank(config or SimConfig(), settlement)

    def snapshot(self, bank: SimulatedBank) -> None:
        """Nothing to write."""
        return None

    def close(self, bank: SimulatedBank | None) -> None:
        """Nothing to release."""
        return None


def _config_to_json(config: SimConfig) -> dict[str, Any]:
    return {**config.to_json(), "behaviour": dataclasses.asdict(config.behaviour)}


def _config_from_json(data: dict[str, Any]) -> SimConfig:
    behaviour: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in data.get("behaviour", {}).items()
    }
    return SimConfig(
        seed=int(data["seed"]),
        start=datetime.fromisoformat(data["start"]),
        item_amount_limit=int(data["item_amount_limit"]),
        program_name=str(data["program_name"]),
        behaviour=BehaviourModel(**behaviour),
    )


class FileStore:
    """A journal plus snapshots in a folder.

    Args:
        path: the state folder (created if missing).
        fsync: fsync the journal after every command (slower; survives power loss, not just a crash).
        snapshot_every_bytes: write a snapshot once the journal passes this size.
    """

    def __init__(self, path: Path, *, fsync: bool = False, snapshot_every_bytes: int = 256 * 2**20) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.snapshot_every_bytes = snapshot_every_bytes
        self.generation = 0
        self._journal: Any = None
        self._journal_bytes = 0

    @property
    def snapshot_due(self) -> bool:
        """Whether the journal grew enough to deserve a snapshot."""
        return self._journal_bytes >= self.snapshot_every_bytes

    def stored_config(self) -> SimConfig | None:
        """The parameters the folder was created with, or None for a new folder."""
        meta = self.path / "sim.json"
        if not meta.exists():
            return None
        return _config_from_json(orjson.loads(meta.read_bytes())["config"])

    def open(self, config: SimConfig | None, settlement: SettlementFaults) -> SimulatedBank:
        """Build the bank: load the saved state, or start a new one with ``config``."""
        self.path.mkdir(parents=True, exist_ok=True)
        stored = self.stored_config()
        if stored is None:
            config = config or SimConfig()
            meta = {"format": FORMAT, "config": _config_to_json(config), "settlement": settlement.to_json()}
            _write_atomic(self.path / "sim.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2))
            initial = settlement
        else:
            if config is not None and _config_to_json(config) != _config_to_json(stored):
                differ = sorted(k for k, v in _config_to_json(config).items() if _config_to_json(stored).get(k) != v)
                raise SimStateMismatch(
                    f"{self.path} holds a simulation created with other parameters ({', '.join(differ)}; "
                    f"seed {stored.seed}); use the same parameters or another state folder"
                )
            config = stored
            initial = SettlementFaults.from_json(orjson.loads((self.path / "sim.json").read_bytes())["settlement"])
        bank = SimulatedBank(config, initial)
        current = self.path / "CURRENT"
        if current.exists():
            name = current.read_text().strip()
            self.generation = int(name.rsplit("-", 1)[1])
            load_snapshot(bank, self.path / name)
        replayed = self._replay(bank)
        self._open_journal()
        bank.journal = self.append
        log.info("bank_sim.state_loaded", path=str(self.path), generation=self.generation, replayed=replayed)
        return bank

    def _journal_path(self) -> Path:
        return self.path / f"journal-{self.generation}.jsonl"

    def _replay(self, bank: SimulatedBank) -> int:
        path = self._journal_path()
        if not path.exists():
            return 0
        count = 0
        good = 0
        with path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    log.warning("bank_sim.journal_torn_line", path=str(path), offset=good)
                    break
                bank.execute(orjson.loads(raw), replaying=True)
                good += len(raw)
                count += 1
        if good != path.stat().st_size:
            with path.open("r+b") as f:
                f.truncate(good)
        return count

    def _open_journal(self) -> None:
        path = self._journal_path()
        self._journal = path.open("ab")
        self._journal_bytes = path.stat().st_size

    def append(self, command: bytes) -> None:
        """Journal one command, given as JSON (one line, flushed; fsynced when configured)."""
        data = command + b"\n"
        self._journal.write(data)
        self._journal.flush()
        if self.fsync:
            os.fsync(self._journal.fileno())
        self._journal_bytes += len(data)

    def snapshot(self, bank: SimulatedBank) -> None:
        """Write a snapshot and start a new journal generation."""
        generation = self.generation + 1
        name = f"snapshot-{generation}"
        tmp = self.path / (name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        save_snapshot(bank, tmp)
        tmp.rename(self.path / name)
        _write_atomic(self.path / "CURRENT", name.encode())
        old_generation = self.generation
        if self._journal is not None:
            self._journal.close()
        self.generation = generation
        self._open_journal()
        (self.path / f"journal-{old_generation}.jsonl").unlink(missing_ok=True)
        shutil.rmtree(self.path / f"snapshot-{old_generation}", ignore_errors=True)
        log.info("bank_sim.snapshot_written", path=str(self.path), generation=generation)

    def close(self, bank: SimulatedBank | None) -> None:
        """Flush and release files (a final snapshot when given the bank)."""
        if bank is not None and self._journal is not None and self._journal_bytes > 0:
            self.snapshot(bank)
        if self._journal is not None:
            self._journal.flush()
            os.fsync(self._journal.fileno())
            self._journal.close()
            self._journal = None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


# --- snapshots -------------------------------------------------------------------------------------------

_ARRAY_COLUMNS = (*core.ACCOUNT_COLUMNS, *core.ITEM_COLUMNS, *core.LINE_COLUMNS)


def save_snapshot(bank: SimulatedBank, folder: Path) -> None:
    """Write the bank's whole state into ``folder`` (which must not exist)."""
    bank.households.react()  # the credits' reactions are part of the state (targets, counts, schedule)
    folder.mkdir(parents=True)
    for name, _ in _ARRAY_COLUMNS:
        with (folder / f"{name}.bin").open("wb") as f:
            getattr(bank, name).tofile(f)
    for name in core.BYTE_COLUMNS:
        (folder / f"{name}.bin").write_bytes(bytes(getattr(bank, name)))
    (folder / "acc_name.txt").write_text("\n".join(bank.acc_name), encoding="utf-8")
    (folder / "item_ref.txt").write_text("\n".join(bank.item_ref), encoding="utf-8")
    schedule_index, moves = bank.households.export()
    with (folder / "schedule.bin").open("wb") as f:
        moves.tofile(f)
    meta = {
        "format": FORMAT,
        "byteorder": sys.byteorder,
        "now": bank.now,
        "settlement": bank.settlement.to_json(),
        "counts": {"accounts": len(bank.acc_name), "items": len(bank.item_ref), "lines": len(bank.ln_type)},
        "batches": [dataclasses.asdict(b) for b in bank.batches],
        "events": [list(e) for e in bank.events],
        "idempotency": {k: [r.fingerprint, r.status, r.body.decode(), r.op] for k, r in bank.idempotency.items()},
        "line_refs": {str(k): v for k, v in bank.line_refs.items()},
        "schedule": schedule_index,
    }
    (folder / "meta.json").write_bytes(orjson.dumps(meta))
    for path in folder.iterdir():
        with path.open("rb") as f:
            os.fsync(f.fileno())


def _read_array(folder: Path, name: str, code: str) -> array[int]:
    out = array(code)
    path = folder / f"{name}.bin"
    with path.open("rb") as f:
        out.fromfile(f, path.stat().st_size // out.itemsize)
    return out


def _read_lines(path: Path, count: int) -> list[str]:
    if count == 0:
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    if len(lines) != count:
        raise ValueError(f"{path}: expected {count} lines, found {len(lines)}")
    return lines


def load_snapshot(bank: SimulatedBank, folder: Path) -> None:
    """Replace a fresh bank's state with the snapshot in ``folder``."""
    meta = orjson.loads((folder / "meta.json").read_bytes())
    if meta["format"] != FORMAT or meta["byteorder"] != sys.byteorder:
        raise ValueError(f"{folder}: snapshot format {meta['format']}/{meta['byteorder']} is not readable here")
    for name, code in _ARRAY_COLUMNS:
        setattr(bank, name, _read_array(folder, name, code))
    for name in core.BYTE_COLUMNS:
        setattr(bank, name, bytearray((folder / f"{name}.bin").read_bytes()))
    counts = meta["counts"]
    bank.acc_name = StringColumn(_read_lines(folder / "acc_name.txt", counts["accounts"]))
    bank.item_ref = StringColumn(_read_lines(folder / "item_ref.txt", counts["items"]))
    bank.now = int(meta["now"])
    bank.settlement = SettlementFaults.from_json(meta["settlement"])
    bank.batches = [SimBatch(**b) for b in meta["batches"]]
    bank.events = [(e[0], e[1], e[2], e[3], e[4], e[5]) for e in meta["events"]]
    bank.idempotency = {
        k: IdempotencyRecord(fp, status, body.encode(), op) for k, (fp, status, body, op) in meta["idempotency"].items()
    }
    bank.line_refs = {int(k): v for k, v in meta["line_refs"].items()}
    moves = _read_array(folder, "schedule", "q")
    bank.households.restore(meta["schedule"], moves)
    _rebuild_indexes(bank)


def _rebuild_indexes(bank: SimulatedBank) -> None:
    status, dni = bank.acc_status, bank.acc_dni
    bank.dni_index = {dni[seq]: seq for seq in range(1, len(bank.acc_name)) if not status[seq]}
    credited = core.CREDITED
    bank.credited_refs = dict.fromkeys(
        ref for ref, status in zip(bank.item_ref, bank.item_status, strict=True) if status == credited
    )
    bank.batch_by_ref = {b.reference: b.seq for b in bank.batches}
    bank.settle_heap = []
    for b in bank.batches:
        for index, (when, upto) in enumerate(b.tranches):
            if upto > b.settled:
                bank.settle_heap.append((when, b.seq, index))
    bank.settle_heap.sort()
    bank.held_total = sum(b.hold for b in bank.batches)
