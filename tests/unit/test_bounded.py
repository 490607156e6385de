"""The agent's per-run memory does not grow with the run: frame ids as ranges, latencies as
bins. Before, a set of ids and a list of latencies held ~130 bytes a frame (340 MB a day at
30 fps, a field robot's Pi out of memory within days)."""

from __future__ import annotations

import random
import statistics

import pytest

from edge_node.bounded import IdRanges, LatencyMedian

pytestmark = pytest.mark.edge_side


def test_id_ranges_hold_what_a_set_holds() -> None:
    rng = random.Random(7)
    ids, reference = IdRanges(), set()
    for _ in range(5000):
        i = rng.randrange(-50, 400)
        assert ids.add(i) == (i not in reference)
        reference.add(i)
        assert len(ids) == len(reference)
    assert set(ids) == reference and list(ids) == sorted(reference)
    assert all((i in ids) == (i in reference) for i in range(-60, 410))
    assert "3" not in ids  # type: ignore[operator]
    assert IdRanges([5, 3, 4, 9, 3]).ranges == 2


def test_a_long_run_answered_out_of_order_holds_a_handful_of_ranges() -> None:
    """Frames finish out of order (cloud and local answers interleave) within the window."""
    rng = random.Random(1)
    ids, window = IdRanges(range(1000)), []  # a resumed log's ids, then this run's
    most = 0
    for fid in range(1000, 200_000):
        window.append(fid)
        if len(window) >= 8:  # up to 8 in flight, any of them finishing next
            assert ids.add(window.pop(rng.randrange(len(window))))
        most = max(most, ids.ranges)
    for fid in window:
        ids.add(fid)
    assert len(ids) == 200_000 and ids.ranges == 1 and most <= 9


def test_the_median_is_within_its_bin_of_the_exact_one() -> None:
    rng = random.Random(3)
    for n in (1, 2, 3, 10, 1001, 20_000):
        values = [rng.lognormvariate(3, 1.5) for _ in range(n)]
        median = LatencyMedian()
        for v in values:
            median.add(v)
        exact = statistics.median(values)
        assert median.median() == pytest.approx(exact, rel=0.0006), n
    empty = LatencyMedian()
    assert empty.median() is None
    empty.add(float("nan"))
    assert empty.median() is None and empty.count == 0


def test_a_million_latencies_take_a_few_thousand_bins() -> None:
    rng = random.Random(5)
    median = LatencyMedian()
    for _ in range(1_000_000):
        median.add(rng.uniform(1.0, 1000.0))
    assert median.count == 1_000_000
    assert median.bins <= 6_920  # ln(1000) / ln(1.001): fixed by the range, not the run's length
    assert median.median() == pytest.approx(500.5, rel=0.01)


def test_zero_and_negative_latencies_count_as_zero() -> None:
    median = LatencyMedian()
    for v in (0.0, -1.0, 5.0):
        median.add(v)
    assert median.median() == 0.0


def test_a_recorder_s_memory_does_not_grow_with_the_frames_it_records(tmp_path) -> None:
    """The recorder and its results log, 10,000 frames on: what they retain stays under 50 KB
    (a set of ids and a list of latencies retained ~1.3 MB). The latency bins are bounded by
    the latencies' range, not their number: the first frames see all of them."""
    import gc
    import time
    import tracemalloc

    import numpy as np
    from prometheus_client import CollectorRegistry

    from edge_node.recorder import Recorder
    from edge_node.run_report import EdgeMetrics
    from edge_node.sources import Frame

    rec = Recorder(["zero", "one"], EdgeMetrics(CollectorRegistry()), on_fatal=lambda: None)
    rec.open(str(tmp_path / "r.jsonl"), "jsonl", False, resume=False)
    raw, scores = np.zeros((2, 2, 1), np.uint8), np.array([0.2, 0.8])

    def record(fids: range) -> None:
        for fid in fids:
            frame = Frame(fid, raw, 1, f"f#{fid}", time.time_ns(), capture_mono_ns=time.monotonic_ns() - (1 + fid % 97) * 1_000_000)
            rec.ok(frame, 1, "cloud", scores, {"head": 0.5}, None)()

    record(range(0, 5_000))  # warm: every lazily made object made, the latencies' bins seen
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    record(range(5_000, 15_000))
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    rec.close()
    assert rec.summary.frames == 15_000
    assert grown < 50_000, f"{grown} bytes retained for 10,000 frames"
