"""How many worker processes `splitpoint partition --jobs N` starts: each holds its own TensorFlow
and model (~0.5 GB), so never more than the CPUs this process may use or the splits left to build."""

from __future__ import annotations

import logging
import os

import pytest

from splitpoint import partition


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


def test_a_huge_jobs_is_capped_to_the_cpus_and_said_once(four_cpus: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="splitpoint.partition"):
        assert partition._workers_to_use(100_000, params=1000, splits=20) == 4
    assert [r.getMessage() for r in caplog.records] == [
        "--jobs 100000: converting 4 split(s) at once (4 CPU(s) here, 19 split(s) after head K)"]


def test_jobs_are_capped_to_the_splits_left_after_head_k(four_cpus: None) -> None:
    assert partition._workers_to_use(3, params=1000, splits=3) == 2  # head K alone, then two at once
    assert partition._workers_to_use(2, params=1000, splits=1) == 1  # only head K: one worker


def test_what_fits_is_used_as_asked_without_a_word(four_cpus: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="splitpoint.partition"):
        assert partition._workers_to_use(3, params=1000, splits=20) == 3
        assert partition._workers_to_use(None, params=1000, splits=20) == 1  # a small model: this process
        assert partition._workers_to_use(None, params=6_000_000, splits=20) == 2  # a big one: two workers
    assert caplog.records == []


def test_the_big_model_default_on_one_cpu_is_one_quietly(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    with caplog.at_level(logging.WARNING, logger="splitpoint.partition"):
        assert partition._workers_to_use(None, params=6_000_000, splits=20) == 1
    assert caplog.records == []
