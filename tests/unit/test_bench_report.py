"""Target verdicts of `splitpoint.bench.report`: what a PASS may and may not claim."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

from splitpoint.bench.report import evaluate_targets
from splitpoint.bench.results import BenchResult, Target, from_dict

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13


def step_result(best_hi: int, best_lo: int, ended: tuple[int, int], settle: tuple[int, int],
                switches: tuple[int, int]) -> dict[str, Any]:
    changes = []
    for to, best, final, frames, sw in ((2.0, best_lo, ended[0], settle[0], switches[0]),
                                        (50.0, best_hi, ended[1], settle[1], switches[1])):
        changes.append({"to_mbps": to, "t_s": 1.0, "best_split": best, "final_split": final,
                        "settled_on_best": final == best, "frames_to_settle": frames,
                        "seconds_to_settle": 0.1 * frames, "switches": sw})
    # measured medians: the best split 10 ms, any other split 20 ms (2x: a real move)
    med = {str(k): 20.0 for k in range(9)}
    oracles = {"50.0": {"split": best_hi, "median_ms": {**med, str(best_hi): 10.0}},
               "2.0": {"split": best_lo, "median_ms": {**med, str(best_lo): 10.0}}}
    return {"step": {"rates_mbps": [50.0, 2.0, 50.0], "oracles": oracles, "changes": changes}}


def verdict(r: dict[str, Any], name: str) -> Target:
    """The verdict on the result as the report reads it back from the JSON (typed)."""
    return next(t for t in evaluate_targets(from_dict(BenchResult, r)) if t.name == name or t.name.startswith(name + " ("))


def test_a_step_that_asks_for_no_move_is_not_a_pass() -> None:
    t = verdict(step_result(8, 8, ended=(8, 8), settle=(0, 0), switches=(0, 0)), "settle after a step change")
    assert t.status == "N/A"
    assert "not tested" in t.measured and "k=8" in t.measured


def test_flapping_fails_even_when_no_move_was_needed() -> None:
    r = step_result(8, 8, ended=(8, 8), settle=(0, 0), switches=(2, 0))
    assert verdict(r, "switches per step").status == "MISS"


def test_a_real_step_is_judged_on_frames_and_the_split_it_ends_on() -> None:
    ok = step_result(0, 8, ended=(8, 0), settle=(3, 2), switches=(1, 1))
    assert verdict(ok, "settle after a step change").status == "PASS"
    late = step_result(0, 8, ended=(8, 0), settle=(7, 2), switches=(1, 1))
    t = verdict(late, "settle after a step change")
    assert t.status == "MISS" and "2 frames late" in t.shortfall
    wrong = step_result(0, 8, ended=(5, 0), settle=(1, 2), switches=(1, 1))
    t = verdict(wrong, "settle after a step change")
    assert t.status == "MISS" and "did not settle on the best split k=8" in t.shortfall


def test_a_near_tie_counts_as_the_best_split() -> None:
    r = step_result(0, 8, ended=(5, 0), settle=(1, 2), switches=(1, 1))
    r["step"]["oracles"]["2.0"]["median_ms"]["5"] = 10.3  # within 1.05 of the best k=8
    assert verdict(r, "settle after a step change").status == "PASS"
    r["step"]["oracles"]["2.0"]["median_ms"]["0"] = 10.4  # and the old best too: no move was asked for
    r["step"]["changes"][0]["final_split"] = 0
    t = verdict(r, "settle after a step change")
    assert t.status == "PASS" and "no move needed" in t.measured


def trace_result(adaptive_splits: list[int], mean: float, p95: float = 20.0, misses: int = 2,
                 bound: float | None = None) -> dict[str, Any]:
    runs = {"adaptive": {"split": None, "mean_ms": mean, "p95_ms": p95, "deadline_misses": misses,
                         "splits": adaptive_splits},
            "k=0": {"split": 0, "mean_ms": 50.0, "p95_ms": 90.0, "deadline_misses": 9},
            "k=8": {"split": 8, "mean_ms": 10.0, "p95_ms": 20.0, "deadline_misses": 2}}
    tr: dict[str, Any] = {"trace": "t.up", "runs": runs, "best_fixed": "k=8", "best_fixed_mean_ms": 10.0,
                          "adaptive_over_best_fixed": mean / 10.0}
    if bound is not None:
        tr["clairvoyant"] = {"mean_ms": bound}
    return {"traces": [tr]}


def test_a_trace_target_asks_mean_p95_and_misses_no_worse_than_the_best_fixed_split() -> None:
    mixed = [0] * 5 + [8] * 15
    assert verdict(trace_result(mixed, 10.1), "trace t.up").status == "PASS"      # within the 2% spread
    t = verdict(trace_result(mixed, 10.3), "trace t.up")
    assert t.status == "MISS" and "mean 1.0 pts over 1.02x" in t.shortfall
    t = verdict(trace_result(mixed, 9.0, p95=21.0), "trace t.up")
    assert t.status == "MISS" and "p95" in t.shortfall and "mean" not in t.shortfall
    # a sliver over says how much, not "0.0 pts"
    t = verdict(trace_result(mixed, 9.0, p95=20.408), "trace t.up")
    assert t.status == "MISS" and t.shortfall == "p95 0.04 pts over 1.02x"
    t = verdict(trace_result(mixed, 9.0, p95=20.4008), "trace t.up")
    assert t.status == "MISS" and t.shortfall == "p95 under 0.01 pts over 1.02x"
    t = verdict(trace_result(mixed, 9.0, misses=3), "trace t.up")
    assert t.status == "MISS" and "1 more deadline misses" in t.shortfall
    # the same split on every frame: the figures are compared all the same, and the text says so
    t = verdict(trace_result([8] * 20, 10.1), "trace t.up")
    assert t.status == "PASS" and "the agent ran k=8 on every frame" in t.measured


def test_where_the_clairvoyant_bound_leaves_room_the_trace_target_asks_a_tenth_off() -> None:
    mixed = [0] * 5 + [8] * 15
    # the bound at 0.86x of the best fixed split: no room asked for, the 2% spread applies
    assert verdict(trace_result(mixed, 10.1, bound=8.6), "trace t.up").status == "PASS"
    # at 0.85x: the agent must reach 0.9x
    t = verdict(trace_result(mixed, 9.5, bound=8.5), "trace t.up")
    assert t.status == "MISS" and "over 0.9x (the bound is 0.85x)" in t.shortfall
    assert verdict(trace_result(mixed, 9.0, bound=8.5), "trace t.up").status == "PASS"
    # the bound with the per-offload overhead the fixed runs show is reported; the verdict reads the bound
    r = trace_result(mixed, 9.5, bound=8.5)
    r["traces"][0]["clairvoyant"].update(offload_overhead_ms=0.5, mean_with_overhead_ms=8.9)
    t = verdict(r, "trace t.up")
    assert t.status == "MISS" and "bound 0.85x (0.89x with the 0.5 ms per offload the fixed runs show" in t.measured
    # so are the fixed runs switched by window (bench/hindsight.py), from their frames: k=8 has
    # the lowest mean, k=0 the quicker second half second
    r["traces"][0]["fps"] = 10.0
    r["traces"][0]["runs"]["k=0"]["counted_ms"] = [50.0] * 5 + [6.0] * 5
    r["traces"][0]["runs"]["k=8"]["counted_ms"] = [10.0] * 10
    t = verdict(r, "trace t.up")
    assert t.status == "MISS" and ("the fixed runs switched every frame / 0.5 s / 1 s to the quickest over the "
                                   "window (hindsight): 0.80x / 0.80x / 1.00x; to the quickest over the window "
                                   "before: 0.84x / 1.00x / 1.00x") in t.measured  # k=0 from the 7th frame on
    # JSON written before the runs kept their frames: nothing said
    assert "switched" not in verdict(trace_result(mixed, 9.5, bound=8.5), "trace t.up").measured


def test_the_last_fifty_frames_median_is_read_against_the_first_fifty() -> None:
    from splitpoint.bench.stats import last_over_first_median

    steady = [50.0, 60.0] * 60
    assert last_over_first_median(steady) == 1.0
    falling_behind = [50.0] * 60 + [50.0 + 10 * i for i in range(60)]  # a backlog that grows
    assert last_over_first_median(falling_behind) == round(statistics.median(falling_behind[-50:]) / 50.0, 4)
    assert last_over_first_median([50.0] * 99) is None  # the two ends would overlap


def keep_up(edge_alone_ms: float | None, drift: float | None, mean: float) -> dict[str, Any]:
    r = trace_result([0, 155] * 50, mean)
    tr = r["traces"][0]
    tr.update(fps=10.0, edge_alone_ms=edge_alone_ms, offset_s=0.0, seconds=20.0, rtt_ms=50.0)
    tr["runs"]["adaptive"]["last_over_first_median"] = drift
    tr["runs"]["k=155"] = {"split": 155, "mean_ms": 900.0, "p95_ms": 1500.0, "deadline_misses": 190}
    return r


def test_an_edge_too_slow_for_the_camera_must_keep_up_by_mixing_paths() -> None:
    name = "keeps up on t.up"
    t = verdict(keep_up(125.0, 1.41, 9.0), name)
    assert t.status == "PASS" and "last/first 50 median 1.41x" in t.measured and "k=8 10.0 ms" in t.measured
    t = verdict(keep_up(125.0, 1.6, 9.0), name)
    assert t.status == "MISS" and t.shortfall == "median drift 10 pts over 1.5x"
    t = verdict(keep_up(125.0, 1.2, 10.0), name)  # no better than the best fixed split
    assert t.status == "MISS" and "mean 0.0 ms above k=8's" in t.shortfall
    assert verdict(keep_up(125.0, None, 9.0), name).status == "N/A"  # a run too short to tell
    # beside it, how far the link alone moved the clairvoyant schedule's figure; the verdict is the agent's
    r = keep_up(125.0, 1.6, 9.0)
    r["traces"][0]["clairvoyant"] = {"mean_ms": 8.0, "last_over_first_median": 1.38}
    t = verdict(r, name)
    assert t.status == "MISS" and "(the clairvoyant schedule's own: 1.38x, what the link alone moves it)" in t.measured
    # an edge that keeps up alone (77 ms at 10 fps), or one whose speed is not recorded: no such target
    for edge in (77.0, None):
        targets = evaluate_targets(from_dict(BenchResult, keep_up(edge, 1.6, 9.0)))
        assert not [x for x in targets if x.name.startswith(name)]


def test_trace_plots_are_one_figure_per_rtt_named_by_it(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    from splitpoint.bench.report import render_plots

    def tr(offset: float, rtt: float) -> dict[str, Any]:
        adaptive = {"split": None, "mean_ms": 50.0, "t_s": [0.0, 0.1, 0.2], "splits": [0, 8, 8],
                    "end_to_end_ms": [40.0, 120.0, 50.0]}
        return {"trace": "t.up", "offset_s": offset, "seconds": 0.3, "fps": 10.0, "rtt_ms": rtt,
                "deadline_ms": 100.0, "slice_rates_mbps": [3.0], "runs": {"adaptive": adaptive},
                "best_fixed": "k=8", "best_fixed_mean_ms": 60.0}

    r = from_dict(BenchResult, {"bundle": {"model": "m", "num_layers": 8},
                                "traces": [tr(0, 10), tr(100, 10), tr(0, 50)]})
    written = render_plots(r, tmp_path)
    assert sorted(p.split("/")[-1] for p in written) == ["bench-m-traces-rtt10.png", "bench-m-traces-rtt50.png"]
    assert all((tmp_path / p.split("/")[-1]).stat().st_size > 0 for p in written)


def test_a_plot_that_cannot_be_written_is_named_and_the_report_goes_on(tmp_path: Any,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # after a run of hours, --plots naming a directory that cannot hold them must not cost the markdown
    pytest.importorskip("matplotlib")
    from splitpoint.bench.report import render_plots

    adaptive = {"split": None, "mean_ms": 50.0, "t_s": [0.0, 0.1], "splits": [0, 8], "end_to_end_ms": [40.0, 50.0]}
    trace = {"trace": "t.up", "offset_s": 0, "seconds": 0.2, "fps": 10.0, "rtt_ms": 10, "deadline_ms": 100.0,
             "slice_rates_mbps": [3.0], "runs": {"adaptive": adaptive}, "best_fixed": "k=8", "best_fixed_mean_ms": 60.0}
    r = from_dict(BenchResult, {"bundle": {"model": "m", "num_layers": 8}, "traces": [trace]})
    (tmp_path / "bench-m-traces-rtt10.png").mkdir()  # where the plot's file would go
    assert render_plots(r, tmp_path) == []
    err = capsys.readouterr().err
    said = f"plots = {tmp_path / 'bench-m-traces-rtt10.png'}: could not be written (Is a directory); 0 written before it"
    assert said in err and r.errors == [said]  # among the errors: the run's exit is not 0


def test_a_plot_on_a_full_disk_leaves_no_empty_png(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """savefig straight to the file left a 0-byte PNG and exited 0; now written beside it and
    renamed, a full disk (fsync failing, as ENOSPC does on tmpfs) leaves nothing and is an error."""
    pytest.importorskip("matplotlib")
    import errno
    import os

    from splitpoint.bench.report import render_plots

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    r = from_dict(BenchResult, {"bundle": {"model": "m", "num_layers": 8}, "conditions": [
        {"bw_mbps": 10.0, "rtt_ms": 10.0, "fixed": {"0": {"split": 0, "mean_ms": 5.0, "median_ms": 5.0}}}]})
    assert render_plots(r, tmp_path) == []
    assert list(tmp_path.iterdir()) == []
    assert "could not be written (No space left on device)" in capsys.readouterr().err and len(r.errors) == 1


def test_rerendering_with_plots_into_a_file_is_one_line(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from splitpoint.bench.report import main

    result = tmp_path / "r.json"
    result.write_text(json.dumps({"format": "splitpoint-bench", "bundle": {"model": "m", "num_layers": 8}}))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit) as exc:
        main([str(result), "--plots", str(tmp_path / "afile")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f'--plots = "{tmp_path / "afile"}": is a file, not a directory' in err and "Traceback" not in err


def test_rerendering_exits_1_when_a_plot_cannot_be_written(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    from splitpoint.bench.report import main

    cond = {"bandwidth_mbps": 10.0, "rtt_ms": 10.0, "fixed": {"0": {"split": 0, "median_ms": 5.0}}}
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"format": "splitpoint-bench", "bundle": {"model": "m", "num_layers": 8},
                                  "conditions": [cond]}))
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "bench-m-latency-vs-split.png").mkdir()  # where the plot would go
    assert main([str(result), "--plots", str(tmp_path / "img")]) == 1  # was 0, the plot missing
    assert "bench-m-latency-vs-split.png: could not be written" in capsys.readouterr().err
