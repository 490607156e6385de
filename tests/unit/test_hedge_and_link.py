"""The hedge margin learner, the hedge plan, and the robust link estimator: deterministic,
an injected clock, no sleeps."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from helpers import ManualClock as Clock
from helpers import three_split_policy

from edge_node.hedge import HedgePlan, MarginLearner, plan_hedge
from scheduler.link import PROBE_MAX_BYTES, PROBE_MIN_BYTES, LinkEstimator, percentile, probe_bytes

pytestmark = pytest.mark.edge_side


def estimator(**kw: object) -> LinkEstimator:
    kw.setdefault("initial_rtt_ms", 20.0)
    return LinkEstimator(clock=Clock(), **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- margin learner


@pytest.mark.parametrize("values", [[5.0], [3.0, 1.0], [7.0, 1.0, 4.0, 4.0, 9.5, -2.0], list(range(20, 0, -1))])
@pytest.mark.parametrize("q", [0.0, 20.0, 50.0, 90.0, 95.0, 100.0])
def test_percentile_is_numpys_linear_percentile(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50.0)


def test_margin_is_the_floor_until_predictions_prove_wrong() -> None:
    m = MarginLearner(floor_ms=15.0)
    assert m.margin_ms() == 15.0
    for _ in range(20):
        m.observe(actual_ms=90.0, predicted_ms=100.0)  # the policy over-estimates: no wider margin
    assert m.margin_ms() == 15.0


def test_margin_is_a_high_quantile_of_recent_errors() -> None:
    m = MarginLearner(floor_ms=5.0, quantile=0.9, window=10)
    for err in range(10):  # errors 0, 10, ..., 90 ms
        m.observe(100.0 + 10 * err, 100.0)
    assert m.margin_ms() == pytest.approx(81.0)  # numpy's linear 90th percentile of 0..90
    assert m.samples == 10


def test_margin_forgets_old_errors_beyond_its_window() -> None:
    m = MarginLearner(floor_ms=5.0, quantile=1.0, window=4)
    m.observe(600.0, 100.0)  # one outage: a 500 ms miss
    assert m.margin_ms() == 500.0
    for _ in range(4):
        m.observe(110.0, 100.0)
    assert m.margin_ms() == pytest.approx(10.0)


def test_margin_forgets_errors_older_than_its_memory() -> None:
    """Only answers feed the window: an agent its errors keep on the edge would keep them for ever."""
    clock = Clock()
    m = MarginLearner(floor_ms=5.0, quantile=1.0, memory_s=30.0, clock=clock)
    m.observe(140.0, 100.0)
    clock.t += 20.0
    m.observe(120.0, 100.0)
    assert (m.margin_ms(), m.quantile_ms(0.5), m.samples) == (40.0, 30.0, 2)
    clock.t += 10.5  # the first error is 30.5 s old
    assert (m.margin_ms(), m.quantile_ms(0.5), m.samples) == (20.0, 20.0, 1)
    clock.t += 20.0
    assert (m.margin_ms(), m.quantile_ms(0.5), m.samples) == (5.0, 0.0, 0)  # as before any answer


def test_the_server_queue_estimate_is_forgotten_without_answers() -> None:
    """The queue is learnt from answers only: a busy spell's reading must not hold an agent that
    went to the edge off the cloud for good. After ANSWER_MEMORY_S it is back at its start."""
    from scheduler.link import ANSWER_MEMORY_S

    clock = Clock()
    est = LinkEstimator(alpha=0.5, clock=clock)
    est.observe_transfer(500, rpc_ms=30.0, server_ms=20.0, server_queue_ms=16.0)
    est.observe_transfer(500, rpc_ms=30.0, server_ms=20.0, server_queue_ms=16.0)
    assert est.estimate().server_queue_ms == pytest.approx(12.0)
    clock.t += ANSWER_MEMORY_S - 1
    assert est.estimate().server_queue_ms == pytest.approx(12.0)
    clock.t += 2
    assert est.estimate().server_queue_ms == 0.0
    est.observe_transfer(500, rpc_ms=30.0, server_ms=20.0, server_queue_ms=4.0)
    assert est.estimate().server_queue_ms == pytest.approx(2.0)  # the average starts again, as at first


@pytest.mark.parametrize("bad", [{"floor_ms": -1.0}, {"floor_ms": 1.0, "quantile": 0.0}, {"floor_ms": 1.0, "window": 0},
                                 {"floor_ms": 1.0, "memory_s": 0.0}])
def test_margin_learner_refuses_bad_parameters(bad: dict) -> None:
    with pytest.raises(ValueError):
        MarginLearner(**bad)


# ---------------------------------------------------------------------------- hedge plan


def test_hedge_is_prediction_plus_learnt_margin() -> None:
    m = MarginLearner(floor_ms=20.0, quantile=1.0)
    plan = plan_hedge("auto", (80.0, False, 10.0), m, 2000)
    assert plan == HedgePlan(100.0, "predicted", 80.0, 20.0)
    assert "predicted 80 ms" in plan.reason() and "margin 20 ms" in plan.reason()
    m.observe(200.0, 80.0)  # one answer came 120 ms after its prediction
    assert plan_hedge("auto", (80.0, False, 10.0), m, 2000).budget_ms == 200.0


def test_min_energy_deadline_is_the_hedge_time_without_margin() -> None:
    m = MarginLearner(floor_ms=20.0)
    plan = plan_hedge("auto", (300.0, True, 10.0), m, 2000)
    assert (plan.budget_ms, plan.basis) == (300.0, "deadline")
    assert "deadline_ms = 300" in plan.reason()


def test_without_a_prediction_or_with_hedging_off_the_frame_deadline_counts() -> None:
    m = MarginLearner(floor_ms=20.0)
    for plan in (plan_hedge("auto", None, m, 1500), plan_hedge("off", (80.0, False, 0.0), m, 1500)):
        assert (plan.budget_ms, plan.basis) == (1500.0, "frame_deadline_ms")
        assert plan.reason() == "no answer within frame_deadline_ms = 1500"


def test_hedge_is_never_later_than_the_frame_deadline() -> None:
    m = MarginLearner(floor_ms=20.0)
    plan = plan_hedge("auto", (1990.0, False, 0.0), m, 2000)
    assert (plan.budget_ms, plan.basis) == (2000.0, "frame_deadline_ms")


# ---------------------------------------------------------------------------- link estimator


def test_steady_link_is_estimated_without_discount() -> None:
    est = estimator()
    for _ in range(10):
        est.observe_bandwidth(8e6)
    assert est.estimate().bandwidth_bps == pytest.approx(8e6)


def test_over_predictions_discount_the_estimate_until_they_age_out() -> None:
    est = estimator(percentile=None, horizon=3, max_error=0.5)
    for _ in range(10):
        est.observe_bandwidth(10e6)
    est.observe_bandwidth(7.5e6)  # predicted 10 Mbps, got 7.5: a third over
    ewma = 0.7 * 10e6 + 0.3 * 7.5e6
    assert est.estimate().bandwidth_bps == pytest.approx(ewma / (1 + 1 / 3))
    for _ in range(3):  # back to 10: under-predictions do not discount; the big error ages out
        est.observe_bandwidth(10e6)
    s = est.estimate().bandwidth_bps
    assert 9e6 < s <= 10e6


def test_a_collapse_beyond_the_discount_caps_the_estimate_at_the_sample_until_the_next() -> None:
    est = estimator(percentile=None, horizon=3, max_error=0.5)
    for _ in range(10):
        est.observe_bandwidth(10e6)
    est.observe_bandwidth(2e6)  # 5x over: the discount (at most 1/1.5) would plan with 5.7 Mbps
    assert est.estimate().bandwidth_bps == pytest.approx(2e6)
    est.observe_bandwidth(2.5e6)  # still far below the EWMA (5.9 Mbps): capped at this sample
    assert est.estimate().bandwidth_bps == pytest.approx(2.5e6)
    est.observe_bandwidth(10e6)  # the link is back: no cap, the errors still discount
    ewma = ((0.7 * 10e6 + 0.3 * 2e6) * 0.7 + 0.3 * 2.5e6) * 0.7 + 0.3 * 10e6
    assert est.estimate().bandwidth_bps == pytest.approx(ewma / 1.5)


def test_small_or_quick_transfers_are_not_judged() -> None:
    """A 2.3 KB cut that waited 25 ms for a delivery slot on a 5 Mbps link 'measures' 0.7 Mbps;
    a 27 KB frame 45 ms on the wire of a 50 ms round trip is mostly that round trip's jitter.
    Neither is an over-prediction or a collapse; a 27 KB frame 116 ms on the wire is."""
    def after(wire_bytes: int, on_wire_ms: float, rtt_ms: float, base_bps: float) -> float:
        est = LinkEstimator(percentile=None, initial_rtt_ms=rtt_ms, horizon=5, max_error=0.5)
        for _ in range(5):
            est.observe_bandwidth(base_bps)
        est.observe_transfer(wire_bytes, rpc_ms=rtt_ms + on_wire_ms)
        return est.estimate().bandwidth_bps

    def fed(wire_bytes: int, on_wire_ms: float, base_bps: float) -> float:  # into the EWMA only
        return 0.7 * base_bps + 0.3 * wire_bytes * 8 / (on_wire_ms / 1000)

    assert after(2304, 25.0, 10.0, 5e6) == pytest.approx(fed(2304, 25.0, 5e6))  # small
    assert after(27_648, 45.0, 50.0, 50e6) == pytest.approx(50e6)  # within one RTT: a lower bound
    assert after(27_648, 116.0, 50.0, 50e6) == pytest.approx(27_648 * 8 / 0.116)  # judged: capped at it


def test_a_transfer_shorter_on_the_wire_than_an_rtt_is_a_lower_bound_on_the_rate() -> None:
    """A 4.7 KB cut 6 ms on the wire of an 8 Mbps uplink (RTT 10 ms) reads 6.3 Mbps: the wait
    for a delivery slot only adds time. Below the estimate it leaves it alone (fed in, such
    readings held the planned rate at 3-4 Mbps, and the agent on a small cut); above, it raises
    it. Neither holds off the probes: it did not measure the rate (`last_rate_sample`)."""
    clock = Clock()
    est = LinkEstimator(percentile=20.0, initial_rtt_ms=10.0, clock=clock)
    est.observe_probe(49_152, rpc_ms=10.0 + 49_152 * 8 / 8e6 * 1000)  # 8 Mbps
    probed_at = est.last_rate_sample
    clock.t += 1.0
    for _ in range(20):
        est.observe_transfer(4704, rpc_ms=16.0)  # 6 ms on the wire: reads 6.3 Mbps
    assert est.estimate().bandwidth_bps == pytest.approx(8e6)
    assert est.last_rate_sample == probed_at and est.idle_s() == pytest.approx(1.0)
    est.observe_transfer(4704, rpc_ms=13.0)  # 3 ms: at least 12.5 Mbps
    assert est.estimate().bandwidth_bps == pytest.approx(0.7 * 8e6 + 0.3 * 4704 * 8 / 0.003)
    est.observe_transfer(4704, rpc_ms=47.0)  # 37 ms on the wire, longer than an RTT: 1 Mbps, fed
    assert est.estimate().bandwidth_bps < 8e6
    assert est.last_rate_sample == clock.t


def test_an_answer_whose_server_time_exceeds_its_round_trip_teaches_nothing() -> None:
    """A server that says it spent longer on a frame than the frame's whole round trip (or queued
    it longer than it held it) gives timings no link can produce: the estimate is left as it was.
    Taken, 30 kB answered in 40 ms with 45 ms "in the server" read the link at the transfer floor:
    4.8 Gbps; a queue_ms of 10 s held the cloud's predicted latency 10 s high."""
    est = LinkEstimator(percentile=None, initial_rtt_ms=10.0)
    for _ in range(5):
        est.observe_bandwidth(5e6)
    est.observe_transfer(500, rpc_ms=12.0, server_ms=2.0, server_queue_ms=1.0)
    before = est.estimate()
    est.observe_transfer(30_000, rpc_ms=40.0, server_ms=45.0)
    est.observe_transfer(30_000, rpc_ms=40.0, server_ms=5.0, server_queue_ms=10_000.0)
    est.observe_transfer(500, rpc_ms=12.0, server_ms=30.0)  # a small frame: its RTT reading too
    assert est.estimate() == before
    est.observe_transfer(30_000, rpc_ms=40.0 + 48.0, server_ms=5.0)  # a consistent answer still counts
    assert est.estimate().bandwidth_bps < before.bandwidth_bps


