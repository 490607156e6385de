"""The scheduler in the running agent: profiles from the CLI, split changes on a live server, SIGHUP."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_node.agent import EdgeAgent
from edge_node.config import EdgeConfig
from edge_node.results import read_results
from edge_node.source_spec import open_source
from scheduler.objectives import PolicyConfig
from scheduler.policy import AdaptivePolicy
from scheduler.profiles import Profile, SplitProfile, StageStats, load_profile
from splitpoint import config as cfg
from splitpoint.bundle import load_bundle
from splitpoint.cli import main
from splitpoint.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_profile_edge_measures_only_the_splits_asked_for(digits_bundle: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    m = load_bundle(digits_bundle).manifest
    k = m.split_ids[1]
    assert main(["profile", "edge", "--bundle", str(digits_bundle), "--runs", "2", "--splits", f"0,{k}",
                 "-o", str(tmp_path / "e.json")]) == 0
    assert sorted(load_profile(tmp_path / "e.json", "edge", m.model_digest).splits) == [0, k, m.num_layers]
    for bad, named in (("0,x", "'x' is not a split number"), ("0,999", "999 is not a split of this bundle")):
        capsys.readouterr()
        assert main(["profile", "edge", "--bundle", str(digits_bundle), "--splits", bad, "-o", str(tmp_path / "f.json")]) == 2
        assert named in capsys.readouterr().err
    assert not (tmp_path / "f.json").exists()


def test_the_agent_loads_only_the_splits_asked_for(digits_bundle: Path, tmp_path: Path) -> None:
    m = load_bundle(digits_bundle).manifest
    k = m.split_ids[1]
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:2", results=str(tmp_path / "r.jsonl"), splits=[0, k],
                      insecure=True)
    agent = EdgeAgent.from_config(conf)
    try:
        assert agent.heads.splits == [0, k, m.num_layers]  # K always: every fallback runs it
    finally:
        agent.close()
    with pytest.raises(ConfigError, match=rf"999 is not a split of digits-cnn; its splits: 0-{m.num_layers}$"):
        EdgeAgent.from_config(EdgeConfig(bundle=str(digits_bundle), source="synthetic:2", splits=[0, 999], insecure=True))
    with pytest.raises(ConfigError, match=rf"split = {k}: not a split loaded here \(splits\); candidates: 0, {m.num_layers}$"):
        EdgeAgent.from_config(EdgeConfig(bundle=str(digits_bundle), source="synthetic:2", splits=[0], split=k, insecure=True))


def test_profile_commands_measure_every_split(digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = load_bundle(digits_bundle).manifest
    assert main(["profile", "edge", "--bundle", str(digits_bundle), "--runs", "5", "-o", str(tmp_path / "e.json")]) == 0
    assert main(["profile", "cloud", "--bundle", str(digits_bundle), "--runs", "5", "-o", str(tmp_path / "c.json")]) == 0
    edge = load_profile(tmp_path / "e.json", "edge", m.model_digest)
    cloud = load_profile(tmp_path / "c.json", "cloud", m.model_digest)
    assert sorted(edge.splits) == m.split_ids
    assert sorted(cloud.splits) == m.split_ids
    for k, sp in edge.splits.items():
        assert sp.wire_bytes == m.split(k).wire_bytes
        assert sp.latency.samples == 5 and 0 <= sp.latency.median_ms <= sp.latency.p95_ms
    assert edge.device["cpu"] and "ai-edge-litert" in edge.device["runtimes"]
    capsys.readouterr()
    assert main(["profile", "show", str(tmp_path / "e.json")]) == 0
    shown = capsys.readouterr().out
    assert "median ms" in shown and f"{m.num_layers:>4}" in shown


def test_profile_of_another_bundle_is_refused(digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = load_bundle(digits_bundle).manifest
    edge, cloud = synthetic_profiles(digits_bundle)
    edge.bundle_digest = "sha256:someotherbundle"
    edge.save(tmp_path / "e.json")
    cloud.save(tmp_path / "c.json")
    code = main(["policy", "explain", "--bundle", str(digits_bundle), "--edge-profile", str(tmp_path / "e.json"),
                 "--cloud-profile", str(tmp_path / "c.json"), "--bandwidth", "5Mbps", "--rtt", "40ms"])
    err = capsys.readouterr().err
    assert code == 2
    assert "sha256:someotherbundle" in err and m.model_digest in err


def synthetic_profiles(bundle: Path) -> tuple[Profile, Profile]:
    """Heads get slower and tails faster with k: fast links favour k = 0, slow ones k = K."""
    m = load_bundle(bundle).manifest
    edge = {s.split: SplitProfile(s.split, s.wire_bytes, StageStats.constant(1.0 + 5.0 * s.split)) for s in m.splits}
    cloud = {s.split: SplitProfile(s.split, s.wire_bytes, StageStats.constant(max(0.1, 8.0 - s.split))) for s in m.splits}
    return (Profile("edge", m.model_digest, m.model_name, {}, edge),
            Profile("cloud", m.model_digest, m.model_name, {}, cloud))


def test_policy_explain_json_marks_the_argmin(digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    edge, cloud = synthetic_profiles(digits_bundle)
    edge.save(tmp_path / "e.json")
    cloud.save(tmp_path / "c.json")
    args = ["policy", "explain", "--bundle", str(digits_bundle), "--edge-profile", str(tmp_path / "e.json"),
            "--cloud-profile", str(tmp_path / "c.json"), "--rtt", "5ms", "--policy", "min-latency", "--json"]
    results = {}
    for bw in ("1000Mbps", "1kbps"):
        capsys.readouterr()
        assert main([*args, "--bandwidth", bw]) == 0
        out = json.loads(capsys.readouterr().out)
        best = min(out["splits"], key=lambda p: p["latency_ms"])
        assert out["chosen"] == best["split"]
        results[bw] = out["chosen"]
    assert results["1000Mbps"] == 0
    assert results["1kbps"] == load_bundle(digits_bundle).manifest.num_layers


def test_policy_explain_of_the_fixed_policy_chooses_its_split(digits_bundle: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """It once explained min-latency's choice under the header 'policy fixed', and took any --split."""
    edge, cloud = synthetic_profiles(digits_bundle)
    edge.save(tmp_path / "e.json")
    cloud.save(tmp_path / "c.json")
    args = ["policy", "explain", "--bundle", str(digits_bundle), "--edge-profile", str(tmp_path / "e.json"),
            "--cloud-profile", str(tmp_path / "c.json"), "--rtt", "5ms", "--bandwidth", "1000Mbps", "--json",
            "--name", "fixed"]
    K = load_bundle(digits_bundle).manifest.num_layers
    for extra, chosen in (([], K), (["--split", "3"], 3)):  # min-latency would choose 0 on this link
        capsys.readouterr()
        assert main([*args, *extra]) == 0
        assert json.loads(capsys.readouterr().out)["chosen"] == chosen
    assert main([*args, "--split", "99"]) == 2
    assert f"split = 99: not a split of this bundle; its splits: 0-{K}" in capsys.readouterr().err


