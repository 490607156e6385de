"""The bench's typed results: written to JSON and read back unchanged, older files still readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitpoint.bench.peers import RULE_DEADLINE, RULE_STARTUP
from splitpoint.bench.report import evaluate_targets, render_markdown
from splitpoint.bench.results import (
    AdaptiveRun,
    BenchResult,
    BundleInfo,
    ConditionResult,
    EnergyResult,
    FixedRun,
    StepChange,
    StepOracle,
    StepResult,
)
from splitpoint.bench.trace_results import PeerPickResult, TraceResult, TraceRunResult

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


@pytest.mark.parametrize(("edit", "said"), [
    ({"traces": ["x"]}, "traces[0]: expected an object, got a string"),  # was "TraceResult: expected ..."
    ({"traces": {"a": 1}}, "traces: expected a list, got an object"),     # was read as its keys
    ({"conditions": [{"fixed": {"0": "fast"}}]}, "conditions[0].fixed.0: expected an object, got a string"),
    ({"bundle": {"splits": [{"split": "x"}]}}, "bundle.splits[0].split: expected an integer, got a string"),
    ({"bundle": {"splits": [{"cut_shape": 5}]}}, "bundle.splits[0].cut_shape: expected a list, got a number"),  # TypeError
    ({"step": {"rtt_ms": True}}, "step.rtt_ms: expected a number, got true or false"),
])
def test_a_hand_edited_result_is_refused_naming_the_field(edit: dict, said: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from splitpoint.bench import report

    data = json.loads(sample().to_json())
    data.update(edit)
    with pytest.raises(ValueError) as exc:
        BenchResult.from_json(json.dumps(data))
    assert str(exc.value) == said
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit) as stop:  # the re-render: one line naming the file and the field
        report.main([str(tmp_path / "r.json")])
    assert stop.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith(f"r.json: {said}")


def test_deeply_nested_json_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        BenchResult.from_json("[" * 100_000 + "]" * 100_000)


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


def with_peers() -> BenchResult:
    """sample() with the peers' rules in its trace replay and condition, a device and the reference table."""
    r = sample()
    tr = r.traces[0]  # type: ignore[index]
    tr.runs["k=0"] = TraceRunResult(split=0, mean_ms=80.0, p95_ms=95.0, deadline_misses=3, counted_frames=20)
    tr.runs[RULE_STARTUP] = TraceRunResult(split=0, mean_ms=80.0, p95_ms=95.0, deadline_misses=3, counted_frames=20,
                                           reused_from="k=0")
    tr.runs[RULE_DEADLINE] = TraceRunResult(split=3, mean_ms=31.0, deadline_misses=0, counted_frames=2,
                                            reused_from="k=3")
    tr.peers = [PeerPickResult(rule=RULE_STARTUP, split=0, run="k=0"),
                PeerPickResult(rule=RULE_DEADLINE, split=3, run="k=3", feasible=False)]
    cond = r.conditions[0]  # type: ignore[index]
    cond.oracle_median_ms = 20.0
    cond.peers = [PeerPickResult(rule=RULE_STARTUP, split=0, run="k=0", median_ms=60.0, p95_ms=70.0),
                  PeerPickResult(rule=RULE_DEADLINE, error="deadline_ms: no table")]
    cond.energy = EnergyResult(oracle_split=3, oracle_mj=10.0, chosen_split=3, chosen_mj=10.0)
    r.machine["emulation"] = {"mode": "device", "path": "/x/mobilenetv2-96-slow125.toml", "description": "slow board",
                              "how": "scaled", "head_ms": {"1": 2.0, "155": 125.0},
                              "too_slow_runs": [{"run": "fixed-k155-2M-50ms", "too_slow": {
                                  "155": {"runs": 10, "slower_than_target": 2, "worst_native_ms": 130.0,
                                          "target_ms": 125.0}}}]}
    r.power = {"table": "/pkg/data/power/pi4-coral-lte.toml", "reference": True, "device": "Pi 4 + Coral",
               "source": "published figures", "radio_link": "lte", "metered": False}
    return r


def test_peer_rows_devices_and_modelled_energy_read_back_and_show_in_the_report() -> None:
    r = with_peers()
    back = BenchResult.from_json(r.to_json())
    assert back == r and isinstance(back.traces[0].peers[0], PeerPickResult)  # type: ignore[index]
    text = render_markdown(back)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # the trace table: one row per rule, named by the rule and its split, saying whose run it is
    startup = rows[f"{RULE_STARTUP} (k=0; the k=0 run above)"]
    assert "80.00" in startup and "3/20" in startup
    assert f"{RULE_DEADLINE} (k=3; the k=3 run above) (no split met the deadline at nominal: fastest taken)" in rows
    # the summary: adaptive, best fixed, both rules with their split, clairvoyant
    summary = next(line for line in text.splitlines() if line.startswith("| t.up | 0-2 s"))
    assert "k=0: 80.0 / 95.0, 3/20" in summary and "k=3: 31.0 / -, 0/2" in summary
    # the conditions' peers table: the fixed run's median and its ratio to the oracle; a rule without a pick says why
    cond_row = next(line for line in text.splitlines() if line.startswith("| 2 Mbps / 50 ms | k=3"))
    assert "k=0: 60.00 / 70.00, x3.000" in cond_row and "no pick: deadline_ms: no table" in cond_row
    # the header: the device file, the run it could not be emulated on, the energy's source
    assert "emulated edge device from `mobilenetv2-96-slow125.toml`** (slow board; all-edge 125.0 ms" in text
    assert "run `fixed-k155-2M-50ms` is not of the emulated device" in text and "k=155 (2/10 over 125.0 ms)" in text
    modelled = "energy modelled from Pi 4 + Coral (`pi4-coral-lte.toml`, the shipped reference table), not metered"
    assert text.count(modelled) == 2  # the header and the energy table


def test_a_native_run_says_nothing_of_devices() -> None:
    text = render_markdown(sample())
    assert "emulated edge device" not in text and "energy modelled" not in text and "Peers' rules at each" not in text


def test_a_device_runs_plots_are_named_after_the_device_not_over_the_native_ones() -> None:
    from splitpoint.bench.report_plots import _plot_tag

    assert _plot_tag(sample()) == "m"
    assert _plot_tag(with_peers()) == "m-mobilenetv2-96-slow125"
    r = sample()
    r.machine["pinning"]["edge_slowdown"] = 75.0
    assert _plot_tag(r) == "m-x75"
