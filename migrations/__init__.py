"""Alembic migrations: the database schema, constraints and triggers, as code."""
