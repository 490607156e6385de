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

import pytest

from scheduler.cost import FRAME_OVERHEAD_BYTES, CostModel, EnergyModel
from scheduler.link import LinkState
from scheduler.profiles import Profile, SplitProfile, StageStats
from splitpoint.bench.peers import (
    RULE_DEADLINE,
    RULE_STARTUP,
    deadline_at_nominal,
    fixed_from_startup,
    startup_bandwidth_bps,
)
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
