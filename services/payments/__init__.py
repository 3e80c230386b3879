"""Payment runs: from the household registry to money in savings accounts, exactly once.

``create`` computes and snapshots every payment; ``approve`` is maker-checker; ``execute`` holds the run in
the ledger (one hold per bank batch), submits the batches to the bank with control totals, and applies each
batch's results (credited: posted to the household's savings; rejected: released back to the fund and the
entitlement accrues again), continuing from the database state after any crash.
"""
