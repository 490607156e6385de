"""Cost model, policies, hysteresis and link estimation on synthetic profiles."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from pathlib import Path

import pytest

from scheduler.cost import (
    FRAME_OVERHEAD_BYTES,
    CostModel,
    EnergyModel,
    Prediction,
    transfer_ms,
    wire_bytes,
)
from scheduler.link import LinkEstimator, LinkState
from scheduler.objectives import PolicyConfig, decide
from scheduler.policy import AdaptivePolicy
from scheduler.profiles import Profile, SplitProfile, StageStats
from splitpoint.errors import ConfigError, show_value

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13

K = 8
DIGEST = "sha256:test"
# A VGG-like shape: early cuts are big, late ones small; heads get slower, tails faster.
WIRE = [150_528, 800_000, 400_000, 200_000, 100_000, 50_000, 25_088, 4_096, 0]
HEAD_MS = [0.2, 40.0, 90.0, 140.0, 190.0, 250.0, 300.0, 380.0, 420.0]
TAIL_MS = [60.0, 55.0, 50.0, 40.0, 30.0, 20.0, 15.0, 5.0, 0.0]
HEAD_W = [2.0, 3.0, 3.0, 3.2, 3.2, 3.4, 3.4, 3.6, 3.6]


def profile(side: str, times: list[float]) -> Profile:
    splits = {k: SplitProfile(k, WIRE[k], StageStats.constant(t)) for k, t in enumerate(times)}
    return Profile(side, DIGEST, "synthetic", {}, splits)


def cost_model() -> CostModel:
    energy = EnergyModel(head_power=lambda k: HEAD_W[k], idle_w=1.5, tx_watts=lambda bps: 0.43839 * bps / 1e6 + 1.28804)
    return CostModel(profile("edge", HEAD_MS), profile("cloud", TAIL_MS), energy)


def brute_force(link: LinkState, objective: str, cfg: PolicyConfig) -> int:
    """The cost model's equations written out again, and the argmin taken by enumeration."""
    rows = []
    for k in range(K + 1):
        if k == K:
            lat, en = HEAD_MS[k], HEAD_W[k] * HEAD_MS[k]
        else:
            xfer = (WIRE[k] + FRAME_OVERHEAD_BYTES) * 8 / link.bandwidth_bps * 1000
            lat = HEAD_MS[k] + xfer + link.rtt_ms + link.server_queue_ms + TAIL_MS[k]
            tx = 0.43839 * link.bandwidth_bps / 1e6 + 1.28804
            en = HEAD_W[k] * HEAD_MS[k] + tx * xfer + 1.5 * (link.rtt_ms + link.server_queue_ms + TAIL_MS[k])
        rows.append((k, lat, en))
    ok = [r for r in rows if (cfg.deadline_ms is None or r[1] <= cfg.deadline_ms)
          and (cfg.energy_budget_mj is None or r[2] <= cfg.energy_budget_mj)]
    score = {"min-latency": lambda r: r[1], "min-energy": lambda r: r[2],
             "weighted": lambda r: cfg.latency_weight * r[1] + cfg.energy_weight * r[2]}[objective]
    return min(ok, key=lambda r: (score(r), r[0]))[0] if ok else -1


LINKS = [LinkState(bw * 1e6, rtt, q) for bw, rtt, q in itertools.product((1, 2, 5, 10, 20, 50, 100), (10, 50, 150), (0, 5))]


def test_with_latency_is_replace_of_the_latency_alone() -> None:
    """Prediction.with_latency builds the copy field by field (the planner's speed): every
    field but the latency must survive, including one added later."""
    values = {f.name: float(i + 1) for i, f in enumerate(dataclasses.fields(Prediction))}
    p = Prediction(**values)  # type: ignore[arg-type]
    assert p.with_latency(-7.5) == dataclasses.replace(p, latency_ms=-7.5)


@pytest.mark.parametrize("objective", ["min-latency", "min-energy", "weighted"])
def test_policy_equals_brute_force_argmin(objective: str) -> None:
    cm = cost_model()
    cfg = PolicyConfig(name=objective, latency_weight=1.0, energy_weight=0.05, edge_profile="e", cloud_profile="c")
    chosen = set()
    for link in LINKS:
        d = decide(cm.predict_all(list(range(K + 1)), link), objective, cfg)
        assert d.split == brute_force(link, objective, cfg), link
        chosen.add(d.split)
    assert len(chosen) > 1  # the links above do move the choice: the test can tell policies apart


