"""The ledger over HTTP: accounts, balances, statements, transfers, holds, reversals, verification."""