def test_a_faster_link_than_predicted_is_not_discounted() -> None:
    est = estimator(percentile=None, horizon=5)
    est.observe_bandwidth(2e6)
    est.observe_bandwidth(20e6)
    assert est.estimate().bandwidth_bps == pytest.approx(0.7 * 2e6 + 0.3 * 20e6)


def test_a_censored_sample_lowers_the_estimate_at_once() -> None:
    est = estimator(percentile=None)
    for _ in range(5):
        est.observe_bandwidth(10e6)
    # 100 kB unanswered after 520 ms with a 20 ms RTT: the uplink is at most 1.6 Mbps
    assert est.observe_censored(100_000, 520.0)
    assert est.estimate().bandwidth_bps == pytest.approx(1.6e6)
    # more time without an answer: a tighter bound
    assert est.observe_censored(100_000, 1020.0)
    assert est.estimate().bandwidth_bps == pytest.approx(0.8e6)
    # no evidence: elapsed within the RTT, a small payload, or a bound above the estimate
    assert not est.observe_censored(100_000, 15.0)
    assert not est.observe_censored(100, 5000.0)
    assert not est.observe_censored(100_000, 60.0)
    assert est.estimate().bandwidth_bps == pytest.approx(0.8e6)


def test_a_real_sample_lifts_the_censored_cap_but_the_error_is_remembered() -> None:
    est = estimator(percentile=None, horizon=5, max_error=0.5)
    for _ in range(5):
        est.observe_bandwidth(10e6)
    est.observe_censored(100_000, 1020.0)  # at most 0.8 Mbps
    est.observe_bandwidth(10e6)  # the link answers at 10 Mbps again
    s = est.estimate().bandwidth_bps
    assert s == pytest.approx(10e6 / 1.5)  # no cap, but the over-prediction still discounts