@pytest.mark.parametrize(("objective", "deadline", "budget"),
                         [("min-energy", 400.0, None), ("min-energy", 250.0, None), ("min-latency", None, 1200.0),
                          ("min-latency", None, 700.0), ("weighted", 500.0, 1500.0)])
def test_constraints_are_honoured_when_possible(objective: str, deadline: float | None, budget: float | None) -> None:
    cm = cost_model()
    cfg = PolicyConfig(name=objective, deadline_ms=deadline, energy_budget_mj=budget, energy_weight=0.05,
                       edge_profile="e", cloud_profile="c")
    met = 0
    for link in LINKS:
        preds = cm.predict_all(list(range(K + 1)), link)
        d = decide(preds, objective, cfg)
        expect = brute_force(link, objective, cfg)
        if expect >= 0:
            met += 1
            assert d.feasible and d.split == expect
            p = next(p for p in preds if p.split == d.split)
            assert deadline is None or p.latency_ms <= deadline
            assert budget is None or p.energy_mj <= budget
        else:
            assert not d.feasible
            assert "no split meets" in d.reason
    assert met > 0


def test_infeasible_deadline_takes_the_fastest_split_and_says_so() -> None:
    cm = cost_model()
    cfg = PolicyConfig(name="min-energy", deadline_ms=1.0, edge_profile="e", cloud_profile="c")
    link = LinkState(5e6, 40.0)
    preds = cm.predict_all(list(range(K + 1)), link)
    d = decide(preds, "min-energy", cfg)
    assert not d.feasible
    assert d.split == min(preds, key=lambda p: p.latency_ms).split
    assert "latency <= 1 ms" in d.reason and "fastest" in d.reason


def test_energy_policy_without_power_figures_is_a_clear_error() -> None:
    cm = CostModel(profile("edge", HEAD_MS), profile("cloud", TAIL_MS), None)
    cfg = PolicyConfig(name="min-energy", edge_profile="e", cloud_profile="c")
    with pytest.raises(ConfigError, match="power"):
        decide(cm.predict_all(list(range(K + 1)), LinkState(5e6, 40)), "min-energy", cfg)


def test_profiles_of_different_bundles_are_refused() -> None:
    other = profile("cloud", TAIL_MS)
    other.bundle_digest = "sha256:other"
    with pytest.raises(ConfigError, match="another bundle"):
        CostModel(profile("edge", HEAD_MS), other)


