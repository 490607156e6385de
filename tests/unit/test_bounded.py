"""The agent's per-run memory does not grow with the run: frame ids as ranges, latencies as
bins. Before, a set of ids and a list of latencies held ~130 bytes a frame (340 MB a day at
30 fps, a field robot's Pi out of memory within days)."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from edge_node.bounded import IdRanges, LatencyMedian, RecordedOrigins

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


def test_recorded_origins_give_back_what_was_added() -> None:
    origins = RecordedOrigins()
    added = {0: "camera:0#0", 1: "camera:0#1", 7: "clip.mp4#7", 3: "img_003.png", 4: None, 5: "x#6", 9: "a#b#9"}
    for fid, origin in added.items():
        origins.add(fid, origin)
    origins.add(1, "other")  # a second record for an id (a hand-concatenated log): the first is kept
    assert dict(origins.items()) == added and len(origins) == len(added)
    assert sorted(origins.ids) == sorted(added) and origins.ids.last == 9


def test_resuming_a_day_of_camera_frames_holds_a_handful_of_entries(tmp_path) -> None:
    """A resumed log's origins: a dict of every record's (and the list of every record parsed
    to make it) took 2.1 GB for a million records, a day of a 10 fps camera. Numbered origins
    are held as ranges; a directory's file names one by one, as the source holds them."""
    from edge_node.results import open_results

    path = tmp_path / "r.jsonl"
    with path.open("w") as fh:
        for fid in range(20_000):
            fh.write(f'{{"frame_id":{fid},"origin":"camera:0#{fid}","status":"ok"}}\n')
        for fid in range(20_000, 20_010):
            fh.write(f'{{"frame_id":{fid},"origin":"img_{fid}.png","status":"ok"}}\n')
    import tracemalloc

    tracemalloc.start()
    log = open_results(path, "jsonl", fsync=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    try:
        assert peak < 1_000_000, f"{peak} bytes at the peak of opening 20,010 records"  # 13 MB before
        origins = log.done_origins()
        assert len(origins) == 20_010 and origins.held < 20, origins.held
        assert dict(origins.items())[12_345] == "camera:0#12345"
        assert dict(origins.items())[20_003] == "img_20003.png"
    finally:
        log.close()


def test_quantiles_are_the_nearest_rank_within_their_bin() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(4, 0.8) for _ in range(5001)]
    lat = LatencyMedian()
    for v in values:
        lat.add(v)
    ranked = sorted(values)
    for q in (0.01, 0.5, 0.95, 0.99, 1.0):
        exact = ranked[max(1, math.ceil(q * len(values))) - 1]
        assert lat.quantile(q) == pytest.approx(exact, rel=5e-4), q
    other = LatencyMedian()
    other.add(1e6)
    lat.merge(other)
    assert lat.count == 5002 and lat.quantile(1.0) == pytest.approx(1e6, rel=5e-4)
    assert LatencyMedian().quantile(0.5) is None