def test_a_probe_restarts_the_estimate_within_one_probe_period() -> None:
    """The link died (censored), the policy went all-edge, the link came back: the next probe
    (sent after probe_idle_s of no traffic) restores the full estimate."""
    clock = Clock()
    est = LinkEstimator(percentile=20.0, initial_rtt_ms=20.0, clock=clock)
    for _ in range(10):
        est.observe_bandwidth(10e6)
    est.observe_censored(100_000, 2020.0)
    for _ in range(5):
        est.observe_bandwidth(0.5e6)  # the late answers of the outage
    assert est.estimate().bandwidth_bps < 1e6
    clock.t += 2.0
    bulk = probe_bytes(est.estimate().bandwidth_bps)
    est.observe_probe(bulk, rpc_ms=20.0 + bulk * 8 / 10e6 * 1000)  # 10 Mbps on the wire again
    assert est.estimate().bandwidth_bps == pytest.approx(10e6, rel=0.01)
    assert est.idle_s() == 0.0


def _probe(est: LinkEstimator, bps: float) -> None:
    bulk = probe_bytes(est.estimate().bandwidth_bps)
    est.observe_probe(bulk, rpc_ms=20.0 + bulk * 8 / bps * 1000)


def test_probes_that_land_in_drops_are_counted_as_drops_across_restarts() -> None:
    """An agent on the edge probes every 0.5 s; each probe restarts the estimate, but whether it
    came in far below what the one before said is kept for the window."""
    clock = Clock()
    est = LinkEstimator(initial_rtt_ms=20.0, clock=clock)
    # a link that keeps dropping out; 0.6 Mbps after 1 is a collapse (over max_error) but no drop
    for bps in (1e6, 1e6, 0.14e6, 0.8e6, 1e6, 0.6e6, 1e6, 0.2e6, 1e6):
        clock.t += 0.5
        _probe(est, bps)
    assert est.drop_counts(10.0) == (2, 8)  # the first probe is judged against a guess: not counted
    assert est.estimate().bandwidth_bps == pytest.approx(1e6, rel=0.01)  # the estimate itself restarted
    clock.t += 8.0
    assert est.drop_counts(10.0) == (1, 5)  # the first drop left the window
    clock.t += 10.0
    assert est.drop_counts(10.0) == (0, 0)


def test_a_step_to_another_level_is_no_drop() -> None:
    """50 -> 2 -> 50 Mbps (the benchmark's step): the fall is a new level, not a dropout - the
    samples after it stay down - and the rise is above every prediction."""
    clock = Clock()
    est = LinkEstimator(initial_rtt_ms=20.0, clock=clock)
    for bps in (50e6,) * 3 + (2e6,) * 4 + (50e6,) * 2:
        clock.t += 0.5
        _probe(est, bps)
    assert est.drop_counts(10.0) == (0, 4)  # the 2 Mbps ones: at 50 Mbps 48 KiB spend 8 ms on the wire


def test_a_probe_on_the_wire_for_less_than_one_rtt_is_not_judged() -> None:
    """The frames' rule: a reading that short measures the link's timing more than its rate.
    At 50 Mbps and RTT 20 ms probes scatter between 25 and 100 Mbps; none is a drop."""
    clock = Clock()
    est = LinkEstimator(initial_rtt_ms=20.0, clock=clock)
    for bps in (50e6, 100e6, 25e6, 60e6, 100e6, 30e6, 50e6):
        clock.t += 0.5
        _probe(est, bps)
    assert est.drop_counts(10.0) == (0, 0)
    for bps in (2e6, 1e6, 0.4e6, 2e6):  # 32 KiB at 2 Mbps: 131 ms on the wire, judged
        clock.t += 0.5
        _probe(est, bps)
    assert est.drop_counts(10.0) == (1, 4)


def test_a_fall_counts_as_a_drop_until_the_next_sample_shows_it_stayed() -> None:
    clock = Clock()
    est = LinkEstimator(initial_rtt_ms=20.0, clock=clock)
    for bps in (1e6, 1e6, 0.2e6):
        clock.t += 0.5
        _probe(est, bps)
    assert est.drop_counts(10.0) == (1, 2)  # nothing says yet whether the link comes back
    clock.t += 0.5
    _probe(est, 0.2e6)
    assert est.drop_counts(10.0) == (0, 3)  # it stayed: a level, which the estimate follows


def test_probes_are_sized_to_the_estimate_and_cost_less_than_64_kib() -> None:
    assert probe_bytes(0.1e6) == PROBE_MIN_BYTES
    assert probe_bytes(1e9) == PROBE_MAX_BYTES < 64 * 1024
    mid = probe_bytes(6e6)  # 50 ms at 6 Mbps = 37.5 kB
    assert mid == 37_500 and PROBE_MIN_BYTES < mid < PROBE_MAX_BYTES


def test_forcing_still_pins_the_estimate() -> None:
    est = estimator()
    est.observe_censored(100_000, 5000.0)
    est.force(bandwidth_bps=3e6)
    assert est.estimate().bandwidth_bps == 3e6 and est.estimate().forced


