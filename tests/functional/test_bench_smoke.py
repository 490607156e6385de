"""`splitpoint bench --smoke`: the whole benchmark on the digits bundle, small (CI; under 2 minutes).

Checks that every stage ran and wrote sane figures, and that the derived figures (switch
counts, settled splits, chosen/oracle ratios) agree with the per-frame data they summarise; no
timing target is asserted (the targets are reported PASS/MISS in the output, not tested).
Needs ../shared/data/traces: missing, the test skips, and fails in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def switches(splits: list[int], before: int | None = None) -> int:
    """Split changes along a run, counted here independently of the harness."""
    seq = ([] if before is None else [before]) + splits
    return sum(1 for a, b in zip(seq, seq[1:], strict=False) if a != b)


def mode_of_last_half(splits: list[int]) -> int:
    half = splits[len(splits) // 2:]
    counts = Counter(half)
    return next(k for k in reversed(half) if counts[k] == max(counts.values()))


@pytest.mark.slow
def test_bench_smoke_writes_every_figure(tmp_path: Path, shared_file: Callable[[str], Path]) -> None:
    traces = shared_file("data/traces/Verizon-LTE-short.up").parent
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "splitpoint", "bench", "--smoke", "--json", str(out), "--markdown", str(md),
         "--cache-dir", str(tmp_path / "cache"), "--traces-dir", str(traces), "--keep-runs", str(tmp_path / "runs"),
         "--plan-log"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[bench" in proc.stdout  # progress lines
    r = json.loads(out.read_text())
    assert r["format"] == "splitpoint-bench" and r["complete"] is True and r["errors"] == []
    assert r["smoke"] is True and r["wall_time_s"] > 0
    print(f"smoke wall time {wall:.1f}s (bench says {r['wall_time_s']} s)")

    m = r["machine"]
    assert m["cores"] >= 1 and m["python"] and "pinning" in m
    assert r["bundle"]["model"] == "digits-cnn"
    K = r["bundle"]["num_layers"]
    splits = r["bundle"]["measured_splits"]
    assert splits[0] == 0 and splits[-1] == K

    conds = r["conditions"]
    assert len(conds) == 2
    for c in conds:
        assert c["bandwidth_mbps"] > 0 and c["rtt_ms"] > 0
        assert set(map(int, c["fixed"])) == set(splits)
        for f in c["fixed"].values():
            assert f["frames"] >= 1 and 0 < f["median_ms"] <= f["p95_ms"] < 60_000
        assert c["oracle_split"] in splits and c["chosen_split"] in splits
        best = min(f["median_ms"] for f in c["fixed"].values())
        assert c["oracle_median_ms"] == best
        chosen = c["fixed"][str(c["chosen_split"])]["median_ms"]
        assert c["chosen_median_ms"] == chosen
        assert c["chosen_over_oracle"] == pytest.approx(chosen / best, abs=1e-4)
        assert c["speedup_vs_all_edge"] == pytest.approx(c["fixed"][str(K)]["median_ms"] / chosen, abs=1e-3)
        assert c["speedup_vs_all_cloud"] == pytest.approx(c["fixed"]["0"]["median_ms"] / chosen, abs=1e-3)
        a = c["adaptive"]
        assert len(a["splits"]) == a["frames"] >= 2 and set(a["splits"]) <= set(splits)
        assert a["switches"] == switches(a["splits"])
        assert a["settled_split"] == mode_of_last_half(a["splits"]) == c["chosen_split"]
        # k = 0 crosses the emulated link: it cannot beat the set RTT
        assert c["fixed"]["0"]["median_ms"] >= c["rtt_ms"] * 0.9

    step = r["step"]
    assert [c["to_mbps"] for c in step["changes"]] == [2.0, 50.0]
    frames = sorted(step["frames"], key=lambda f: f["frame_id"])
    ends = [c["t_s"] for c in step["changes"][1:]] + [float("inf")]
    for c, end in zip(step["changes"], ends, strict=True):
        before = [f["split"] for f in frames if f["t_s"] < c["t_s"]]
        during = [f["split"] for f in frames if c["t_s"] <= f["t_s"] < end]
        assert c["frames_after"] == len(during) >= 1
        assert c["final_split"] == during[-1] and c["settled_on_best"] == (during[-1] == c["best_split"])
        assert c["switches"] == switches(during, before[-1] if before else None)
        # frames_to_settle: the index where the final run of equal splits begins
        j = c["frames_to_settle"]
        assert set(during[j:]) == {during[-1]} and (j == 0 or during[j - 1] != during[-1])

    (trace,) = r["traces"]
    assert trace["trace"] == "Verizon-LTE-short.up" and trace["seconds"] <= 5
    assert "adaptive" in trace["runs"] and trace["best_fixed"].startswith("k=")
    for run in trace["runs"].values():
        assert 0 <= run["deadline_misses"] <= run["counted_frames"] and run["mean_ms"] > 0
        assert run["trace_synced_to_source_open"] is True  # the agent's explicit source-open signal arrived
    adaptive = trace["runs"]["adaptive"]
    assert adaptive["switches"] == switches(adaptive["splits"])
    assert trace["adaptive_over_best_fixed"] > 0
    # the peers' rules: a row each, on the replay's own fixed run of their split (not run twice)
    rules = ["fixed from start-up bandwidth", "deadline at nominal bandwidth"]
    assert [p["rule"] for p in trace["peers"]] == rules
    for p in trace["peers"]:
        assert p["split"] in splits and p["run"] == f"k={p['split']}" and p["reason"]
        row = trace["runs"][p["rule"]]
        assert row["reused_from"] == p["run"] and row["mean_ms"] == trace["runs"][p["run"]]["mean_ms"]
    for c in conds:  # at a condition: picked among the fixed runs, their medians
        assert [p["rule"] for p in c["peers"]] == rules
        assert all(p["median_ms"] == c["fixed"][str(p["split"])]["median_ms"] for p in c["peers"])
    # energy from the reference power table by default, modelled; a native edge
    assert r["power"]["reference"] is True and r["power"]["metered"] is False and r["power"]["radio_link"] == "lte"
    assert all(c["energy"]["oracle_mj"] > 0 and c["energy"]["adaptive"]["frames"] >= 2 for c in conds)
    assert r["machine"]["emulation"] == {"mode": "native"}

    runs = r["throughput"]["runs"]
    assert runs and all(x["fps"] > 0 and x["bound_fps"] > 0 and x["fps_over_bound"] > 0 for x in runs)
    assert 0 < r["goodput"]["goodput_mbps"] and r["goodput"]["shaped_mbps"] == 10.0

    ov = r["overhead"]
    assert ov["tensor_bytes"] == 200704
    assert 0 < ov["raw_grpc"]["median_ms"] and 0 < ov["splitpoint"]["median_ms"] < 1000

    names = " ".join(t["name"] for t in r["targets"])
    for needle in ("chosen/oracle", "step change", "trace", "throughput", "goodput", "added cost"):
        assert needle in names
    assert all(t["status"] in ("PASS", "MISS", "N/A") for t in r["targets"])
    text = md.read_text()
    assert "| target |" in text and ("PASS" in text or "MISS" in text)
    assert f"| {rules[0]} (k={trace['peers'][0]['split']}; the k=" in text and "not metered" in text

    # --plan-log: every adaptive plan is in the edge worker's log, with its path and why
    plans = [line for line in (tmp_path / "runs" / "edge-worker.log").read_text().splitlines()
             if "DEBUG" in line and "scheduler.policy: frame " in line]
    adaptive_frames = sum(c["adaptive"]["frames"] for c in conds) + len(adaptive["splits"])
    assert len(plans) >= adaptive_frames and all(" k=" in line and "weighed k=" in line for line in plans)


@pytest.mark.slow
def test_sigterm_stops_the_bench_and_its_edge_worker_mid_command(tmp_path: Path,
                                                                 shared_file: Callable[[str], Path]) -> None:
    """SIGTERM to `splitpoint bench` while its edge worker runs an agent: the harness unwinds as
    for Ctrl-C (exit 130), its worker is gone by the time it has exited (asked to stop its
    command, not left to finish it for nobody), and the JSON says the run is incomplete."""
    traces = shared_file("data/traces/Verizon-LTE-short.up").parent
    runs, out = tmp_path / "runs", tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitpoint", "bench", "--smoke", "--json", str(out), "--keep-runs", str(runs),
         "--cache-dir", str(tmp_path / "cache"), "--traces-dir", str(traces)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        worker = None
        assert proc.stdout is not None
        for line in proc.stdout:  # the harness names its worker, then runs the first condition
            if "edge worker pid" in line:
                worker = int(line.split("edge worker pid")[1].split(":")[0])
            if "condition 1/" in line:
                break
        assert worker is not None and Path(f"/proc/{worker}").exists()
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size > 0 for p in runs.glob("*.jsonl")):  # an agent is writing records
            assert time.monotonic() < deadline and proc.poll() is None, "no agent run started"
            time.sleep(0.05)
        proc.terminate()
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in rest, rest[-2000:]
    assert not _running(worker), "the edge worker outlived the harness"
    r = json.loads(out.read_text())
    assert r["complete"] is False


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie waiting to be reaped)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
