"""The trace stage's choices: which traces, which slices of a long trace, which RTTs; the summary table."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitpoint import cli
from splitpoint.bench.options import load_options
from splitpoint.bench.report import evaluate_targets, render_markdown
from splitpoint.bench.results import BenchResult
from splitpoint.bench.trace_results import PEER_RULES, ClairvoyantBound, TraceResult, TraceRunResult
from splitpoint.bench.traces_stage import rotated, slice_offsets
from splitpoint.traces import BandwidthTrace

pytestmark = pytest.mark.edge_side  # no TensorFlow needed


def test_by_default_every_up_file_is_replayed_at_two_rtts(tmp_path: Path) -> None:
    for name in ("b.up", "a.up", "notes.md", "c.down"):
        (tmp_path / name).write_text("1\n")
    opts = load_options(cli.build_parser().parse_args(["bench", "--traces-dir", str(tmp_path)]))
    assert opts.trace_names() == ["a.up", "b.up"] and opts.trace_rtt == [10.0, 50.0]
    opts = load_options(cli.build_parser().parse_args(["bench", "--traces-dir", str(tmp_path), "--traces", "b.up",
                                                       "--trace-rtt", "50"]))
    assert opts.trace_names() == ["b.up"] and opts.trace_rtt == [50.0]  # the documented single-RTT flag still works


def test_long_traces_are_cut_into_spread_slices() -> None:
    assert slice_offsets(140.0, 20.0, 300.0, 3) == [0.0]
    assert slice_offsets(1012.5, 20.0, 300.0, 3) == [0.0, 496.25, 992.5]  # start, middle, the last 20 s
    assert slice_offsets(1012.5, 20.0, 300.0, 1) == [0.0]


def test_a_rotated_trace_starts_at_the_offset_and_wraps_around() -> None:
    trace = BandwidthTrace([0.0, 1.0, 2.0], [1e6, 2e6, 3e6], duration_s=3.0, repeat=True, name="t")
    r = rotated(trace, 1.5)
    assert r.duration_s == 3.0 and r.repeat
    for t in (0.0, 0.4, 0.6, 1.4, 1.6, 2.9):
        assert r.rate_bps(t) == trace.rate_bps((1.5 + t) % 3.0), t
    assert r.bits_between(0.0, 3.0) == pytest.approx(trace.bits_between(0.0, 3.0))
    assert rotated(trace, 0.0) is trace
    r2 = rotated(trace, 1.0)  # exactly on a segment start
    assert [r2.rate_bps(t) for t in (0.5, 1.5, 2.5)] == [2e6, 3e6, 1e6]


def entry(offset: float, rtt: float, peers: bool) -> TraceResult:
    run = TraceRunResult(mean_ms=40.0, p95_ms=60.0, deadline_misses=1, counted_frames=10)
    runs = {"adaptive": TraceRunResult(mean_ms=30.0, p95_ms=50.0, deadline_misses=0, counted_frames=10,
                                       splits=[0, 3], split_counts={"0": 1, "3": 1}),
            "k=3": TraceRunResult(split=3, mean_ms=40.0, p95_ms=60.0, deadline_misses=1, counted_frames=10)}
    if peers:
        runs.update({p: run for p in PEER_RULES})
    return TraceResult(trace="long.up", offset_s=offset, seconds=20.0, fps=10.0, rtt_ms=rtt, deadline_ms=100.0,
                       runs=runs, best_fixed="k=3", best_fixed_mean_ms=40.0, adaptive_over_best_fixed=0.75,
                       clairvoyant=ClairvoyantBound(mean_ms=25.0, p95_ms=40.0, deadline_misses=0, frames=10,
                                                    kind="exact optimum", adaptive_over_clairvoyant=1.2))


def test_the_summary_has_a_row_per_run_with_the_bound_and_the_peer_columns() -> None:
    r = BenchResult(traces=[entry(0.0, 10.0, peers=False), entry(496.25, 50.0, peers=True)])
    text = render_markdown(r)
    header = next(line for line in text.splitlines() if line.startswith("| trace | slice |"))
    assert all(p in header for p in PEER_RULES) and "clairvoyant" in header
    rows = [line for line in text.splitlines() if line.startswith("| long.up |")]
    assert len(rows) == 2
    assert "| 0-20 s | 10 ms | 30.0 / 50.0, 0/10 | k=3: 40.0 / 60.0, 1/10 | - | - | 25.0 / 40.0, 0/10 | 0.750 | 1.200 |" \
        in rows[0]
    assert "| 496.25-516.25 s | 50 ms |" in rows[1] and rows[1].count("40.0 / 60.0, 1/10") == 3
    # a peer's run is never the "best fixed" split, and each run has its own target
    names = [t.name for t in evaluate_targets(r)]
    assert names == ["trace long.up (0-20 s, RTT 10 ms)", "trace long.up (496.25-516.25 s, RTT 50 ms)"]


def test_a_runs_last_fifty_counted_frames_are_read_against_its_first_fifty() -> None:
    from splitpoint.bench.traces_stage import trace_stats
    from splitpoint.bench.worker_client import RunOutcome

    def record(i: int, ms: float, status: str = "ok") -> dict[str, object]:
        return {"frame_id": i, "status": status, "split": 0, "capture_time_unix_ns": 10**18 + i * 10**8,
                "timings_ms": {"end_to_end": ms}}

    # 3 warm-up frames at 900 ms (not counted), 50 at 60 ms, a failed frame, then a backlog: 50 at 120 ms
    recs = [record(i, 900.0) for i in range(3)] + [record(i, 60.0) for i in range(3, 53)]
    recs += [record(53, 0.0, "failed")] + [record(i, 120.0) for i in range(54, 104)]
    out = RunOutcome(recs, 0, 12.0, None, None, Path("r.jsonl"))
    s = trace_stats(out, None, 3, 100.0, 10**18)
    assert s.last_over_first_median == 2.0 and s.counted_frames == 101
    assert trace_stats(RunOutcome(recs[:90], 0, 9.0, None, None, Path("r.jsonl")), None, 3, 100.0,
                       10**18).last_over_first_median is None  # 86 frames: the two ends would overlap


def test_a_slice_that_goes_dark_for_minutes_is_said_up_front() -> None:
    """Its mean rate (2.4 Mbps over 1 s) hides a 10-minute outage; the fixed runs' frames then wait
    their 20 s deadline each, and without a word the bench looked hung."""
    from types import SimpleNamespace

    from splitpoint.bench import traces_stage

    said: list[str] = []
    b = SimpleNamespace(opts=SimpleNamespace(max_frame_s=8.0), frame_deadline_ms=20000, say=said.append)
    dark = BandwidthTrace([0.0, 0.2], [2.4e6 / 0.2, 0.0], duration_s=600.0, repeat=True, name="gap")
    entry = TraceResult(trace="gap.up", seconds=1.0)
    traces_stage._say_outage(b, entry, dark)  # type: ignore[arg-type]
    assert entry.longest_outage_s == pytest.approx(599.8)
    assert len(said) == 1 and "dark for 599.8 s from 0.2 s" in said[0] and "(20 s)" in said[0]
    short = BandwidthTrace([0.0, 0.2, 8.0], [1e6, 0.0, 1e6], duration_s=20.0, repeat=True, name="short")
    entry = TraceResult(trace="short.up", seconds=20.0)
    traces_stage._say_outage(b, entry, short)  # type: ignore[arg-type]  # 7.8 s: within --max-frame-s
    assert entry.longest_outage_s is None and len(said) == 1
