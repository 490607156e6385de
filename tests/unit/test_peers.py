"""Peers' split rules (splitpoint/bench/peers.py) on a hand-made profile whose answers are worked out below.

Profile (K = 3), RTT 20 ms, no server queue; wire bytes include the 96-byte frame overhead:

    k   head ms  wire bytes  tail ms   latency at 1 / 10 / 100 Mbps     energy at 10 Mbps (mJ)
    0      0       100000       5      825  / 105  / 33                 3 W x 80 + 2 W x 25           = 290
    1     10        20000       4      194  /  50  / 35.6               4 x 10 + 3 x 16 + 2 x 24      = 136
    2     30         2000       2       68  /  53.6/ 52.16              4 x 30 + 3 x 1.6 + 2 x 22     = 168.8
    3     60            -       -       60  /  60  / 60                 1.5 x 60                      = 90

(head power 4 W for k = 1, 2 and 1.5 W for k = 3, radio 3 W while sending, idle 2 W.)
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from scheduler.cost import FRAME_OVERHEAD_BYTES, CostModel, EnergyModel
from scheduler.link import LinkState
from scheduler.profiles import Profile, SplitProfile, StageStats
from splitpoint.bench import peer_runs
from splitpoint.bench.conditions import Sweep
from splitpoint.bench.peers import (
    RULE_DEADLINE,
    RULE_STARTUP,
    deadline_at_nominal,
    fixed_from_startup,
    startup_bandwidth_bps,
)
from splitpoint.bench.results import FixedRun
from splitpoint.bench.trace_results import PEER_RULES, PeerPickResult, TraceResult, TraceRunResult
from splitpoint.errors import ConfigError
from splitpoint.traces import constant, step

HEAD = {0: 0.0, 1: 10.0, 2: 30.0, 3: 60.0}
WIRE = {0: 100_000, 1: 20_000, 2: 2_000, 3: 1_000}
TAIL = {0: 5.0, 1: 4.0, 2: 2.0}
HEAD_W = {0: 2.0, 1: 4.0, 2: 4.0, 3: 1.5}
RTT = 20.0
MBPS = 1e6


def cost_model(energy: bool = True) -> CostModel:
    edge = Profile("edge", "sha256:test", "hand", {}, {
        k: SplitProfile(k, WIRE[k] - FRAME_OVERHEAD_BYTES, StageStats.constant(t)) for k, t in HEAD.items()})
    cloud = Profile("cloud", "sha256:test", "hand", {}, {
        k: SplitProfile(k, WIRE[k] - FRAME_OVERHEAD_BYTES, StageStats.constant(t)) for k, t in TAIL.items()})
    model = EnergyModel(lambda k: HEAD_W[k], idle_w=2.0, tx_watts=lambda bps: 3.0, source="hand") if energy else None
    return CostModel(edge, cloud, model)


@pytest.mark.parametrize(("mbps", "want", "latency"), [(1, 3, 60.0), (10, 1, 50.0), (100, 0, 33.0)])
def test_startup_rule_takes_the_fastest_split_at_the_measured_bandwidth(mbps: float, want: int, latency: float) -> None:
    pick = fixed_from_startup(cost_model(), mbps * MBPS, RTT)
    assert (pick.rule, pick.split, pick.feasible) == (RULE_STARTUP, want, True)
    assert pick.predicted_latency_ms == pytest.approx(latency)
    assert pick.link == LinkState(mbps * MBPS, RTT)
    # the prediction is the cost model's own, not a copy of its formula
    assert pick.predicted_latency_ms == cost_model().predict(want, pick.link).latency_ms


def test_startup_measurement_is_the_delivery_over_the_first_second_and_is_kept() -> None:
    """10 Mbps for the first second, then 1 Mbps for good: the rule measures 10, picks k = 1 and keeps it,
    although k = 3 is best for everything after the first second."""
    trace = step([(0.0, 10.0), (1.0, 1.0)])
    bps = startup_bandwidth_bps(trace)
    assert bps == pytest.approx(10 * MBPS)
    assert fixed_from_startup(cost_model(), bps, RTT).split == 1
    # half a second at 100 Mbps then 1 Mbps: 50.5 Mbps over the first second
    assert startup_bandwidth_bps(step([(0.0, 100.0), (0.5, 1.0)])) == pytest.approx(50.5 * MBPS)
    # a slice that starts later in the trace measures from its own start
    assert startup_bandwidth_bps(trace, start_s=2.0) == pytest.approx(1 * MBPS)
    assert startup_bandwidth_bps(constant(7.0)) == pytest.approx(7 * MBPS)


def test_startup_rule_chooses_only_among_the_given_splits() -> None:
    assert fixed_from_startup(cost_model(), 10 * MBPS, RTT, splits=[0, 2, 3]).split == 2  # 53.6 < 60 < 105
    with pytest.raises(ConfigError, match=r"\[7\]"):
        fixed_from_startup(cost_model(), 10 * MBPS, RTT, splits=[0, 7])


@pytest.mark.parametrize(("deadline", "nominal_mbps", "want", "feasible"), [
    (70.0, 10, 3, True),    # k = 1, 2, 3 meet 70 ms; k = 3 spends least (90 mJ), although k = 1 is faster
    (55.0, 10, 1, True),    # k = 3 (60 ms) misses: k = 1 (136 mJ) beats k = 2 (168.8 mJ)
    (52.0, 10, 1, True),    # only k = 1 meets it
    (40.0, 10, 1, False),   # nothing meets 40 ms at 10 Mbps: the fastest there, k = 1, said to be infeasible
    (70.0, 1, 3, True),     # at 1 Mbps nominal only k = 2 (68) and k = 3 (60) meet 70 ms: k = 3 spends least
    (65.0, 1, 3, True),
    (50.0, 1, 3, False),    # nothing within 50 ms at 1 Mbps: fastest is k = 3 (60 ms)
])
def test_deadline_rule_takes_the_least_energy_split_within_the_deadline_at_nominal(
        deadline: float, nominal_mbps: float, want: int, feasible: bool) -> None:
    pick = deadline_at_nominal(cost_model(), nominal_mbps * MBPS, RTT, deadline)
    assert (pick.rule, pick.split, pick.feasible) == (RULE_DEADLINE, want, feasible)
    expected = cost_model().predict(want, LinkState(nominal_mbps * MBPS, RTT))
    assert (pick.predicted_latency_ms, pick.predicted_energy_mj) == (expected.latency_ms, expected.energy_mj)
    if not feasible:
        assert "no split is predicted within" in pick.reason and "fastest" in pick.reason


def test_deadline_rule_energies_are_the_hand_worked_ones() -> None:
    pick = deadline_at_nominal(cost_model(), 10 * MBPS, RTT, 55.0)
    assert pick.predicted_energy_mj == pytest.approx(136.0)
    assert deadline_at_nominal(cost_model(), 10 * MBPS, RTT, 70.0).predicted_energy_mj == pytest.approx(90.0)
    assert deadline_at_nominal(cost_model(), 10 * MBPS, RTT, 54.0, splits=[0, 2]).split == 2  # 168.8 mJ, 53.6 ms


def test_deadline_rule_without_energy_figures_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="power table"):
        deadline_at_nominal(cost_model(energy=False), 10 * MBPS, RTT, 100.0)


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf")])
def test_bad_inputs_are_config_errors(bad: float) -> None:
    with pytest.raises(ConfigError):
        fixed_from_startup(cost_model(), bad, RTT)
    with pytest.raises(ConfigError):
        deadline_at_nominal(cost_model(), 10 * MBPS, RTT, bad)
    with pytest.raises(ConfigError):
        startup_bandwidth_bps(constant(5.0), window_s=bad)


def test_pick_serialises_for_the_results_json() -> None:
    d = fixed_from_startup(cost_model(), 10 * MBPS, RTT).to_dict()
    assert d["rule"] == RULE_STARTUP and d["split"] == 1 and d["bandwidth_bps"] == 10 * MBPS
    assert "kept for the run" in str(d["reason"])


# ---------------------------------------------------------------- the bench's wiring (peer_runs.py)

def fake_bench(nominal_mbps: float | None = None, deadline_ms: float | None = None) -> SimpleNamespace:
    """What peer_runs reads of the harness: the cost model, the measured splits, two options."""
    opts = SimpleNamespace(peer_nominal_mbps=nominal_mbps, deadline_ms=deadline_ms)
    return SimpleNamespace(cost=cost_model(), splits=[0, 1, 2, 3], opts=opts)


def test_the_report_names_the_rules_as_the_rules_name_themselves() -> None:
    assert list(PEER_RULES) == [RULE_STARTUP, RULE_DEADLINE]
    assert [p.rule for p in peer_runs.pick(cost_model(), [0, 1, 2, 3], 10 * MBPS, 10 * MBPS, RTT, 70.0)] == \
        list(PEER_RULES)


def test_a_rule_that_cannot_pick_is_filed_with_its_reason_not_raised() -> None:
    picks = peer_runs.pick(cost_model(energy=False), [0, 1, 2, 3], 10 * MBPS, 10 * MBPS, RTT, 70.0)
    assert picks[0].split == 1 and picks[0].error is None
    assert picks[1].split is None and "power table" in (picks[1].error or "")


def test_trace_picks_measure_the_slice_start_and_default_to_the_trace_mean() -> None:
    """The slice delivers 10 Mbps for its first second, then 1 Mbps; the whole trace averages 1 Mbps."""
    slice_trace = step([(0.0, 10.0), (1.0, 1.0)])
    whole = constant(1.0)
    a, b = peer_runs.trace_picks(fake_bench(), slice_trace, whole, RTT, 70.0)  # type: ignore[arg-type]
    assert (a.split, a.bandwidth_bps) == (1, pytest.approx(10 * MBPS))
    assert (b.split, b.bandwidth_bps) == (3, pytest.approx(1 * MBPS))  # 1 Mbps: k = 2 (68) and 3 (60); k = 3 cheaper
    _, b = peer_runs.trace_picks(fake_bench(nominal_mbps=10.0), slice_trace, whole, RTT, 55.0)  # type: ignore[arg-type]
    assert (b.split, b.bandwidth_bps) == (1, 10 * MBPS)  # --peer-nominal-mbps wins over the trace's mean


def test_rule_rows_reuse_the_replays_fixed_run_of_their_split() -> None:
    entry = TraceResult(runs={"adaptive": TraceRunResult(mean_ms=40.0),
                              "k=1": TraceRunResult(split=1, mean_ms=51.0, deadline_misses=2, counted_frames=20),
                              "k=3": TraceRunResult(split=3, skipped="too slow on the wire")})
    entry.peers = [PeerPickResult(rule=RULE_STARTUP, split=1), PeerPickResult(rule=RULE_DEADLINE, split=3)]
    ran: list[tuple[str, int]] = []
    peer_runs.rule_runs(entry, lambda label, k: ran.append((label, k)) or TraceRunResult(split=k))  # type: ignore[func-returns-value]
    assert not ran  # both splits were in the replay: nothing run twice
    startup = entry.runs[RULE_STARTUP]
    assert startup.reused_from == "k=1" and startup.mean_ms == 51.0 and startup.deadline_misses == 2
    assert entry.runs["k=1"].reused_from is None  # the fixed run itself is unchanged
    assert entry.runs[RULE_DEADLINE].skipped == "too slow on the wire"  # not run for the rule either
    assert [p.run for p in entry.peers] == ["k=1", "k=3"]


def test_a_rule_split_the_replay_did_not_run_is_run_under_the_rules_label() -> None:
    entry = TraceResult(runs={"k=0": TraceRunResult(split=0, mean_ms=90.0)})
    entry.peers = [PeerPickResult(rule=RULE_STARTUP, split=2), PeerPickResult(rule=RULE_DEADLINE, error="no table")]
    ran: list[tuple[str, int]] = []

    def run_fixed(label: str, k: int) -> TraceRunResult:
        ran.append((label, k))
        return TraceRunResult(split=k, mean_ms=55.0)

    peer_runs.rule_runs(entry, run_fixed)
    assert ran == [(RULE_STARTUP, 2)]
    assert entry.runs[RULE_STARTUP].mean_ms == 55.0 and entry.runs[RULE_STARTUP].reused_from is None
    assert entry.runs[RULE_DEADLINE].skipped and "no table" in entry.runs[RULE_DEADLINE].skipped


def test_condition_picks_take_their_figures_from_the_fixed_runs() -> None:
    sweep = Sweep(10.0, RTT, fixed={1: FixedRun(split=1, median_ms=52.0, p95_ms=58.0),
                                    3: FixedRun(split=3, median_ms=61.0, p95_ms=63.0)})
    a, b = peer_runs.condition_picks(fake_bench(), sweep)  # type: ignore[arg-type]
    assert (a.split, a.run, a.median_ms, a.p95_ms) == (1, "k=1", 52.0, 58.0)  # start-up = the rate: 10 Mbps
    # no --deadline-ms: 100 ms; at 10 Mbps nominal k = 1, 2, 3 meet it and k = 3 spends least
    assert (b.split, b.run, b.median_ms, b.bandwidth_bps) == (3, "k=3", 61.0, 10 * MBPS)
    _, b = peer_runs.condition_picks(fake_bench(nominal_mbps=1.0, deadline_ms=50.0), sweep)  # type: ignore[arg-type]
    assert (b.split, b.feasible, b.bandwidth_bps) == (3, False, 1 * MBPS)  # nothing within 50 ms at 1 Mbps