@pytest.mark.parametrize(("where", "value", "key"), [
    (("splits", 1, "power_w"), math.nan, "splits[1].power_w"),
    (("splits", 1, "power_w"), -3, "splits[1].power_w"),
    (("idle_power_w",), -math.inf, "idle_power_w"),
    (("idle_power_w",), "2.0", "idle_power_w"),
    (("splits", 1, "latency", "p95_ms"), math.nan, "splits[1].latency.p95_ms"),
    (("splits", 1, "latency", "median_ms"), "5", "splits[1].latency.median_ms"),
    (("splits", 1, "wire_bytes"), -1, "splits[1].wire_bytes"),
])
def test_a_profile_figure_the_planner_cannot_use_is_named(tmp_path: Path, where: tuple, value: object,
                                                          key: str) -> None:
    """A metered edge profile's NaN or negative watts (or idle -inf) were planned with: min-energy
    chose the split whose predicted energy was -inf. Only median_ms was checked."""
    import json

    from scheduler.profiles import load_profile

    metered = profile("edge", HEAD_MS)
    metered.idle_power_w = 1.5
    for sp in metered.splits.values():
        sp.power_w = 4.0
    path = tmp_path / "edge.json"
    metered.save(path)
    data = json.loads(path.read_text())
    node = data
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    path.write_text(json.dumps(data))  # NaN and -Infinity as Python's json writes them
    with pytest.raises(ConfigError) as err:
        load_profile(path, "edge", DIGEST)
    rule = ("a whole number >= 0" if key.endswith("wire_bytes")
            else f"a finite number >= 0 ({'W' if key.endswith('power_w') else 'ms'})")
    assert str(err.value) == f"{path}: {key} = {show_value(value)}: must be {rule}"


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: [d], r"^{path}: not a splitpoint profile"),  # was `path = "(file)": ...`
    (lambda d: {**d, "bundle_digest": 5}, r"^{path}: bundle_digest = 5: must be a JSON string$"),
    (lambda d: {**d, "device": "pi"}, r'^{path}: device = "pi": must be a JSON object$'),
    (lambda d: {**d, "splits": None}, r"^{path}: splits: must be a JSON list of one object per split$"),
    (lambda d: {**d, "splits": [{**d["splits"][0], "split": "0"}]}, r'^{path}: splits\[0\]\.split = "0": must be a whole'),
    (lambda d: {**d, "splits": [d["splits"][1], d["splits"][1]]}, r"^{path}: splits\[1\] = 1: profiled twice"),
    (lambda d: {**d, "splits": [{k: v for k, v in d["splits"][0].items() if k != "latency"}]},
     r"^{path}: malformed profile: no 'latency' key$"),
])
def test_a_profile_of_the_wrong_shape_is_one_line_naming_what(tmp_path: Path, change: object, message: str) -> None:
    """`profile show` and `policy explain` gave tracebacks on a profile that is a JSON list or has a
    number for its digest, and took a split "3" (a string) or one listed twice without a word."""
    import json
    import re

    from scheduler.profiles import load_profile

    path = tmp_path / "edge.json"
    profile("edge", HEAD_MS).save(path)
    path.write_text(json.dumps(change(json.loads(path.read_text()))))  # type: ignore[operator]
    with pytest.raises(ConfigError) as err:
        load_profile(path, "edge", DIGEST)
    assert re.search(message.format(path=re.escape(str(path))), str(err.value)), str(err.value)


def test_a_fixed_policy_explained_without_profiles_names_the_missing_key(tmp_path: Path) -> None:
    # `splitpoint policy explain --name fixed` without profiles: PolicyConfig lets a fixed policy
    # go without them, and the empty path used to be read as the directory "." (Errno 21)
    from scheduler.planner import build_cost_model

    edge = tmp_path / "e.json"
    profile("edge", HEAD_MS).save(edge)
    with pytest.raises(ConfigError, match=r"^policy\.edge_profile: is required"):
        build_cost_model(PolicyConfig(name="fixed"), DIGEST)
    with pytest.raises(ConfigError, match=r"^policy\.cloud_profile: is required"):
        build_cost_model(PolicyConfig(name="fixed", edge_profile=str(edge)), DIGEST)
    with pytest.raises(ConfigError, match=r'^policy\.cloud_profile = ".*e\.json": is an edge profile; a cloud'):
        build_cost_model(PolicyConfig(name="fixed", edge_profile=str(edge), cloud_profile=str(edge)), DIGEST)


def test_a_fixed_policy_says_which_switching_keys_it_ignores(caplog: pytest.LogCaptureFixture) -> None:
    """battery_low_pct = 30 under name = "fixed" was silently never acted on: the drone kept its
    split at 10% battery with nothing in the log."""
    import logging

    from scheduler.planner import build_policy

    with caplog.at_level(logging.WARNING, logger="scheduler.planner"):
        assert build_policy(PolicyConfig(name="fixed", split=3), DIGEST, K, None).choose([3, K]) == 3
        assert caplog.text == ""
        build_policy(PolicyConfig(name="fixed", battery_low_pct=30, deadline_ms=200), DIGEST, K, 3)
    assert ("policy.deadline_ms, policy.battery_low_pct ignored: the fixed policy never switches splits; set "
            "policy.name to min-latency, min-energy or weighted (with profiles) to use them") in caplog.text


def test_an_edge_profile_without_split_k_is_refused_not_taken_for_a_smaller_model(tmp_path: Path) -> None:
    """The cost model takes the edge profile's highest split for K: a profile of splits 0 and 3
    made `policy explain` show k = 3 as all on the edge (no bytes sent) and choose it; a profile
    with no split at all was a ValueError traceback."""
    from scheduler.planner import build_policy

    edge, cloud = tmp_path / "e.json", tmp_path / "c.json"
    profile("cloud", TAIL_MS).save(cloud)
    cfg = PolicyConfig(name="min-latency", edge_profile=str(edge), cloud_profile=str(cloud))
    partial = profile("edge", HEAD_MS)
    partial.splits = {k: partial.splits[k] for k in (0, 3)}
    partial.save(edge)
    with pytest.raises(ConfigError, match=rf'^policy\.edge_profile = "{edge}": has no figure for split {K} \(K, all on'):
        build_policy(cfg, DIGEST, K, None)
    partial.splits = {}
    partial.save(edge)
    with pytest.raises(ConfigError, match=rf"^{edge}: splits: no split was profiled$"):
        build_policy(cfg, DIGEST, K, None)