def test_a_hedged_answer_widens_the_margin_at_most_twofold() -> None:
    m = MarginLearner(floor_ms=20.0, quantile=1.0)
    m.observe(2100.0, 100.0, cap_ms=MarginLearner.late_cap_ms(20.0))  # answered after a 2 s outage
    assert m.margin_ms() == 40.0
    m.observe(130.0, 100.0, cap_ms=MarginLearner.late_cap_ms(40.0))  # a 30 ms error is learnt in full
    assert m.margin_ms() == 40.0 and m.samples == 2


# ---------------------------------------------------------------------------- the policy's side


def test_the_policy_hedges_with_its_own_prediction_for_the_split() -> None:
    policy = three_split_policy("min-latency")
    k = policy.choose([0, 1, 2])
    latency, is_deadline, server_ms = policy.hedge_prediction(k)
    # k = 1: head 20 + 10096 B at 8 Mbps (10.1 ms) + RTT 20 + tail 5 (k = 0: 81 ms, k = 2: 60 ms)
    assert k == 1 and not is_deadline
    assert latency == pytest.approx(20.0 + 10_096 * 8 / 8e6 * 1000 + 20.0 + 5.0)
    assert server_ms == pytest.approx(5.0)


def test_under_min_energy_with_a_deadline_the_deadline_is_the_hedge_time() -> None:
    policy = three_split_policy("min-energy", deadline_ms=250.0)
    k = policy.choose([0, 1, 2])
    assert policy.hedge_prediction(k)[:2] == (250.0, True)
    assert three_split_policy("min-energy").hedge_prediction(0) is None  # nothing chosen yet: no prediction


# ---------------------------------------------------------------------------- idle probes


def test_idle_probes_start_soon_after_the_last_frame_and_back_off_to_probe_idle_s() -> None:
    """A sag is often short: the first probe of an idle spell comes probe_first_s after the last
    frame, the next ones twice as far apart each, up to probe_idle_s; a frame resets that."""
    from types import SimpleNamespace

    from edge_node.config import EdgeConfig
    from edge_node.session import OffloadSession, SessionCallbacks
    from splitpoint.v1 import offload_pb2

    clock = Clock()
    link = LinkEstimator(clock=clock)
    probes: list[tuple[float, int]] = []

    def probe(size: int, _tail: int, timeout_s: float) -> tuple[float, offload_pb2.ProbeResponse]:
        probes.append((clock.t, size))
        return 20.0 + size * 8 / 10e6 * 1000, offload_pb2.ProbeResponse()

    client = SimpleNamespace(address="fake:1", probe=probe)
    cfg = EdgeConfig(bundle="b", source="s")
    cfg.policy.probe_first_s, cfg.policy.probe_idle_s = 0.5, 2.0
    session = OffloadSession(cfg, "sha256:fake", link, client=client, clock=clock)
    session._callbacks = session.prober._callbacks = SessionCallbacks(lambda s, r: None, lambda s, e: 1, wants_probes=lambda: True)

    def bulk_probe_times(until: float) -> list[float]:
        """Probe times (step 1/8 s: exact in binary) after the clock's now, up to `until`."""
        start = clock.t
        while clock.t < until:
            session.prober.maybe_probe()
            clock.t += 0.125
        return [t - start for t, size in probes if size > 0 and t >= start]

    assert bulk_probe_times(100.125) == [0.0]  # at start
    link.observe_transfer(30_000, 44.0)  # a frame crossed at t = 100.125
    assert bulk_probe_times(108.125) == [0.5, 1.5, 3.5, 5.5, 7.5]
    clock.t = 108.25
    link.observe_transfer(30_000, 44.0)  # offloading again, then idle again: back to 0.5 s
    assert bulk_probe_times(110.25) == [0.5, 1.5]


def test_idle_probes_keep_to_probe_first_s_while_frames_run_on_the_edge() -> None:
    """An all-edge agent whose camera keeps giving frames probes every probe_first_s (a link that
    came back is seen within that), and backs off to probe_idle_s only once frames stop."""
    clock = Clock()
    link = LinkEstimator(clock=clock)
    probes: list[float] = []
    session, _, planned = _session_with_fake_probes(clock, link, _steady_probe(clock, 20.0, 10e6, probes))

    def run(until: float, frames: bool) -> list[float]:
        """Probe times after now up to `until`, a frame planned (run locally) every 1/8 s if `frames`."""
        start = clock.t
        while clock.t < until:
            session.prober.maybe_probe()
            clock.t += 0.125
            planned[0] += frames
        return [t - start for t in probes if t >= start]

    assert run(100.125, frames=False) == [0.0]  # at start
    link.observe_transfer(30_000, 44.0)  # the last frame that crossed, at t = 100.125
    assert run(104.125, frames=True) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]  # all-edge, camera live
    assert run(110.125, frames=False) == [0.0, 0.5, 1.5, 3.5, 5.5]  # camera stopped: backs off


def test_small_cuts_quick_on_the_wire_do_not_hold_off_the_probes() -> None:
    """Frames that crossed in less than an RTT on the wire did not measure the rate: an agent
    sending them keeps being probed every probe_first_s, as an all-edge one is; a frame that
    measured the rate starts an idle spell as before."""
    clock = Clock()
    link = LinkEstimator(clock=clock, initial_rtt_ms=10.0)
    probes: list[float] = []
    session, _, planned = _session_with_fake_probes(clock, link, _steady_probe(clock, 10.0, 8e6, probes))

    def run(until: float, wire_bytes: int, rpc_ms: float) -> list[float]:
        """Probe times after now up to `until`, a frame sent every 1/8 s with this time on the link."""
        start = clock.t
        while clock.t < until:
            session.prober.maybe_probe()
            clock.t += 0.125
            if wire_bytes:
                planned[0] += 1
                link.observe_transfer(wire_bytes, rpc_ms)
        return [t - start for t in probes if t >= start]

    assert run(100.125, 0, 0.0) == [0.0]  # at start
    # 6 ms on the wire of a 10 ms RTT: the first probe a second after the one at start (no frame
    # was planned by then: the gap had doubled), then every probe_first_s
    assert run(102.125, 4704, 16.0) == [0.875, 1.375, 1.875]
    assert run(104.125, 27_744, 40.0) == []  # 30 ms on the wire: each frame measured the rate


def _steady_probe(clock, rtt_ms: float, bps: float, bulks: list[float]):  # noqa: ANN001, ANN202 - test fake
    """A client's probe on a steady link: the RTT exchange (size 0) takes rtt_ms, a bulk probe
    rtt_ms + its bytes at `bps`; each bulk probe's start time is appended to `bulks`."""
    from splitpoint.v1 import offload_pb2

    def probe(size: int, _tail: int, timeout_s: float) -> tuple[float, offload_pb2.ProbeResponse]:
        if size:
            bulks.append(clock.t)
        return rtt_ms + size * 8 / bps * 1000, offload_pb2.ProbeResponse()

    return probe


