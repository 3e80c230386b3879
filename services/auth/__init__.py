"""API tokens and roles: who may call what, and who is recorded as acting."""
