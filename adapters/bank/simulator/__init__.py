"""The simulated Banco de la Nación: the bank interface served over HTTP or in-process, faults included.

Start it with ``cct-ledger bank-sim`` or, in-process::

    app = create_app(seed=7, faults="flaky")
    bank, control = connect(app)  # a BankClient (the port) and a SimControl, over ASGITransport
    await control.seed_accounts([...]); await control.deposit_funding(10_000_000_00)
    await control.advance(hours=1)
    ...
    await bank.aclose(); await control.aclose(); await get_simulator(app).aclose()

See ``docs/bank-api.md`` for the interface, the control routes under ``/sim`` and the behaviour model.
"""

from adapters.bank.simulator.app import create_app, get_simulator
from adapters.bank.simulator.control import SimControl, connect
from adapters.bank.simulator.core import SimConfig
from adapters.bank.simulator.faults import FLAKY, HOSTILE, NONE, FaultProfile, SettlementFaults, get_profile
from adapters.bank.simulator.households import BehaviourModel
from adapters.bank.simulator.runtime import Simulator
from adapters.bank.simulator.store import FileStore, MemoryStore, SimStateMismatch
from adapters.bank.simulator.webhooks import WebhookReceiver, asgi_receiver

__all__ = [
    "FLAKY",
    "HOSTILE",
    "NONE",
    "BehaviourModel",
    "FaultProfile",
    "FileStore",
    "MemoryStore",
    "SettlementFaults",
    "SimConfig",
    "SimControl",
    "SimStateMismatch",
    "Simulator",
    "WebhookReceiver",
    "asgi_receiver",
    "connect",
    "create_app",
    "get_profile",
    "get_simulator",
]
