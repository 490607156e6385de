"""A fixed split whose frames fell back to the edge measured the edge, not the split: at an RTT
no frame could cross, k=0's fallback frames were reported as "all-cloud 0.16 ms", picked as the
oracle and every target passed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from splitpoint.bench import conditions
from splitpoint.bench.report import evaluate_targets
from splitpoint.bench.report_tables import render_markdown
from splitpoint.bench.results import AdaptiveRun, BenchResult
from splitpoint.bench.worker_client import RunOutcome

pytestmark = pytest.mark.edge_side  # no TensorFlow needed

K = 8


def records(k: int, ms: float, fallback: bool, n: int = 4) -> list[dict[str, Any]]:
    extra = {"fallback_reason": "no connection"} if fallback else {}
    return [{"frame_id": i, "status": "ok", "split": k, "where": "local" if fallback else "remote",
             "timings_ms": {"end_to_end": ms}, **extra} for i in range(n)]


def fake_bench(measured: dict[int, tuple[float, bool]]) -> Any:
    """Splits 0, 4 and K at one condition; split k's frames last ms, falling back or not."""
    def run_agent(name: str, n: int, extra: list[str], per_frame_ms: float) -> RunOutcome:
        k = int(extra[extra.index("--split") + 1])
        ms, fallback = measured[k]
        return RunOutcome(records(k, ms, fallback), 0, 1.0, None, None, Path("r.jsonl"))

    opts = SimpleNamespace(warmup=0, frames=4, max_frame_s=8.0)
    return SimpleNamespace(opts=opts, fixed_cache={}, splits=[0, 4, K], K=K, energy=None, set_link=lambda *a: None,
                           wire_ms=lambda k, bw: 1.0, predict_ms=lambda k, bw, rtt: 10.0, run_agent=run_agent)


def test_a_split_whose_frames_fell_back_is_neither_the_oracle_nor_all_cloud() -> None:
    # k=0 fell back: 0.16 ms of edge work, faster than any real split
    b = fake_bench({0: (0.16, True), 4: (30.0, False), K: (50.0, False)})
    sweep = conditions.fixed_sweep(b, 10.0, 100.0)
    assert sweep.oracle_split == 4 and sweep.oracle_caveat is not None and "[0] fell back" in sweep.oracle_caveat
    cond = conditions.condition_result(b, sweep, AdaptiveRun(frames=4, splits=[0] * 4, settled_split=0, fallbacks=4))
    assert cond.all_cloud_median_ms is None and cond.speedup_vs_all_cloud is None
    assert cond.chosen_median_ms is None and cond.chosen_over_oracle is None  # no ratio judged on fallbacks
    assert cond.chosen_note is not None and "fell back" in cond.chosen_note
    r = BenchResult(conditions=[cond])
    md = render_markdown(r)
    assert "0.16 (4/4 fell back)" in md and "4 (4/4 fell back)" not in md  # k=0's cell, then the agent's
    assert "| 0 (4/4 fell back) |" in md  # the agent's switches: none, every frame fell back
    assert "10 Mbps / 100 ms: splits [0] fell back to the edge" in md
    verdict = next(t for t in evaluate_targets(r) if t.name == "chosen/oracle latency")
    assert verdict.status == "N/A" and "fell back to the edge" in verdict.measured  # was PASS


def test_a_few_fallbacks_leave_the_split_a_candidate_and_are_shown() -> None:
    b = fake_bench({0: (20.0, False), 4: (30.0, False), K: (50.0, False)})
    sweep = conditions.fixed_sweep(b, 10.0, 100.0)
    sweep.fixed[0].fallbacks = 1  # one frame of four: the median is still k=0's own
    cond = conditions.condition_result(b, sweep, AdaptiveRun(frames=4, splits=[0] * 4, settled_split=0))
    assert sweep.oracle_split == 0 and cond.all_cloud_median_ms == 20.0 and cond.chosen_over_oracle == 1.0
    assert "20.00 (1/4 fell back)" in render_markdown(BenchResult(conditions=[cond]))
