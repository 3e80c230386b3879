"""Fixtures shared by the services' tests: the command line on a fresh database."""

from tests.services.programs.conftest import cli

__all__ = ["cli"]