@pytest.mark.parametrize(("parse", "text"), [("bandwidth", "1e400Mbps"), ("bandwidth", "9" * 400),
                                             ("duration", "9" * 400), ("duration", "9" * 400 + "s")])
def test_policy_explain_refuses_a_link_figure_too_large_to_be_finite(parse: str, text: str) -> None:
    # `policy explain --bandwidth 1e400Mbps --json` planned with inf and printed `Infinity`, not JSON
    from scheduler.planner import parse_bandwidth, parse_duration_ms

    with pytest.raises(ConfigError, match="too large"):
        (parse_bandwidth if parse == "bandwidth" else parse_duration_ms)(text)
    assert parse_bandwidth("5Mbps") == 5e6 and parse_duration_ms("40") == 40.0


def test_a_round_trip_given_as_a_number_alone_under_1_ms_is_refused() -> None:
    # `policy explain --rtt 0.04` meant seconds and planned with a 0.04 ms round trip, said nowhere
    from scheduler.planner import parse_duration_ms

    with pytest.raises(ConfigError, match=r'^--rtt = "0.04": a number alone is milliseconds.*e\.g\. 40ms or 0\.04s$'):
        parse_duration_ms("0.04")
    assert parse_duration_ms("0.04s") == 40.0 and parse_duration_ms("0.5ms") == 0.5 and parse_duration_ms("0") == 0.0
    assert parse_duration_ms("0.5", "--queue", round_trip=False) == 0.5  # a queue wait may be that short


@pytest.mark.parametrize(("text", "bps"), [("5Mbps", 5e6), ("5 mbps", 5e6), ("500kbps", 5e5), ("2e6", 2e6),
                                         ("5MBps", 40e6), ("5MB/s", 40e6), ("1kBps", 8e3), ("1Gbps", 1e9)])
def test_a_rate_in_bytes_is_eight_times_its_bits(text: str, bps: float) -> None:
    """'5MBps' (megabytes) was read as 5 Mbit/s: case was dropped, B of bytes with it."""
    from scheduler.planner import parse_bandwidth

    assert parse_bandwidth(text) == bps


@pytest.mark.parametrize(("text", "said"), [
    ("5", "is below 1000 bit/s (1kbps), slower than any uplink planned for; a number alone is bit/s: give its "
          "unit, e.g. 5Mbps"),  # planned for 5 bit/s: a header of "link 0.00 Mbps"
    ("1e-300Mbps", "is below 1000 bit/s (1kbps), slower than any uplink planned for"),  # 300-digit figures
    ("5 parsecs", "expected a rate like 5Mbps, 500kbps or 2e6 (bit/s), or 1MBps (bytes)"),
])
def test_a_rate_too_slow_to_plan_for_is_refused(text: str, said: str) -> None:
    from scheduler.planner import parse_bandwidth

    with pytest.raises(ConfigError) as info:
        parse_bandwidth(text)
    assert str(info.value).endswith(said), info.value


@pytest.mark.parametrize(("conf", "said"), [
    (dict(name="min-latency", split=3), 'policy.split = 3: is the fixed policy\'s split, and policy.name is min-latency'),
    (dict(name="weighted", latency_weight=0.0, energy_weight=0.0), "policy.latency_weight = 0: with policy.energy_weight"),
])
def test_a_policy_key_its_policy_would_ignore_is_refused(conf: dict, said: str) -> None:
    """`policy explain --split 3` planned min-latency without a word; both weights 0 chose k = 0."""
    with pytest.raises(ConfigError, match="^" + said.replace("(", r"\(")):
        PolicyConfig(edge_profile="e.json", cloud_profile="c.json", **conf).validate()


