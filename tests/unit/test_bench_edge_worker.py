"""The bench edge worker's emulated slower device."""

from __future__ import annotations

import time

import pytest

from splitpoint.bench.edge_worker import emulate_slower_device
from splitpoint.runtime.litert import HeadRunner


def test_slowdown_stretches_every_head_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(self: HeadRunner, x: int) -> int:
        time.sleep(0.02)
        return x + 1

    monkeypatch.setattr(HeadRunner, "run", fake_run)  # restored after the test, with what replaces it
    emulate_slower_device(4.0)
    t0 = time.perf_counter()
    assert HeadRunner.run(None, 41) == 42  # type: ignore[arg-type]
    took = time.perf_counter() - t0
    assert 0.08 <= took < 0.2, took


def test_factor_one_leaves_the_runner_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(self: HeadRunner, x: int) -> int:
        return x

    monkeypatch.setattr(HeadRunner, "run", fake_run)
    emulate_slower_device(1.0)
    assert HeadRunner.run is fake_run