def _session_with_fake_probes(clock, link, probe):  # noqa: ANN001, ANN202 - test fakes
    """An OffloadSession whose client answers probes with `probe(size, tail, timeout_s)` and hands
    out one fake stream; probes every 0.5 s while frames come (2 s idle). Returns the session, its
    stream and the agent's frames-planned counter (a one-item list the test bumps)."""
    from types import SimpleNamespace

    from edge_node.config import EdgeConfig
    from edge_node.session import OffloadSession, SessionCallbacks

    stream = SimpleNamespace(accepting=True, age_s=0.0)
    client = SimpleNamespace(address="fake:1", probe=probe, open_stream=lambda *a: stream)
    cfg = EdgeConfig(bundle="b", source="s")
    cfg.policy.probe_first_s, cfg.policy.probe_idle_s = 0.5, 2.0
    session = OffloadSession(cfg, "sha256:fake", link, client=client, clock=clock)
    planned = [0]
    session._callbacks = session.prober._callbacks = SessionCallbacks(lambda s, r: None, lambda s, e: 1, wants_probes=lambda: True,
                                          frames_planned=lambda: planned[0])
    return session, stream, planned


def test_probes_beside_offloaded_frames_are_not_judged_for_drops() -> None:
    """An offloading agent learns its risk from its frames' outcomes (hedges, late answers); the
    link's drops are the evidence of an agent that has none. A probe that meets a drop counts
    for an all-edge agent, not for one that sent frames since its last probe."""
    from splitpoint.v1 import offload_pb2

    def drops_seen(offloading: bool) -> tuple[int, int]:
        clock = Clock()
        link = LinkEstimator(clock=clock, initial_rtt_ms=10.0)
        rates = iter([8e6, 8e6, 0.5e6, 8e6, 8e6])  # the third probe lands in a drop

        def probe(size: int, _tail: int, timeout_s: float) -> tuple[float, offload_pb2.ProbeResponse]:
            return 10.0 + size * 8 / (next(rates) if size else 1.0) * 1000, offload_pb2.ProbeResponse()

        session, stream, planned = _session_with_fake_probes(clock, link, probe)
        for _ in range(5):
            session.prober.maybe_probe()
            for _ in range(4):  # four frames until the next probe is due (1/8 s: exact in binary)
                clock.t += 0.125
                planned[0] += 1
                if offloading:  # a cut sent (and quick on the wire: it does not hold off the probes)
                    assert session.current_stream() is stream
        return link.drop_counts(10.0)

    # all-edge: judged, but not the first (against a guess) nor the last (the re-probe of the rise)
    assert drops_seen(offloading=False) == (1, 3)
    assert drops_seen(offloading=True) == (0, 0)


def test_probes_beside_offloaded_cuts_only_while_they_are_cheap() -> None:
    """Beside frames sent as quick cuts a probe holds the link they use: it is sent while its
    bytes cross in PROBE_TARGET_MS at the estimate (32 KiB: 5.2 Mbps), not on a slower link,
    where the all-edge agent's probes (no frame sent) still go out every probe_first_s."""

    def probe_times(link_bps: float, offloading: bool, frames_until: float = 103.0) -> list[float]:
        clock = Clock()
        link = LinkEstimator(clock=clock, initial_rtt_ms=10.0)
        bulks: list[float] = []
        session, stream, planned = _session_with_fake_probes(clock, link, _steady_probe(clock, 10.0, link_bps, bulks))
        while clock.t < 103.0:
            session.prober.maybe_probe()
            clock.t += 0.125
            planned[0] += 1
            if offloading and clock.t < frames_until:  # a 4.7 KB cut, under 10 ms on the wire of a 10 ms RTT
                assert session.current_stream() is stream
                link.observe_transfer(4704, 10.5 + 4704 * 8 / link_bps * 1000)
        return [t - 100.0 for t in bulks]

    # the one at start, a second after it (no frame had been planned by then), then every 0.5 s
    every_half_second = [0.0, 1.0, 1.5, 2.0, 2.5]
    assert probe_times(8e6, offloading=True) == every_half_second
    assert probe_times(4e6, offloading=True) == [0.0]  # the one at start: no frame had been sent
    # frames stop (the agent went all-edge): the probes resume at once, not never
    assert probe_times(4e6, offloading=True, frames_until=101.5) == [0.0, 1.5, 2.0, 2.5]
    assert probe_times(4e6, offloading=False) == every_half_second


class SteppedUplink:
    """A fake client whose uplink rate steps at given times: a probe takes the clock along for
    its round trip and its bulk transfer, at whatever rate holds while each bit is sent."""

    def __init__(self, clock: Clock, steps: list[tuple[float, float]], rtt_ms: float = 20.0):
        self.address, self.clock, self.steps, self.rtt_s = "fake:1", clock, steps, rtt_ms / 1000
        self.bulk_starts: list[float] = []

    def _rate_and_until(self, t: float) -> tuple[float, float]:
        """The rate at `t` (bit/s) and when it next changes."""
        rate = self.steps[0][1]
        for at, bps in self.steps:
            if at <= t:
                rate = bps
            else:
                return rate, at
        return rate, float("inf")

    def open_stream(self, _lifetime: float, _on_response: object, _on_end: object) -> object:
        """A stream that stays open (the session hands it to every frame)."""
        return type("OpenStream", (), {"accepting": True, "age_s": 0.0})()

    def probe(self, size: int, _tail: int, timeout_s: float) -> tuple[float, object]:
        from splitpoint.v1 import offload_pb2

        start = t = self.clock.t
        if size:
            self.bulk_starts.append(start)
        left = size * 8.0
        while left > 0:
            rate, until = self._rate_and_until(t)
            sent = min(left, rate * (until - t))
            t, left = t + sent / rate, left - sent
        self.clock.t = t + self.rtt_s
        return (self.clock.t - start) * 1000, offload_pb2.ProbeResponse()


