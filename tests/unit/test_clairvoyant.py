"""The clairvoyant bound on hand-made traces whose answer is worked out by hand, and against a
brute-force search over every schedule on small random instances."""

from __future__ import annotations

import dataclasses
import itertools
import random

import numpy as np
import pytest

from scheduler.cost import FRAME_OVERHEAD_BYTES
from splitpoint.bench.clairvoyant import (
    Capacity,
    PathCost,
    clairvoyant,
    paths_from_profiles,
    trace_bound,
)
from splitpoint.bench.trace_results import ClairvoyantBound
from splitpoint.traces import BandwidthTrace, constant, step

MBPS8 = constant(8)  # 1 byte per microsecond: n bytes take n microseconds


def test_no_contention_every_frame_takes_the_faster_path() -> None:
    # split: 5 ms head + 10,000 B (10 ms at 8 Mbps) + 20 ms RTT + 5 ms server = 40 ms; local 50 ms
    paths = [PathCost(1, 5.0, 10_000, 5.0), PathCost(9, 50.0)]
    res = clairvoyant(paths, Capacity(MBPS8, 10), fps=10, frames=5, rtt_ms=20.0, deadline_ms=45.0)
    assert res.exact and res.splits == [1] * 5
    assert res.mean_ms == pytest.approx(40.0) and res.p95_ms == pytest.approx(40.0)
    assert res.deadline_misses == 0 and res.frames == 5


def test_contention_for_the_uplink() -> None:
    """Two frames 1 ms apart; the split's transfer (20 ms) is the bottleneck, local takes 21 ms.
    split/split: 20 + 39; split/local: 20 + 21 (the edge is free: the split's head is 0);
    local/split: 21 + 40; local/local: 21 + 41. The best mean is 20.5 ms."""
    paths = [PathCost(1, 0.0, 20_000, 0.0), PathCost(9, 21.0)]
    res = clairvoyant(paths, Capacity(MBPS8, 10), fps=1000, frames=2, rtt_ms=0.0, deadline_ms=20.5)
    assert res.exact and res.splits == [1, 9]
    assert res.latencies_ms == pytest.approx([20.0, 21.0])
    assert res.mean_ms == pytest.approx(20.5) and res.deadline_misses == 1


def test_edge_and_uplink_work_on_different_frames_at_once() -> None:
    """Every frame split: 10 ms head, 10 ms transfer, a frame every 10 ms. Pipelined (frame i's
    head overlaps frame i-1's transfer) each frame takes 20 ms and the pipeline keeps pace;
    one at a time it would fall behind by 10 ms a frame."""
    paths = [PathCost(1, 10.0, 10_000, 0.0)]
    res = clairvoyant(paths, Capacity(MBPS8, 10), fps=100, frames=20, rtt_ms=0.0)
    assert res.latencies_ms == pytest.approx([20.0] * 20)


def test_a_dead_start_of_the_trace() -> None:
    """Nothing crosses the link for 0.5 s, then 8 Mbps. Frames at 0, 0.1, ... 0.6 s; local takes
    100 ms (the edge is free again exactly at the next frame), the split 1 ms once the link lives.
    Frames 0-4 go local (the split would finish at 0.501 s: 101 ms for the frame at 0.4 s), frames
    5 and 6 split: (5 x 100 + 2 x 1) / 7 ms."""
    trace = BandwidthTrace([0.0, 0.5], [0.0, 8e6], repeat=False, name="dead-start")
    paths = [PathCost(1, 0.0, 1000, 0.0), PathCost(9, 100.0)]
    res = clairvoyant(paths, Capacity(trace, 10), fps=10, frames=7, rtt_ms=0.0)
    assert res.splits == [9, 9, 9, 9, 9, 1, 1]
    assert res.mean_ms == pytest.approx(502 / 7)


def test_warmup_frames_take_resources_but_are_not_counted() -> None:
    paths = [PathCost(1, 0.0, 20_000, 0.0), PathCost(9, 21.0)]
    res = clairvoyant(paths, Capacity(MBPS8, 10), fps=1000, frames=2, rtt_ms=0.0, warmup=1)
    # frame 1 alone: split right after frame 0's split would wait (39 ms); after a local frame 0
    # the edge is busy until 21 ms, then the split takes 20 ms more (40); so frame 0 splits and
    # frame 1 goes local (21 ms)
    assert res.frames == 1 and res.mean_ms == pytest.approx(21.0)


def _finish(trace: BandwidthTrace, start: float, nbytes: int) -> float:
    """Independent of Capacity: bisection on BandwidthTrace.bits_between."""
    lo, hi = start, start + 1.0
    while trace.bits_between(start, hi) < nbytes * 8:
        hi += 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if trace.bits_between(start, mid) >= nbytes * 8 else (mid, hi)
    return hi


