"""The bank adapter: the HTTP client of the Banco de la Nación interface, webhook signatures, the simulator.

``BankClient`` implements ``services.ports.bank.BankPort``; ``adapters.bank.simulator`` serves the same
interface for tests, demos and benchmarks. The interface is described in ``docs/bank-api.md``.
"""
