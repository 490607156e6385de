"""The fixed runs switched by window (splitpoint.bench.hindsight): worked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitpoint.bench.hindsight import by_window, followed_mean, switched_mean

pytestmark = pytest.mark.edge_side  # no TensorFlow needed


def test_each_window_takes_the_run_that_was_quickest_over_it() -> None:
    runs = {"k=0": [40.0, 40.0, 200.0, 200.0], "k=9": [60.0, 60.0, 60.0, 60.0]}
    # windows of 2: k=0 over the first (40 + 40), k=9 over the second (60 + 60)
    assert switched_mean(runs, 2) == 50.0
    # one window: the best fixed run's own mean
    assert switched_mean(runs, 4) == 60.0
    # frame by frame each frame gets the lower of the two, here as by windows of 2
    assert switched_mean(runs, 1) == 50.0


def test_a_window_is_judged_on_its_sum_not_on_its_first_frame() -> None:
    runs = {"k=0": [30.0, 150.0], "k=9": [50.0, 50.0]}
    assert switched_mean(runs, 2) == 50.0   # k=0's 90 ms mean loses the window despite its first frame
    assert switched_mean(runs, 1) == 40.0


def test_a_run_missing_a_frame_cannot_be_taken_for_that_window() -> None:
    runs = {"k=0": [10.0, None, 10.0, 10.0], "k=9": [50.0, 50.0, 50.0, 50.0]}
    assert switched_mean(runs, 2) == 30.0   # (50 + 50 + 10 + 10) / 4
    assert switched_mean({"k=0": [10.0, None]}, 2) is None  # no run answered that window in full
    assert switched_mean({}, 5) is None and switched_mean({"k=0": []}, 5) is None


def test_runs_of_different_lengths_are_read_over_the_frames_all_have() -> None:
    assert switched_mean({"k=0": [10.0, 10.0, 10.0], "k=9": [20.0, 20.0]}, 1) == 10.0
    with pytest.raises(ValueError, match="window"):
        switched_mean({"k=0": [1.0]}, 0)


def test_a_follower_takes_the_run_that_was_quickest_over_the_window_before() -> None:
    runs = {"k=0": [40.0, 40.0, 200.0, 200.0, 40.0, 40.0], "k=9": [60.0] * 6}
    # k=9 is the best fixed run (60 against 93.3): first window k=9 (60, 60), then k=0, which was
    # quickest over the first (200, 200), then k=9, quickest over the second (60, 60)
    assert followed_mean(runs, 2) == (60 + 60 + 200 + 200 + 60 + 60) / 6
    assert switched_mean(runs, 2) == (40 + 40 + 60 + 60 + 40 + 40) / 6
    # one window: both are the best fixed run
    assert followed_mean(runs, 6) == switched_mean(runs, 6) == 60.0


def test_a_follower_without_the_frames_it_needs_gives_no_figure() -> None:
    # k=0 quickest over the first window, then missing a frame in the second
    assert followed_mean({"k=0": [10.0, 10.0, None, 10.0], "k=9": [50.0] * 4}, 2) is None
    assert followed_mean({}, 2) is None and followed_mean({"k=0": [None, 1.0]}, 2) is None


def test_every_window_the_hindsight_figure_exists_for_is_reported() -> None:
    runs = {"k=0": [40.0] * 5 + [200.0] * 5, "k=9": [60.0] * 10}
    # following frame by frame: 60 (k=9 first), 4 x 40, then 200 once before it turns back to k=9;
    # by 0.5 s: k=9's 60s, then k=0's 200s
    assert by_window(runs) == [(1, 50.0, 66.0), (5, 50.0, 130.0), (10, 60.0, 60.0)]
    assert by_window({"k=0": [None] * 10}) == []


def test_a_fixed_runs_frames_are_kept_in_frame_order_with_gaps_where_it_had_no_answer() -> None:
    from splitpoint.bench.traces_stage import trace_stats
    from splitpoint.bench.worker_client import RunOutcome

    def record(i: int, ms: float, status: str = "ok") -> dict[str, object]:
        return {"frame_id": i, "status": status, "split": 0, "capture_time_unix_ns": 10**18 + i * 10**8,
                "timings_ms": {"end_to_end": ms}}

    recs = [record(4, 44.0), record(0, 900.0), record(3, 0.0, "failed"), record(2, 22.0), record(1, 11.0)]
    out = RunOutcome(recs, 0, 1.0, None, None, Path("r.jsonl"))
    fixed = trace_stats(out, 0, 1, 100.0, 10**18)
    assert fixed.counted_ms == [11.0, 22.0, None, 44.0]  # frame 0 is the warm-up
    assert fixed.end_to_end_ms == []
    adaptive = trace_stats(out, None, 1, 100.0, 10**18)
    assert adaptive.counted_ms == [] and adaptive.end_to_end_ms == [900.0, 11.0, 22.0, 44.0]