def _all_edge_session(uplink: SteppedUplink, link: LinkEstimator):
    """A session whose camera keeps giving frames that run on the edge (planned moves on every
    look), driven the way its prober thread drives it: wait what maybe_probe returns."""
    from edge_node.config import EdgeConfig
    from edge_node.link_prober import PROBE_WAKE_MIN_S
    from edge_node.session import OffloadSession, SessionCallbacks

    cfg = EdgeConfig(bundle="b", source="s")
    cfg.policy.probe_first_s, cfg.policy.probe_idle_s = 0.5, 2.0
    session = OffloadSession(cfg, "sha256:fake", link, client=uplink, clock=uplink.clock)  # type: ignore[arg-type]
    planned = [0]

    def frames_planned() -> int:
        planned[0] += 1
        return planned[0]

    session._callbacks = session.prober._callbacks = SessionCallbacks(lambda s, r: None, lambda s, e: 1, wants_probes=lambda: True,
                                          frames_planned=frames_planned)

    def run_until(until: float) -> None:
        while uplink.clock.t < until:
            wait = min(0.1, max(PROBE_WAKE_MIN_S, session.prober.maybe_probe()))  # moves the clock by its probe
            uplink.clock.t += wait

    run_until.session = session  # type: ignore[attr-defined]
    return run_until


def test_the_bulk_probe_is_reported_to_the_planner_while_it_holds_the_link() -> None:
    """probe_sent when the bulk probe goes out (not the RTT exchange before it), with the transfer
    the estimate predicts for its bytes; probe_done when its reply came, or answered=False when
    it failed - a probe left booked would look like a stalled link for ever."""
    import grpc

    from edge_node.config import EdgeConfig
    from edge_node.session import OffloadSession, SessionCallbacks
    from scheduler.cost import transfer_ms as cost_transfer_ms
    from splitpoint.errors import RemoteError
    from splitpoint.v1 import offload_pb2

    clock = Clock()
    clock.t = 100.0
    uplink = SteppedUplink(clock, [(0.0, 1.1e6)], rtt_ms=10.0)
    link = LinkEstimator(clock=clock, initial_bandwidth_bps=1.1e6)
    events: list[tuple] = []
    session = OffloadSession(EdgeConfig(bundle="b", source="s"), "sha256:fake", link, client=uplink,  # type: ignore[arg-type]
                             clock=clock)
    session._callbacks = session.prober._callbacks = SessionCallbacks(
        lambda s, r: None, lambda s, e: 1, wants_probes=lambda: True,
        probe_sent=lambda size, transfer_ms, after_ms, stall_evidence: events.append(("sent", clock.t, size, transfer_ms, after_ms)),
        probe_done=lambda answered: events.append(("done", clock.t, answered)))
    session.prober.maybe_probe()
    (_, sent_t, size, transfer_ms, after_ms), (_, done_t, answered) = events
    assert sent_t == pytest.approx(100.010)  # after the 10 ms RTT exchange
    assert size == PROBE_MIN_BYTES and transfer_ms == pytest.approx(cost_transfer_ms(size, 1.1e6))  # framing included
    assert after_ms == pytest.approx(50.0)  # the RTT estimate before this probe (the initial guess)
    assert answered and done_t == pytest.approx(sent_t + transfer_ms / 1000 + 0.010)

    def broken(size: int, _tail: int, timeout_s: float) -> tuple[float, offload_pb2.ProbeResponse]:
        if size:
            raise RemoteError(grpc.StatusCode.UNAVAILABLE, "link down")
        return 10.0, offload_pb2.ProbeResponse()

    uplink.probe = broken  # type: ignore[method-assign]
    events.clear()
    session.prober._reprobe, clock.t = True, clock.t + 5.0
    session.prober.maybe_probe()
    assert [e[0] for e in events] == ["sent", "done"] and events[1][2] is False


@pytest.mark.parametrize("target", ["127.0.0.1:1", "127.0.0.1:1,127.0.0.1:2"], ids=["one-server", "two-replicas"])
def test_a_bulk_probe_at_a_hung_replica_is_no_stall_and_is_given_up_at_frame_deadline_ms(target: str) -> None:
    """A probe that never comes back: with one server that is the link, and the probe, overdue,
    holds the planner's link as a stall for its whole timeout (the agent stays on the edge). With
    several, round_robin may have put it on a hung replica while the others stand idle (the
    fleet audit: ~9 s on the edge per such probe): overdue, it is no stall, and the call is
    given up at frame_deadline_ms past what the estimate predicts for it."""
    import grpc

    from edge_node.config import EdgeConfig
    from edge_node.session import OffloadSession, SessionCallbacks
    from scheduler.cost import transfer_ms as cost_transfer_ms
    from splitpoint.errors import RemoteError

    clock = Clock()
    clock.t = 100.0
    uplink = SteppedUplink(clock, [(0.0, 8e6)], rtt_ms=10.0)
    uplink.address = target
    exchange = uplink.probe
    timeouts: list[float] = []

    def hung(size: int, tail: int, timeout_s: float) -> tuple[float, object]:
        timeouts.append(timeout_s)
        if not size:
            return exchange(size, tail, timeout_s)
        clock.t += timeout_s  # nothing comes back: the call ends at its deadline
        raise RemoteError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    uplink.probe = hung  # type: ignore[method-assign]
    link = LinkEstimator(clock=clock, initial_bandwidth_bps=8e6, initial_rtt_ms=10.0)
    held: list[float] = []
    evidence: list[bool] = []  # whether the planner may read the probe, overdue, as a stalled link
    config = EdgeConfig(bundle="b", source="s", frame_deadline_ms=1500)
    session = OffloadSession(config, "sha256:fake", link, client=uplink, clock=clock)  # type: ignore[arg-type]
    session._callbacks = session.prober._callbacks = SessionCallbacks(
        lambda s, r: None, lambda s, e: 1, wants_probes=lambda: True,
        probe_sent=lambda size, transfer_ms, after_ms, stall_evidence: held.append(clock.t) or evidence.append(stall_evidence),
        probe_done=lambda answered: held.append(clock.t) if not answered else None)
    session.prober.maybe_probe()
    sent_t, done_t = held
    size = probe_bytes(8e6)
    whole = config.connect_timeout_s + max(1.0, size * 8 / 100e3)
    if "," not in target:
        assert timeouts == [whole, whole] and done_t - sent_t == pytest.approx(whole)
        assert evidence == [True]
    else:
        predicted_ms = cost_transfer_ms(size, 8e6) + 10.0
        assert done_t - sent_t == pytest.approx((predicted_ms + 1500) / 1000)
        assert timeouts[0] == pytest.approx((10.0 + 1500) / 1000)  # the RTT exchange: its round trip + the same
        assert evidence == [False]  # and while it is out, it holds the planner's link only as predicted
    assert "Deadline Exceeded" in str(session.last_error())  # said, not taken for the link's rate
    assert link.estimate().bandwidth_bps == 8e6