def _simulate(choice: tuple[PathCost, ...], trace: BandwidthTrace, fps: float, rtt_ms: float) -> list[float]:
    edge = link = 0.0
    lats = []
    for i, p in enumerate(choice):
        t = i / fps
        if p.split == 0:  # quantized on the CPU: the edge is not used
            sent = t + p.head_ms / 1000
        else:
            sent = edge = max(edge, t) + p.head_ms / 1000
        if p.local:
            lats.append((edge - t) * 1000)
        else:
            link = _finish(trace, max(sent, link), p.wire_bytes)
            lats.append((link - t) * 1000 + rtt_ms + p.server_ms)
    return lats


@pytest.mark.parametrize("seed", range(8))
def test_exact_optimum_equals_brute_force(seed: int) -> None:
    """Slow links and paths that trade head time for bytes: the optima mix all three paths
    (several seeds switch between paths within the six frames)."""
    rng = random.Random(seed)
    trace = step([(0.0, rng.uniform(0.5, 3)), (0.1, rng.uniform(0.05, 1)), (0.2, rng.uniform(1, 6))])
    paths = [PathCost(0, 0.1, rng.randint(2_000, 8_000), rng.uniform(1, 5)),
             PathCost(2, rng.uniform(5, 20), rng.randint(500, 3_000), rng.uniform(1, 5)),
             PathCost(4, rng.uniform(15, 50))]
    fps, frames, rtt = rng.choice([30.0, 45.0, 60.0]), 6, rng.uniform(0, 30)
    best = min(float(np.mean(_simulate(c, trace, fps, rtt))) for c in itertools.product(paths, repeat=frames))
    res = clairvoyant(paths, Capacity(trace, 30), fps, frames, rtt)
    assert res.exact and res.mean_ms == pytest.approx(best, rel=1e-6)
    # the reported schedule is feasible and gives the reported latencies
    chosen = tuple(next(p for p in paths if p.split == k) for k in res.splits)
    assert _simulate(chosen, trace, fps, rtt) == pytest.approx(res.latencies_ms, rel=1e-6)


def test_a_merged_front_is_a_lower_bound_and_says_so() -> None:
    trace = step([(0.0, 2.0), (0.2, 0.3), (0.5, 6.0)])
    paths = [PathCost(0, 0.1, 12_000, 2.0), PathCost(2, 12.0, 3_000, 2.0), PathCost(3, 20.0, 1_500, 1.0),
             PathCost(4, 45.0)]
    exact = clairvoyant(paths, Capacity(trace, 30), 30.0, 12, 10.0)
    low = clairvoyant(paths, Capacity(trace, 30), 30.0, 12, 10.0, max_states=1)
    assert exact.exact and not low.exact
    assert low.mean_ms <= exact.mean_ms + 1e-9
    assert low.p95_ms is None and low.splits == [] and low.record().kind == "lower bound"


def test_capacity_inverts_the_trace_including_repeats_and_zero_bins() -> None:
    trace = BandwidthTrace([0.0, 0.1, 0.2, 0.3], [4e6, 0.0, 1e6, 12e6], duration_s=0.5, name="bins")
    cap = Capacity(trace, 5.0)
    for start in (0.0, 0.05, 0.12, 0.29, 0.49, 1.7, 3.333):
        for nbytes in (1, 1500, 60_000, 400_000):
            f = cap.finish(start, nbytes)
            assert trace.bits_between(start, f) == pytest.approx(nbytes * 8, rel=1e-9)
            assert f == pytest.approx(_finish(trace, start, nbytes), abs=1e-9)
    assert cap.finish(0.11, 0) == 0.11


def test_paths_from_profiles_drop_dominated_splits() -> None:
    head = {0: 0.1, 1: 5.0, 2: 4.0, 3: 30.0}
    tail = {0: 10.0, 1: 8.0, 2: 8.0}
    wire = {0: 3000, 1: 2000, 2: 2000}
    paths = paths_from_profiles([0, 1, 2, 3], 3, head, tail, wire, queue_ms={0: 1.0})
    # split 1 is split 2 with a slower head: never the better choice
    assert [p.split for p in paths] == [0, 2, 3]
    assert paths[0] == PathCost(0, 0.1, 3000 + FRAME_OVERHEAD_BYTES, 11.0) and paths[-1].local


