"""The collector's setting while batch jobs run, and after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from services.collector import batch_collector, server_collector


@pytest.fixture
def default_threshold() -> Iterator[tuple[int, ...]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_raised_while_a_job_runs_and_restored_after(default_threshold: tuple[int, ...]) -> None:
    with batch_collector(50_000):
        assert gc.get_threshold() == (50_000, 10, 10)
    assert gc.get_threshold() == default_threshold


def test_overlapping_jobs_restore_only_when_the_last_ends(default_threshold: tuple[int, ...]) -> None:
    first, second = batch_collector(50_000), batch_collector(80_000)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first job ends while the second still runs
    assert gc.get_threshold()[0] == 50_000
    second.__exit__(None, None, None)
    assert gc.get_threshold() == default_threshold


def test_restored_when_the_job_fails(default_threshold: tuple[int, ...]) -> None:
    with pytest.raises(RuntimeError), batch_collector(50_000):
        raise RuntimeError("boom")
    assert gc.get_threshold() == default_threshold


def test_a_higher_setting_of_the_process_is_kept() -> None:
    before = gc.get_threshold()
    gc.set_threshold(200_000, 10, 10)
    try:
        with batch_collector(50_000):
            assert gc.get_threshold()[0] == 200_000
    finally:
        gc.set_threshold(*before)


def test_a_server_freezes_what_startup_built_and_keeps_the_higher_threshold() -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        server_collector(60_000)
        assert gc.get_threshold() == (60_000, 10, 10)
        assert gc.get_freeze_count() > 1000  # the interpreter, the modules and what they built
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