def test_no_probe_starts_while_a_frame_is_planned_for_the_link() -> None:
    """A frame whose head is running has its transfer booked on a link the plan saw free: a
    probe started then would go ahead of it. The prober looks again a probe period later (its
    loop polls at most every 0.1 s), not in 5 ms steps while a stalled frame holds the link."""
    from edge_node.config import EdgeConfig
    from edge_node.session import OffloadSession, SessionCallbacks

    clock = Clock()
    clock.t = 100.0
    uplink = SteppedUplink(clock, [(0.0, 1.1e6)], rtt_ms=10.0)
    busy = [True]
    session = OffloadSession(EdgeConfig(bundle="b", source="s"), "sha256:fake", LinkEstimator(clock=clock),
                             client=uplink, clock=clock)  # type: ignore[arg-type]
    session._callbacks = session.prober._callbacks = SessionCallbacks(lambda s, r: None, lambda s, e: 1, wants_probes=lambda: True,
                                          frames_on_link=lambda: busy[0])
    assert session.prober.maybe_probe() == 0.5 and uplink.bulk_starts == []  # probe_first_s
    busy[0] = False
    session.prober.maybe_probe()
    assert uplink.bulk_starts == [pytest.approx(100.010)]


def test_no_bulk_probe_after_a_frame_was_planned_during_its_rtt_exchange() -> None:
    """The RTT exchange before the bulk takes a round trip: a frame planned then did not see the
    probe (it is booked only when the bulk goes out), so the bulk is skipped; the RTT reading stays."""
    from edge_node.config import EdgeConfig
    from edge_node.session import OffloadSession, SessionCallbacks

    clock = Clock()
    clock.t = 100.0
    uplink = SteppedUplink(clock, [(0.0, 1.1e6)], rtt_ms=10.0)
    busy = [False]
    exchange = uplink.probe

    def planned_meanwhile(size: int, tail: int, timeout_s: float) -> tuple[float, object]:
        out = exchange(size, tail, timeout_s)
        busy[0] = True  # the capture loop planned a frame for the link while the exchange ran
        return out

    uplink.probe = planned_meanwhile  # type: ignore[method-assign]
    link = LinkEstimator(clock=clock)
    sent: list[int] = []
    session = OffloadSession(EdgeConfig(bundle="b", source="s"), "sha256:fake", link, client=uplink,  # type: ignore[arg-type]
                             clock=clock)
    session._callbacks = session.prober._callbacks = SessionCallbacks(lambda s, r: None, lambda s, e: 1, wants_probes=lambda: True,
                                          frames_on_link=lambda: busy[0],
                                          probe_sent=lambda size, transfer_ms, after_ms, stall_evidence: sent.append(size))
    session.prober.maybe_probe()
    assert uplink.bulk_starts == [] and sent == []
    assert link.estimate().rtt_ms == pytest.approx(10.0)  # the exchange's reading is kept


def _reprobes(uplink: SteppedUplink) -> list[float]:
    """Bulk starts that came sooner than a probe period after the one before: re-probes."""
    return [b for a, b in pairwise(uplink.bulk_starts) if b - a < 0.5 - 1e-6]


def test_probes_are_timed_from_their_start_and_keep_a_slow_link_at_most_half_busy() -> None:
    """While frames run on the edge the probe period is probe_first_s from one probe's start to
    the next's (timed from the end, a 2 Mbps probe's own 150 ms stretched it to 0.65 s); a
    probe that takes longer than half the period waits twice its length."""
    clock = Clock()
    uplink = SteppedUplink(clock, [(0.0, 2e6)])
    run_until = _all_edge_session(uplink, LinkEstimator(clock=clock, initial_bandwidth_bps=2e6))
    run_until(105.0)
    gaps = [b - a for a, b in pairwise(uplink.bulk_starts)]
    assert gaps and all(g == pytest.approx(0.5, abs=1e-6) for g in gaps), gaps

    clock = Clock()
    uplink = SteppedUplink(clock, [(0.0, 0.2e6)])  # 32 KiB take 1.33 s
    run_until = _all_edge_session(uplink, LinkEstimator(clock=clock, initial_bandwidth_bps=0.2e6))
    run_until(120.0)
    took = 32 * 1024 * 8 / 0.2e6 + 2 * 0.020
    gaps = [b - a for a, b in pairwise(uplink.bulk_starts)]
    assert gaps and all(g == pytest.approx(2 * took, abs=1e-6) for g in gaps), gaps


@pytest.mark.parametrize("rise_into_probe", [0.0, 0.1, 0.3, 0.5, 0.6, 0.8, 0.95, 1.2, 2.0, 3.0])
def test_a_risen_link_is_seen_within_one_probe_period_wherever_the_rise_falls(rise_into_probe: float) -> None:
    """2 -> 50 Mbps while the agent runs all-edge: the estimate reads the new link within
    probe_first_s (plus the probe's round trips) of the rise, wherever it lands. A probe the rise
    hits early enough to read 1.5x its prediction is repeated at once; one it hits later read
    nearly all of its bytes at the old rate and the next regular probe sees the rise."""
    clock = Clock()
    bulk_s = 32 * 1024 * 8 / 2e6  # a probe's bulk at 2 Mbps (0.131 s), after its 2 x 20 ms exchange
    rise = 101.02 + rise_into_probe * bulk_s  # probes start at 100.0, 100.5, 101.0, ... (bulk 20 ms later)
    uplink = SteppedUplink(clock, [(0.0, 2e6), (rise, 50e6)])
    link = LinkEstimator(clock=clock, initial_bandwidth_bps=2e6)
    run_until = _all_edge_session(uplink, link)
    run_until(rise)
    while link.estimate().bandwidth_bps < 40e6:
        run_until(clock.t + 0.001)
    assert clock.t - rise <= 0.5 + 0.05, f"seen {clock.t - rise:.3f} s after the rise"
    if 0.0 < rise_into_probe <= 0.5:  # the blend read >= 1.5x its prediction: re-probed at once
        assert clock.t - rise < bulk_s + 0.1
    run_until(clock.t + 3.0)
    # One re-probe per rise: after the blend, or confirming a clean reading; none once the
    # readings match the estimate.
    reprobes = _reprobes(uplink)
    assert len(reprobes) == 1 and reprobes[0] > rise, uplink.bulk_starts