def test_trace_bound_reports_the_regret() -> None:
    paths = [PathCost(1, 5.0, 10_000, 5.0), PathCost(9, 50.0)]
    out = trace_bound(MBPS8, paths, fps=10, frames=5, rtt_ms=20.0, warmup=1, deadline_ms=100.0, adaptive_mean_ms=50.0)
    assert out.kind == "exact optimum" and out.mean_ms == 40.0 and out.frames == 4
    assert out.adaptive_over_clairvoyant == 1.25 and out.split_counts == {"1": 4}  # the counted frames


def test_the_bound_records_how_far_the_link_alone_moves_the_keeps_up_figure() -> None:
    """A link that falls from 8 to 2 Mbps half way: the schedule's last 50 frames take longer than
    its first 50 whatever it does, and the record says by how much (the agent's is judged beside it)."""
    paths = [PathCost(0, 0.1, 20_000, 5.0), PathCost(9, 90.0)]
    falling = step([(0.0, 8.0), (6.0, 2.0)])
    out = trace_bound(falling, paths, fps=10, frames=120, rtt_ms=20.0, warmup=10, deadline_ms=100.0)
    assert out.kind == "exact optimum" and out.last_over_first_median is not None
    assert out.last_over_first_median > 1.5  # 8 Mbps: 45 ms a frame; 2 Mbps: the edge's 90 ms
    assert trace_bound(MBPS8, paths, fps=10, frames=120, rtt_ms=20.0, warmup=10,
                       deadline_ms=100.0).last_over_first_median == 1.0
    assert trace_bound(MBPS8, paths, fps=10, frames=60, rtt_ms=20.0, warmup=0,
                       deadline_ms=100.0).last_over_first_median is None  # too few frames to tell


def test_the_overhead_the_fixed_runs_show_over_the_model_is_reported_beside_the_bound() -> None:
    paths = [PathCost(1, 5.0, 10_000, 5.0), PathCost(2, 1.0, 30_000, 5.0), PathCost(9, 50.0)]  # k=1: 40 ms, k=2: 56

    def bound(fixed: dict[int, float] | None) -> ClairvoyantBound:
        return trace_bound(MBPS8, paths, fps=10, frames=5, rtt_ms=20.0, warmup=1, deadline_ms=100.0, fixed_means_ms=fixed)

    # measured 6 ms over the model on k=1, 9 on k=2 (and all-edge, not an offload, 20): the smallest, 6
    out = bound({1: 46.0, 2: 65.0, 9: 70.0})
    assert out.mean_ms == 40.0 and out.offload_overhead_ms == 6.0 and out.mean_with_overhead_ms == 46.0
    # 12 ms over on the only cloud split run: k=1 would take 52 ms, so the padded bound runs local (50)
    out = bound({1: 52.0})
    assert out.offload_overhead_ms == 12.0 and out.mean_with_overhead_ms == 50.0
    # a run faster than the model: said as it is, and nothing is padded
    out = bound({1: 39.0, 2: 60.0})
    assert out.offload_overhead_ms == -1.0 and out.mean_with_overhead_ms is None
    assert bound(None).offload_overhead_ms is None and bound({9: 60.0}).offload_overhead_ms is None
    # a run over the 100 ms deadline has a backlog: its excess is not one frame's overhead
    assert bound({1: 46.0, 2: 130.0}).offload_overhead_ms == 6.0 and bound({2: 130.0}).offload_overhead_ms is None


def test_the_report_shows_the_bound_next_to_the_runs_and_the_regret() -> None:
    from splitpoint.bench.report import render_markdown
    from splitpoint.bench.results import BenchResult, from_dict

    paths = [PathCost(1, 5.0, 10_000, 5.0), PathCost(9, 50.0)]
    run = {"frames": 5, "mean_ms": 50.0, "median_ms": 50.0, "p95_ms": 60.0, "deadline_misses": 1, "counted_frames": 4,
           "fallbacks": 0, "duration_s": 0.5}
    entry = {"trace": "hand-made", "seconds": 0.5, "slice_mean_mbps": 8.0, "fps": 10.0, "rtt_ms": 20.0,
             "deadline_ms": 100.0, "runs": {"adaptive": {**run, "split_counts": {"1": 5}}, "k=1": run},
             "best_fixed": "k=1", "adaptive_over_best_fixed": 1.0,
             "clairvoyant": dataclasses.asdict(trace_bound(MBPS8, paths, 10, 5, 20.0, 1, 100.0, adaptive_mean_ms=50.0))}
    text = render_markdown(from_dict(BenchResult, {"traces": [entry]}))
    row = next(line for line in text.splitlines() if line.startswith("| clairvoyant, exact optimum"))
    assert "(k=1: 4)" in row and "| 40.00 |" in row and "| 0/4 |" in row
    assert "adaptive / clairvoyant (exact optimum), the regret: **1.250**" in text