def replay(policy: AdaptivePolicy, est: LinkEstimator, bandwidths_mbps: list[float], rng: random.Random | None = None,
           wire: int = 200_000) -> list[int]:
    """Feed one bandwidth sample per frame (with optional +-20% noise); return the split of each frame."""
    out = []
    for bw in bandwidths_mbps:
        noisy = bw * (1 + rng.uniform(-0.2, 0.2)) if rng else bw
        est.observe_bandwidth(noisy * 1e6)
        out.append(policy.choose(list(range(K + 1))))
    return out


def adaptive(objective: str = "min-latency") -> tuple[AdaptivePolicy, LinkEstimator]:
    est = LinkEstimator(initial_bandwidth_bps=50e6, initial_rtt_ms=20.0)
    cfg = PolicyConfig(name=objective, margin=0.1, min_dwell_frames=3, edge_profile="e", cloud_profile="c")
    return AdaptivePolicy(cfg, cost_model(), est), est


def best_split(bw_mbps: float) -> int:
    cm = cost_model()
    return decide(cm.predict_all(list(range(K + 1)), LinkState(bw_mbps * 1e6, 20.0)), "min-latency",
                  PolicyConfig(edge_profile="e", cloud_profile="c", name="min-latency")).split


def test_bandwidth_step_moves_the_split_within_five_frames() -> None:
    policy, est = adaptive()
    assert best_split(50) != best_split(2)
    splits = replay(policy, est, [50.0] * 30 + [2.0] * 30)
    assert splits[29] == best_split(50)
    after = splits[30:]
    settled = next(i for i, k in enumerate(after) if k == best_split(2))
    assert settled < 5, f"took {settled + 1} frames: {after[:10]}"
    assert all(k == best_split(2) for k in after[settled:])
    assert policy.switches == 1


def test_no_flapping_under_twenty_percent_noise() -> None:
    for seed in range(5):
        policy, est = adaptive()
        rng = random.Random(seed)
        splits = replay(policy, est, [50.0] * 200, rng)
        assert len(set(splits[10:])) == 1, f"seed {seed}: flapped between {sorted(set(splits[10:]))}"
        policy, est = adaptive()
        splits = replay(policy, est, [2.0] * 200, rng)
        assert len(set(splits[10:])) == 1


def test_battery_low_switches_to_the_energy_objective() -> None:
    level = {"pct": 80.0}
    est = LinkEstimator(initial_bandwidth_bps=2e6, initial_rtt_ms=20.0)
    cfg = PolicyConfig(name="min-latency", battery_low_pct=30, min_dwell_frames=0, margin=0.0,
                       edge_profile="e", cloud_profile="c")
    cm = cost_model()
    policy = AdaptivePolicy(cfg, cm, est, battery=lambda: level["pct"])
    link = est.estimate()
    fast = decide(cm.predict_all(list(range(K + 1)), link), "min-latency", cfg).split
    frugal = decide(cm.predict_all(list(range(K + 1)), link), "min-energy", cfg).split
    assert fast != frugal
    assert policy.choose(list(range(K + 1))) == fast
    level["pct"] = 20.0
    assert policy.choose(list(range(K + 1))) == frugal


def test_link_estimator_separates_rtt_and_bandwidth() -> None:
    est = LinkEstimator(percentile=None)
    for _ in range(5):
        est.observe_transfer(100, rpc_ms=42.0, server_ms=2.0)  # small: RTT 40 ms
    for _ in range(10):
        # 500 kB at 10 Mbps = 400 ms on the wire + 40 ms RTT + 5 ms in the server
        est.observe_transfer(500_000, rpc_ms=445.0, server_ms=5.0, server_queue_ms=3.0)
    s = est.estimate()
    assert s.rtt_ms == pytest.approx(40.0)
    assert s.bandwidth_bps == pytest.approx(10e6, rel=0.01)
    assert 0 < s.server_queue_ms <= 3.0


def test_pessimistic_estimate_is_never_above_the_ewma() -> None:
    # horizon=0: no robust discount, so the two differ only in the percentile
    est = LinkEstimator(percentile=20.0, horizon=0)
    rng = random.Random(1)
    for _ in range(30):
        est.observe_bandwidth(rng.uniform(5e6, 15e6))
    ewma = LinkEstimator(percentile=None, horizon=0)
    rng = random.Random(1)
    for _ in range(30):
        ewma.observe_bandwidth(rng.uniform(5e6, 15e6))
    assert est.estimate().bandwidth_bps <= ewma.estimate().bandwidth_bps
    est.force(bandwidth_bps=1e6)
    assert est.estimate().bandwidth_bps == 1e6 and est.estimate().forced


