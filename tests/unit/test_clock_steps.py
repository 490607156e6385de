"""A wall-clock step mid-run (NTP setting a Pi's clock, which has no battery-backed clock and
sets it after boot, once a link is up) moves no frame's latency. Before, every latency was a
difference of wall-clock stamps: a frame in flight across a 3 h step was recorded 3 h late,
and with --fps every later frame too (its due time came from the wall clock at the start)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge_node.recorder import Recorder
from edge_node.results import read_results
from edge_node.run_report import EdgeMetrics
from edge_node.source_spec import open_source
from edge_node.sources import Frame
from splitpoint.bundle import Preprocessing

pytestmark = pytest.mark.edge_side

GRAY8 = Preprocessing(height=8, width=8, channels=1, scale=1 / 255, offset=0.0)
STEP_NS = 3 * 3600 * 10**9  # NTP moving a clock set at the last shutdown to now


class SteppedWallClock:
    """time.time_ns, stepped forward by STEP_NS once `step()` is called."""

    def __init__(self) -> None:
        self.offset = 0
        self.real = time.time_ns

    def step(self) -> None:
        self.offset = STEP_NS

    def __call__(self) -> int:
        return self.real() + self.offset


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> SteppedWallClock:
    clock = SteppedWallClock()
    monkeypatch.setattr(time, "time_ns", clock)
    return clock


def test_a_frame_recorded_after_a_step_has_its_true_latency(tmp_path, wall: SteppedWallClock) -> None:
    rec = Recorder(["zero", "one"], EdgeMetrics(CollectorRegistry()), on_fatal=lambda: None)
    rec.open(str(tmp_path / "r.jsonl"), "jsonl", False, resume=False)
    frame = Frame(0, np.zeros((8, 8, 1), np.uint8), None, "f", time.time_ns(), capture_mono_ns=time.monotonic_ns())
    wall.step()  # while the frame is in flight
    rec.ok(frame, 2, "cloud", np.array([0.2, 0.8]), {}, None)()
    rec.close()
    (record,) = read_results(str(tmp_path / "r.jsonl"))
    assert 0 <= record["timings_ms"]["end_to_end"] < 5_000, record  # was 10,800,000 ms


def test_a_paced_source_s_frames_after_a_step_keep_their_pace_and_age(tmp_path, wall: SteppedWallClock) -> None:
    for i in range(3):
        np.save(tmp_path / f"{i}.npy", np.full((8, 8), i, np.uint8))
    with open_source(str(tmp_path), GRAY8, fps=50.0) as source:
        frames = iter(source)
        first = next(frames)
        wall.step()
        later = [next(frames), next(frames)]
    for frame in (first, *later):
        assert 0 <= frame.age_ns() < 5 * 10**9, frame  # was 3 h for every frame read after the step
    # the wall stamps are the clock's as it reads now: a record's t_unix matches the journal's time
    assert all(abs(f.capture_time_ns - time.time_ns()) < 5 * 10**9 for f in later)
    # and the pace held: 20 ms apart on the monotonic clock
    gaps = np.diff([f.capture_mono_ns for f in (first, *later)]) / 1e6  # type: ignore[arg-type]
    assert all(19 <= g <= 21 for g in gaps), gaps