def test_policy_explain_plans_over_the_bundles_splits_not_the_profiles(digits_bundle: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """A profile of another bundle of the same model (same digest, other --splits) passes the digest
    check: explain chose k = 3 of a bundle without it, and a profiled k = 99 that costs nothing.
    A split beyond the bundle's K is no split of any bundle of the model: refused, naming it (the
    planner took the highest split for K)."""
    edge, cloud = synthetic_profiles(digits_bundle)
    K = load_bundle(digits_bundle).manifest.num_layers
    for p in (edge, cloud):
        p.splits[99] = SplitProfile(99, 0, StageStats.constant(0.0))
    edge.save(tmp_path / "e.json")
    cloud.save(tmp_path / "c.json")
    args = ["policy", "explain", "--bundle", str(digits_bundle), "--edge-profile", str(tmp_path / "e.json"),
            "--cloud-profile", str(tmp_path / "c.json"), "--rtt", "5ms", "--bandwidth", "1000Mbps", "--json"]
    capsys.readouterr()
    assert main([*args, "--policy", "min-latency"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{tmp_path / 'e.json'}: splits[{len(edge.splits) - 1}].split = 99: not a split of the bundle (0-{K})")
    for p in (edge, cloud):
        del p.splits[99]
    edge.save(tmp_path / "e.json")
    cloud.save(tmp_path / "c.json")
    assert main([*args, "--policy", "min-latency"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chosen"] == 0 and sorted(p["split"] for p in out["splits"]) == load_bundle(digits_bundle).manifest.split_ids
    assert main([*args, "--name", "fixed", "--split", "99"]) == 2
    assert "split = 99: not a split of this bundle" in capsys.readouterr().err


def test_a_profile_written_to_a_directory_is_refused_before_measuring(digits_bundle: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    assert main(["profile", "cloud", "--bundle", str(digits_bundle), "--runs", "2", "-o", str(tmp_path)]) == 2
    assert f'-o = "{tmp_path}": is a directory' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing left behind


@pytest.mark.parametrize(("argv", "said"), [
    (["cloud", "--device", "edgetpu"], '--device = "edgetpu": is for `profile edge`; `profile cloud` has no use for it'),
    (["cloud", "--splits", "1,2"], '--splits = "1,2": is for `profile edge`; `profile cloud` has no use for it'),
    (["reference", "--threads", "2"], "--threads = 2: is for `profile edge`; `profile reference` has no use for it"),
    (["reference", "-o", ""], "-o: give a directory (or leave -o out for ./reference-profiles)"),  # was the cwd
    (["reference"], "--runs = 2: is for `profile edge` and `profile cloud`; `profile reference` measures nothing "
                    "(its figures are a model's)"),  # ignored without a word
    (["edge", "--splits", ""], "--splits: give a value (or leave the flag out for every split)"),  # it profiled all
    (["edge", "--device", ""], "--device: give a value (or leave the flag out for the CPU)"),  # a variable left empty
])
def test_a_profile_flag_its_side_has_no_use_for_is_refused(digits_bundle: Path, tmp_path: Path, argv: list[str],
                                                           said: str, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`profile cloud --device edgetpu` measured the tails as asked for nothing, without a word."""
    monkeypatch.chdir(tmp_path)
    out = [] if "-o" in argv else ["-o", str(tmp_path / "p.json")]
    assert main(["profile", *argv, "--bundle", str(digits_bundle), "--runs", "2", *out]) == 2
    assert capsys.readouterr().err.strip() == f"splitpoint profile: error: {said}"
    assert list(tmp_path.iterdir()) == []


def test_agent_changes_split_when_its_bandwidth_estimate_changes(cloud_server, digits_bundle: Path, tmp_path: Path) -> None:
    edge, cloud = synthetic_profiles(digits_bundle)
    edge.save(tmp_path / "e.json")
    cloud.save(tmp_path / "c.json")
    K = load_bundle(digits_bundle).manifest.num_layers
    pcfg = PolicyConfig(name="min-latency", edge_profile=str(tmp_path / "e.json"), cloud_profile=str(tmp_path / "c.json"),
                        margin=0.1, min_dwell_frames=3, probe_idle_s=60, race=False)
    # Unpaced (one frame in flight, each planned with an idle link) and unhedged: at a camera's
    # pace on a loaded machine the planner may rightly run a frame locally while the link is busy
    # with the last one, and a late answer may be hedged; neither is what this test is about.
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:60", cloud=cloud_server.address, insecure=True,
                      results=str(tmp_path / "r.jsonl"), mode="latency", hedge="off", policy=pcfg)
    switched_at: list[int] = []

    def on_result(record: dict) -> None:
        if record["frame_id"] == 19:  # the link "degrades" after 20 frames
            switched_at.append(19)
            agent.link.force(bandwidth_bps=1e3, rtt_ms=5.0)

    agent = EdgeAgent.from_config(conf, on_result=on_result)
    assert isinstance(agent.policy, AdaptivePolicy)
    agent.link.force(bandwidth_bps=1e9, rtt_ms=5.0)
    with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps) as source:
        agent.run(source)
    records = sorted(read_results(tmp_path / "r.jsonl"), key=lambda r: r["frame_id"])
    assert [r["frame_id"] for r in records] == list(range(60))
    splits = [r["split"] for r in records]
    assert set(splits[:20]) == {0}, splits[:20]
    assert all(r["where"] == "cloud" for r in records[:20])
    after = splits[20:]
    first_k = next(i for i, k in enumerate(after) if k == K)
    assert first_k < 5, f"moved after {first_k + 1} frames: {after[:10]}"
    assert set(after[first_k:]) == {K}
    # one move, and it is the planner's per-frame choice of local over the cloud path (k = 0), which
    # the policy's hysteresis keeps: the cloud path itself never changed
    assert sum(a != b for a, b in zip(splits, splits[1:], strict=False)) == 1
    assert agent.policy.switches == 0 and agent.policy.cloud_path == 0


def run_with_a_reload(conf_path: Path, results: Path, before: str, after: str,
                      reload_at: int, stop_at: int) -> tuple[int, str]:
    """`splitpoint edge --config conf_path` with the file `before`, rewritten to `after` and
    SIGHUP sent once `reload_at` records are in, SIGTERM once `stop_at` are: (exit code, stderr)."""
    conf_path.write_text(before)
    proc = subprocess.Popen([sys.executable, "-m", "splitpoint", "edge", "--config", str(conf_path)],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not results.exists() or
                                               len(results.read_text().splitlines()) < reload_at):
            time.sleep(0.1)
        conf_path.write_text(after)
        proc.send_signal(signal.SIGHUP)
        while time.monotonic() < deadline and len(results.read_text().splitlines()) < stop_at:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # stop after the current frame; in-flight frames finish
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def test_sighup_reloads_the_policy_without_dropping_frames(cloud_server, digits_bundle: Path, tmp_path: Path) -> None:
    conf_path = tmp_path / "edge.toml"
    results = tmp_path / "r.jsonl"
    body = (f'bundle = "{digits_bundle}"\nsource = "synthetic:400"\ncloud = "{cloud_server.address}"\n'
            f'results = "{results}"\nfps = 40.0\nmode = "latency"\ninsecure = true\n')
    _, err = run_with_a_reload(conf_path, results, body + "[policy]\nname = \"fixed\"\nsplit = 3\n",
                               body + "[policy]\nname = \"fixed\"\nsplit = 5\n", 20, 60)
    records = sorted(read_results(results), key=lambda r: r["frame_id"])
    ids = [r["frame_id"] for r in records]
    assert ids == list(range(len(ids))), "a frame was dropped or duplicated across the reload"
    splits = [r["split"] for r in records]
    assert splits[0] == 3 and splits[-1] == 5
    change = splits.index(5)
    assert set(splits[:change]) == {3} and set(splits[change:]) == {5}
    assert "policy reloaded" in err


def test_a_bad_reload_keeps_the_running_policy(digits_bundle: Path, tmp_path: Path) -> None:
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:1", cloud="127.0.0.1:9", split=3, insecure=True,
                      results=str(tmp_path / "r.jsonl"))
    agent = EdgeAgent.from_config(conf)
    try:
        before = agent.policy
        agent.on_reload(lambda: PolicyConfig(name="min-latency", edge_profile=str(tmp_path / "missing.json"),
                                             cloud_profile=str(tmp_path / "missing.json")))
        agent.request_reload()
        agent._maybe_reload()
        assert agent.policy is before
    finally:
        agent.close()


def test_a_reload_to_a_split_not_loaded_is_refused_and_the_running_policy_kept(
        digits_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # accepted, it failed every later frame ("policy fixed chose split 99, not loaded here") and
    # the agent exited 1; the docs promise a bad table is refused and the running policy kept
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:1", cloud="127.0.0.1:9", split=3, insecure=True,
                      splits=[3], results=str(tmp_path / "r.jsonl"))
    agent = EdgeAgent.from_config(conf)
    try:
        before = agent.policy
        for split in (99, 5):  # not a split of the model; a split the agent did not load (splits = [3])
            agent.on_reload(lambda split=split: PolicyConfig(name="fixed", split=split))
            agent.request_reload()
            with caplog.at_level(logging.ERROR, logger="edge_node.agent"):
                agent._maybe_reload()
            assert agent.policy is before
            assert f'policy.split = {split}: not a split loaded here (splits); candidates:' in caplog.text
        agent.on_reload(lambda: PolicyConfig(name="fixed", split=7))  # K: always loaded
        agent.request_reload()
        agent._maybe_reload()
        assert agent.policy is not before and agent.policy.choose([3, 7]) == 7
    finally:
        agent.close()


def test_policy_table_is_a_config_section(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('bundle = "b"\nsource = "synthetic:1"\n[policy]\nname = "min-energy"\ndeadline_ms = 300\n')
    p = argparse.ArgumentParser()
    cfg.add_arguments(p, EdgeConfig)
    args = p.parse_args(["--insecure", "--policy-edge-profile", "e.json", "--policy-cloud-profile", "c.json", "--policy-margin", "0.2"])
    conf = cfg.load(EdgeConfig, args, path)
    assert conf.policy.name == "min-energy" and conf.policy.deadline_ms == 300 and conf.policy.margin == 0.2
    assert "[policy]" in cfg.to_toml(conf)
    path.write_text('bundle = "b"\nsource = "synthetic:1"\n[policy]\nname = "min-energy"\n')
    with pytest.raises(ConfigError, match="policy.name"):
        cfg.load(EdgeConfig, p.parse_args(["--insecure"]), path)


def test_link_probes_never_delay_a_frame(cloud_server, digits_bundle: Path, tmp_path: Path) -> None:
    """All-edge frames on a slow link: each probe (32 KiB here) takes about half a second on the
    wire, and runs in the background; no frame waits for one (the agent once probed inside a frame).
    10 fps: a frame every 100 ms against a predicted 36 ms all-edge run. All-edge must win even
    for a frame that finds the edge still booked: on a loaded machine frames bunch up (a 127 ms
    preprocess, then two frames within 20 ms), and at RTT 50 ms a frame behind one booked run
    (36 + 36 ms) was rightly planned to the cloud by finish time (split 0, about 75 ms; once in
    seven CI runs, and once in 20 runs here beside three busy loops). At RTT 200 ms split 0 needs
    about 220 ms: six runs would have to be queued (none in 20 runs beside the same busy loops).
    Choosing by finish time with the edge queue counted is the planner's job (test_paths.py:
    test_the_cloud_path_is_chosen_by_finish_time_with_the_edge_queue_counted), not this test's subject."""
    from scheduler.link import PROBE_MIN_BYTES
    from splitpoint.linkemu import LinkEmulator

    edge, cloud = synthetic_profiles(digits_bundle)
    edge.save(tmp_path / "e.json")
    cloud.save(tmp_path / "c.json")
    K = load_bundle(digits_bundle).manifest.num_layers
    host, port = cloud_server.address.rsplit(":", 1)
    with LinkEmulator((host, int(port)), uplink=0.5e6, delay_ms=100) as link:
        pcfg = PolicyConfig(name="min-latency", edge_profile=str(tmp_path / "e.json"),
                            cloud_profile=str(tmp_path / "c.json"), probe_idle_s=0.3)
        conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:50", cloud=link.address, insecure=True,
                          results=str(tmp_path / "r.jsonl"), mode="latency", fps=10.0, policy=pcfg)
        agent = EdgeAgent.from_config(conf)
        with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps) as source:
            agent.run(source)
        uplink_bytes = link.stats()["up_bytes"]
    records = sorted(read_results(tmp_path / "r.jsonl"), key=lambda r: r["frame_id"])
    assert [r["frame_id"] for r in records] == list(range(50))
    assert {r["split"] for r in records} == {K}  # 0.5 Mbps and 200 ms RTT: all-edge wins
    assert agent.link.estimate().samples >= 2, "the background prober measured the link more than once"
    assert agent.link.estimate().bandwidth_bps < 1e6
    slowest = max(r["timings_ms"]["end_to_end"] for r in records)
    assert slowest < 300, f"a frame took {slowest} ms: it waited for a probe"
    # no frame crossed the link: these bytes are the probes, sized to the estimate (at least PROBE_MIN_BYTES)
    assert uplink_bytes > 2 * PROBE_MIN_BYTES


def test_a_reload_names_the_keys_outside_policy_it_does_not_apply(cloud_server, digits_bundle: Path,
                                                                  tmp_path: Path) -> None:
    """Only [policy] is re-read. An edit of the top-level `split` and `window` logged nothing but
    "policy reloaded: fixed split 3 -> fixed split 3", as if it had been taken."""
    conf_path = tmp_path / "edge.toml"
    results = tmp_path / "r.jsonl"
    body = (f'bundle = "{digits_bundle}"\nsource = "synthetic:400"\ncloud = "{cloud_server.address}"\n'
            f'results = "{results}"\nfps = 40.0\ninsecure = true\n')
    code, err = run_with_a_reload(conf_path, results, body + "split = 3\nwindow = 4\n",
                                  body + "split = 5\nwindow = 2\n", 10, 30)
    assert code == 0, err
    warned = [line for line in err.splitlines() if "changed since the agent started" in line]
    assert len(warned) == 1 and "WARNING" in warned[0], err
    assert f"{conf_path}: split, window changed since the agent started; a reload re-reads only the [policy] table" \
        in warned[0]
    assert {r["split"] for r in read_results(results)} == {3}  # as the warning says: not applied


def test_policy_explain_decides_with_the_battery_level_as_the_agent_would(digits_bundle: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """--battery-low-pct and --battery-file were accepted and ignored: the explanation showed
    min-latency's choice while an agent on that battery would decide by min-energy."""
    edge, cloud = synthetic_profiles(digits_bundle)
    edge.save(tmp_path / "e.json")
    cloud.save(tmp_path / "c.json")
    (tmp_path / "power.toml").write_text('source = "test"\nidle_w = 1.0\ndefault_head_w = 6.0\n')
    battery = tmp_path / "battery"
    args = ["policy", "explain", "--bundle", str(digits_bundle), "--edge-profile", str(tmp_path / "e.json"),
            "--cloud-profile", str(tmp_path / "c.json"), "--power-table", str(tmp_path / "power.toml"),
            "--rtt", "5ms", "--bandwidth", "2Mbps", "--battery-low-pct", "20", "--battery-file", str(battery)]
    for level, objective in (("90", "min-latency"), ("10", "min-energy")):
        battery.write_text(level + "\n")
        capsys.readouterr()
        assert main([*args, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["objective"], out["battery_pct"], out["battery_low_pct"]) == (objective, float(level), 20.0)
        key = "latency_ms" if objective == "min-latency" else "energy_mj"
        assert out["chosen"] == min(out["splits"], key=lambda p: p[key])["split"]
        assert main(args) == 0
        header = capsys.readouterr().out.splitlines()[0]
        assert f"policy min-latency, battery {level}% (battery_low_pct 20%: deciding by {objective})" in header
