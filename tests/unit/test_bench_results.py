"""The bench's typed results: written to JSON and read back unchanged, older files still readable."""

from __future__ import annotations

import json

import pytest

from splitpoint.bench.report import evaluate_targets, render_markdown
from splitpoint.bench.results import (
    AdaptiveRun,
    BenchResult,
    BundleInfo,
    ConditionResult,
    FixedRun,
    StepChange,
    StepOracle,
    StepResult,
    TraceResult,
    TraceRunResult,
)

pytestmark = pytest.mark.edge_side  # no TensorFlow needed


def sample() -> BenchResult:
    fixed = {"0": FixedRun(split=0, frames=5, median_ms=60.0, p95_ms=70.0, stages_median_ms={"head": 0.1}),
             "3": FixedRun(split=3, frames=5, median_ms=20.0, p95_ms=25.0),
             "5": FixedRun(split=5, skipped="too slow", lower_bound_ms=9000.0)}
    cond = ConditionResult(bandwidth_mbps=2.0, rtt_ms=50.0, fixed=fixed, oracle_split=3, chosen_split=3,
                           adaptive=AdaptiveRun(frames=4, splits=[0, 3, 3, 3], settled_split=3, switches=1),
                           oracle_median_ms=20.0, chosen_median_ms=20.0, chosen_over_oracle=1.0)
    step = StepResult(rates_mbps=[50.0, 2.0, 50.0], oracles={"50.0": StepOracle(0, {"0": 10.0}),
                                                              "2.0": StepOracle(3, {"3": 20.0})},
                      changes=[StepChange(to_mbps=2.0, t_s=1.0, best_split=3, final_split=3, settled_on_best=True,
                                          frames_to_settle=2, switches=1)])
    trace = TraceResult(trace="t.up", seconds=2.0, fps=10.0, rtt_ms=50.0, deadline_ms=100.0,
                        runs={"adaptive": TraceRunResult(mean_ms=30.0, splits=[3, 3], t_s=[0.0, 0.1],
                                                         end_to_end_ms=[29.0, 31.0], split_counts={"3": 2}),
                              "k=3": TraceRunResult(split=3, mean_ms=31.0, deadline_misses=0, counted_frames=2)},
                        best_fixed="k=3", best_fixed_mean_ms=31.0, adaptive_over_best_fixed=0.9677)
    return BenchResult(command=["splitpoint", "bench"], conditions=[cond], step=step, traces=[trace],
                       machine={"pinning": {"note": "x"}}, bundle=BundleInfo(model="m", num_layers=5))


def test_a_result_reads_back_equal_to_what_was_written() -> None:
    r = sample()
    back = BenchResult.from_json(r.to_json())
    assert back == r
    assert isinstance(back.conditions[0].fixed["3"], FixedRun)  # type: ignore[index]
    assert back.conditions[0].median(3) == 20.0  # type: ignore[index]
    assert back.traces[0].runs["adaptive"].split_counts == {"3": 2}  # type: ignore[index]


def test_a_file_without_newer_fields_still_loads_and_unknown_keys_are_ignored() -> None:
    old = {"format": "splitpoint-bench", "schema_version": 1, "future_stage": {"x": 1},
           "conditions": [{"bandwidth_mbps": 1.0, "rtt_ms": 10.0, "fixed": {"0": {"split": 0, "median_ms": 5.0}},
                           "oracle_split": 0, "chosen_split": 0, "chosen_over_oracle": 1.0, "extra": True}]}
    r = BenchResult.from_json(json.dumps(old))
    assert r.conditions is not None and r.conditions[0].fixed["0"].p95_ms is None and r.step is None
    assert [t.status for t in evaluate_targets(r)][:1] == ["PASS"]


def test_something_else_is_refused_with_its_format() -> None:
    with pytest.raises(ValueError, match="not a splitpoint-bench result"):
        BenchResult.from_json('{"format": "other"}')


def test_a_dropped_stage_leaves_the_report_and_its_targets() -> None:
    r = sample()
    r.targets = evaluate_targets(r)
    assert any(t.name.startswith("trace") for t in r.targets)
    r.drop("traces")
    r.targets = evaluate_targets(r)
    assert not any(t.name.startswith("trace") for t in r.targets)
    text = render_markdown(r)
    assert "### Conditions" in text and "### Trace" not in text and ">9000 (not run)" in text
    with pytest.raises(ValueError):
        r.drop("nonsense")