def test_a_re_probe_after_a_noisy_high_reading_is_not_counted_as_a_drop() -> None:
    """A reading of 18 Mbps on a 10 Mbps link (a burst let it through) triggers a re-probe; that
    one reading 8 was, judged against the 18 it repeats, a drop the link came back from (the next
    probe reads 10), and counted drops keep the agent on the edge (the hedge risk). A re-probe
    is not judged; the regular probes around it still are (48 KiB at 10 Mbps: 39 ms on the
    wire, over the 20 ms RTT)."""
    clock = Clock()
    uplink = SteppedUplink(clock, [(0.0, 10e6), (101.015, 18e6), (101.05, 8e6), (101.2, 10e6)])
    link = LinkEstimator(clock=clock, initial_bandwidth_bps=10e6)
    run_until = _all_edge_session(uplink, link)
    run_until(104.0)
    assert any(abs(b - 101.02) < 1e-3 for b in uplink.bulk_starts)  # the 18 Mbps reading
    reprobes = _reprobes(uplink)
    assert len(reprobes) == 1 and 101.05 < reprobes[0] < 101.15, uplink.bulk_starts  # read at 8 Mbps
    drops, judged = link.drop_counts(10.0)
    assert drops == 0 and judged == len(uplink.bulk_starts) - 2  # not the first (against a guess), nor the re-probe
    assert link.estimate().bandwidth_bps == pytest.approx(10e6, rel=0.01)


def test_no_re_probe_after_the_first_reading_it_was_compared_with_a_guess() -> None:
    """At start the estimate is the configured guess (10 Mbps): a first reading of 50 Mbps is
    no rise, and a re-probe then ran beside the first frames (one went past its hedge time)."""
    clock = Clock()
    uplink = SteppedUplink(clock, [(0.0, 50e6)])
    link = LinkEstimator(clock=clock, initial_bandwidth_bps=10e6)
    run_until = _all_edge_session(uplink, link)
    run_until(103.0)
    assert len(uplink.bulk_starts) >= 5 and _reprobes(uplink) == [], uplink.bulk_starts


def test_a_re_probe_is_dropped_once_a_frame_is_sent() -> None:
    """2 -> 50 Mbps: the probe after the rise reads it and would be repeated, but the agent
    offloads a frame first: that frame measures the link, and a re-probe would delay it."""
    clock = Clock()
    uplink = SteppedUplink(clock, [(0.0, 2e6), (101.01, 50e6)])  # before the bulk of the probe at 101.0
    link = LinkEstimator(clock=clock, initial_bandwidth_bps=2e6)
    run_until = _all_edge_session(uplink, link)
    run_until(101.0)
    session = run_until.session  # type: ignore[attr-defined]
    while link.estimate().bandwidth_bps < 40e6:
        run_until(clock.t + 0.001)
    assert session.prober._reprobe  # the rise was read: a re-probe is due ...
    assert session.current_stream() is not None  # ... and a frame is sent on the new estimate
    run_until(clock.t + 0.3)
    assert _reprobes(uplink) == [], uplink.bulk_starts


def test_the_margin_learner_gives_an_unfloored_quantile_for_the_planner() -> None:
    from edge_node.hedge import MarginLearner

    learner = MarginLearner(floor_ms=20.0)
    assert learner.quantile_ms(0.75) == 0.0  # nothing learnt: no allowance
    for actual in (51.0, 52.0, 53.0, 58.0):
        learner.observe(actual, 50.0)
    assert learner.quantile_ms(0.75) == pytest.approx(np.percentile([1, 2, 3, 8], 75))
    assert learner.margin_ms() == 20.0  # the hedge's margin keeps its floor


def test_the_prober_stops_probing_once_the_agent_is_told_to_stop() -> None:
    """A probe given up at SIGTERM (Interrupted) was followed by another every poll until the
    session closed, each logged ('link probe failed: CANCELLED: ...', 47 in a long stop): the
    first one given up ends the prober."""
    from edge_node.client import Interrupted

    clock = Clock()
    calls: list[int] = []

    def probe(size: int, _tail: int, timeout_s: float):  # noqa: ANN202 - test fake
        calls.append(size)
        raise Interrupted()

    session, _stream, _planned = _session_with_fake_probes(clock, LinkEstimator(clock=clock), probe)
    assert session.prober.maybe_probe() == float("inf")
    assert session.prober._stop.is_set() and len(calls) == 1


def test_failed_link_probes_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    """A server down or restarting: the agent probes every 0.5-2 s and logged every failed probe
    at INFO (42 lines in a 21 s restart, up to 7,200 an hour of outage, on a drone's journal).
    Now as failed streams: the first at once, then one count a minute, one line when a probe is
    answered again, and the count not yet told when the prober stops. Each is still the
    session's last error, and at DEBUG."""
    import logging

    import grpc

    from splitpoint.errors import RemoteError

    clock = Clock()
    down = [True]
    failed: list[float] = []
    answered = _steady_probe(clock, 10.0, 10e6, [])

    def probe(size: int, tail: int, timeout_s: float):  # noqa: ANN202 - test fake
        if down[0]:
            failed.append(clock.t)
            raise RemoteError(grpc.StatusCode.UNAVAILABLE, f"connection refused {len(failed)}")
        return answered(size, tail, timeout_s)

    session, _stream, _planned = _session_with_fake_probes(clock, LinkEstimator(clock=clock), probe)

    def run_for(seconds: float) -> None:
        end = clock.t + seconds
        while clock.t < end:
            session.prober.maybe_probe()
            clock.t += 0.25

    with caplog.at_level(logging.DEBUG, logger="edge_node.agent"):
        run_for(90.0)  # the server is down for a minute and a half
        outage = len(failed)
        down[0] = False
        run_for(10.0)  # it is back: probes are answered
        down[0] = True
        run_for(5.0)  # down again, within a minute of the last line: counted, not said
        session.prober.stop()  # the run ends: the count not yet told is said
    assert outage >= 45 and session.last_error() is not None  # every 2 s at most; the session still hears of each
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    said = [r.getMessage() for r in lines]
    assert all(r.levelno == logging.INFO for r in lines), said
    counted = sum(failed[0] < t <= failed[0] + 60.0 for t in failed)  # told in the line a minute after the first
    assert said == [
        "link probe failed: UNAVAILABLE: connection refused 1 (further failures: one line every 60 s at most)",
        f"{counted} link probes failed in the last 60 s (last: link probe failed: UNAVAILABLE: connection refused "
        f"{counted + 1})",
        f"link probes work again after {outage} failed in 90 s",
        f"{len(failed) - outage} link probes failed in the last {clock.t - failed[0] - 60.0:.0f} s (last: link probe "
        f"failed: UNAVAILABLE: connection refused {len(failed)})"], said
    assert sum("link probe failed" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG) == len(failed)
