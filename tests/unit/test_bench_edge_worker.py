"""The bench edge worker's emulated slower device."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from splitpoint.bench.edge_worker import CALIBRATION_RUNS, emulate_slower_device
from splitpoint.bench.worker_client import SourceOpenWatch
from splitpoint.runtime.litert import HeadRunner

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13


class FakeHead:
    def __init__(self, path: str, seconds: float):
        self.path, self.seconds = path, seconds


def fake_run(self: FakeHead, x: int) -> int:
    time.sleep(self.seconds)
    return x + 1


def timed(head: FakeHead, x: int = 41) -> float:
    t0 = time.perf_counter()
    assert HeadRunner.run(head, x) == x + 1  # type: ignore[arg-type]
    return time.perf_counter() - t0


def test_each_head_lasts_factor_times_its_median_native_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HeadRunner, "run", fake_run)  # restored after the test, with what replaces it
    emulate_slower_device(4.0)
    fast, slow = FakeHead("a.tflite", 0.002), FakeHead("b.tflite", 0.005)
    took_fast = [timed(fast) for _ in range(CALIBRATION_RUNS)]
    took_slow = [timed(slow) for _ in range(5)]
    assert 0.008 <= min(took_fast[5:]) and max(took_fast[5:]) < 0.02, took_fast
    assert 0.020 <= min(took_slow) < 0.035, took_slow


def test_a_disturbed_invocation_is_not_multiplied(monkeypatch: pytest.MonkeyPatch) -> None:
    """Interference on the core (here 6 ms more once calibrated) adds once; it is not scaled by the factor."""
    monkeypatch.setattr(HeadRunner, "run", fake_run)
    emulate_slower_device(4.0)
    head = FakeHead("a.tflite", 0.002)
    for _ in range(CALIBRATION_RUNS):
        timed(head)
    head.seconds = 0.008  # disturbed: 4x its usual native time
    took = timed(head)
    assert 0.008 <= took < 0.025, took  # target 4 x 2 ms = 8 ms; 4 x 8 ms would be 32


def test_factor_one_leaves_the_runner_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HeadRunner, "run", fake_run)
    emulate_slower_device(1.0)
    assert HeadRunner.run is fake_run


def test_the_source_open_watch_fires_once_on_a_complete_line_only(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    fired: list[int] = []
    watch = SourceOpenWatch(events, lambda: fired.append(1))
    watch.poll()  # no file yet: nothing
    with open(events, "a") as fh:
        fh.write('not json\n{"event": "other"}\n{"event": "source-open", "t_unix_ns": 1')  # the line is unfinished
    watch.poll()
    assert fired == [] and not watch.synced
    with open(events, "a") as fh:
        fh.write('}\n{"event": "source-open", "t_unix_ns": 2}\n')
    watch.poll()
    watch.poll()
    assert fired == [1] and watch.opened == {"event": "source-open", "t_unix_ns": 1}


def test_a_log_line_that_looks_like_the_old_mark_does_not_start_the_trace(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("12:00:00 INFO edge_node.sources: frame source: synthetic:3\n")
    fired: list[int] = []
    SourceOpenWatch(events, lambda: fired.append(1)).poll()
    assert fired == []