def test_a_probe_after_an_idle_spell_restarts_the_bandwidth_estimate() -> None:
    """All-edge while the link was bad, then the link recovers: the agent learns it from one probe.
    (Before, the pessimistic percentile over the last 20 samples needed about 16 good probes, seconds apart.)"""
    policy, est = adaptive()
    replay(policy, est, [2.0] * 20)
    assert policy.current == best_split(2)
    est.observe_rtt(20.0)
    est.observe_probe(64 * 1024, rpc_ms=20.0 + 64 * 1024 * 8 / 50e6 * 1000)  # 50 Mbps on the wire
    assert est.estimate().bandwidth_bps == pytest.approx(50e6, rel=0.01)
    splits = [policy.choose(list(range(K + 1))) for _ in range(3)]
    assert splits[-1] == best_split(50) != best_split(2)
    # and frame samples after it are judged as before: a drop still pulls the estimate down
    for _ in range(5):
        est.observe_bandwidth(2e6)
    assert est.estimate().bandwidth_bps < 10e6


X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 106
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
"""
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
CPU implementer\t: 0x41

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def test_cpu_name_reads_the_name_not_the_model_number() -> None:
    from scheduler.profiles import cpu_name

    assert cpu_name(X86_CPUINFO) == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"  # not "106"
    assert cpu_name(PI4_CPUINFO) == "Raspberry Pi 4 Model B Rev 1.4"
    assert cpu_name("processor\t: 0\nHardware\t: BCM2835\n") == "BCM2835"
    assert cpu_name("") is None


# ---------------------------------------------------------------- the one wire-time and energy formula


def test_wire_time_by_hand() -> None:
    assert wire_bytes(1000) == 1000 + FRAME_OVERHEAD_BYTES
    assert transfer_ms(1250, 1e6) == pytest.approx(10.0)   # 10,000 bits at 1 Mbit/s
    assert transfer_ms(1250, 0.0) == math.inf and transfer_ms(1250, math.inf) == 0.0


def test_the_planner_predicts_with_the_same_functions() -> None:
    model, link = cost_model(), LinkState(bandwidth_bps=5e6, rtt_ms=40.0, server_queue_ms=3.0)
    for k in range(len(WIRE) - 1):
        p = model.predict(k, link)
        assert p.wire_bytes == wire_bytes(WIRE[k])
        assert p.transfer_ms == transfer_ms(p.wire_bytes, 5e6)
        assert p.latency_ms == pytest.approx(HEAD_MS[k] + p.transfer_ms + 40.0 + 3.0 + TAIL_MS[k])
        # the bench's per-frame energy of the predicted frame is the planner's prediction
        assert model.energy is not None
        assert p.energy_mj == pytest.approx(model.energy.frame_mj(k, HEAD_MS[k], p.transfer_ms, 5e6, 40.0 + 3.0
                                                                  + TAIL_MS[k]))
        tx = 0.43839 * 5 + 1.28804
        assert p.energy_mj == pytest.approx(HEAD_W[k] * HEAD_MS[k] + tx * p.transfer_ms + 1.5 * (43.0 + TAIL_MS[k]))
    local = model.predict(len(WIRE) - 1, link)
    assert local.energy_mj == pytest.approx(HEAD_W[-1] * HEAD_MS[-1]) and local.transfer_ms == 0.0


def test_the_splits_a_policy_may_send_are_a_fixed_ones_or_all_but_K() -> None:
    """What the agent asks a server to have tails for (session.check_server warns of the rest)."""
    from types import SimpleNamespace

    from scheduler.policy_base import FixedPolicy, offload_splits

    assert offload_splits(FixedPolicy(3), [0, 1, 3, 7], 7) == [3]
    assert offload_splits(FixedPolicy(7), [0, 1, 3, 7], 7) == []  # all on the edge: nothing is sent
    adaptive = SimpleNamespace(link=object())  # a policy that plans paths with a link estimate
    assert offload_splits(adaptive, [0, 1, 3, 7], 7) == [0, 1, 3]  # type: ignore[arg-type]
