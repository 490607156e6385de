"""scheduler/risk.py and how the planner weighs it: the share of recent offloads whose hedge fired."""

from __future__ import annotations

import math

import pytest
from helpers import ManualClock, three_split_policy

from scheduler.paths import Timeline
from scheduler.policy_base import FrameOutcome
from scheduler.risk import OffloadRisk


def test_the_risk_is_the_share_of_hits_in_the_window_with_a_prior_of_clean_frames() -> None:
    risk = OffloadRisk(window_s=10.0, prior_clean=2.0)
    assert max(risk.shares(0.0)) == 0.0
    risk.hit(1.0)
    assert max(risk.shares(1.0)) == pytest.approx(1 / 3)  # one early hit is not certainty
    for t in range(2, 9):
        risk.clean(float(t))
    assert risk.counts(8.0) == (1, 7)
    assert max(risk.shares(8.0)) == pytest.approx(1 / 10)
    assert max(risk.shares(11.5)) == pytest.approx(0.0)  # the hit left the window: a fresh chance
    assert risk.counts(11.5) == (0, 7)


def test_with_no_offload_in_the_window_the_links_drops_fill_in() -> None:
    """The larger of the two shares: offloads hedged, and the link's judged samples dropped."""
    risk = OffloadRisk(window_s=10.0, prior_clean=2.0)
    assert max(risk.shares(0.0, link=(2, 18))) == pytest.approx(2 / 20)
    risk.hit(1.0)
    assert max(risk.shares(1.0, link=(2, 18))) == pytest.approx(1 / 3)
    assert risk.shares(1.0, link=(2, 18)) == pytest.approx((1 / 3, 2 / 20))
    assert max(risk.shares(1.0, link=(0, 0))) == pytest.approx(1 / 3)


def test_a_debug_log_says_why_each_frame_went_where_it_did(caplog: pytest.LogCaptureFixture) -> None:
    policy = three_split_policy("min-latency", race=False)
    policy.link.force(bandwidth_bps=8e6, rtt_ms=20.0)
    _hedge_fired(policy, 0.1)
    with caplog.at_level("DEBUG", logger="scheduler.policy"):
        policy.plan(7, [0, 1, 2], 0.2, Timeline(), next_arrival=math.inf)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("frame 7:"))
    assert line.startswith("frame 7: k=2, ") and "hedge risk 20 ms" in line and "weighed k=2 60.0, k=1 75.1 ms" in line
    # the link estimate the paths were predicted with; no allowance learnt yet, none shown
    assert line.endswith("; link estimate 8.00 Mbps, RTT 20.0 ms, queue 0.0 ms")
    policy.overrun_ms = lambda: 12.0  # the agent's margin learner: a usual overrun of 12 ms
    with caplog.at_level("DEBUG", logger="scheduler.policy"):
        policy.plan(8, [0, 1, 2], 0.3, Timeline(), next_arrival=math.inf)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("frame 8:"))
    assert "k=1 87.1 ms" in line and line.endswith("queue 0.0 ms; overrun allowance 12.0 ms")


def test_offloads_answered_in_time_dilute_the_links_drops() -> None:
    """Cuts too small to be judged add no link sample; their clean answers must still count
    against two drops of the large frames before them, or those hold p for the whole window."""
    risk = OffloadRisk(window_s=10.0, prior_clean=2.0)
    assert risk.shares(1.0, link=(2, 20)) == pytest.approx((0.0, 2 / 22))
    for i in range(25):
        risk.clean(1.0 + i / 10)
    assert risk.shares(3.5, link=(2, 20)) == pytest.approx((0.0, 2 / 47))
    risk.hit(3.6)  # a hit is no clean answer: the hedged share rises, the drop share is as it was
    assert risk.shares(3.6, link=(2, 20)) == pytest.approx((1 / 28, 2 / 47))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        OffloadRisk(window_s=0)


def _hedge_fired(policy, at: float) -> None:  # noqa: ANN001 - test helper
    policy.observe(FrameOutcome(0, 1, "cloud", False, 20.0, 10_096, hedged=True, at=at))


def _answered(policy, at: float, late_ms: float = 0.0) -> None:  # noqa: ANN001 - test helper
    policy.observe(FrameOutcome(0, 1, "cloud", True, 20.0, 10_096, rpc_ms=35.1, server_total_ms=5.0,
                                late_ms=late_ms, at=at))


def test_hedged_offloads_send_a_marginal_frame_to_the_edge_until_they_age_out() -> None:
    """k = 1 is predicted 55 ms, local 60 ms: a gain smaller than what a frame caught by the link
    costs (a local run after the wait) once one offload in three was hedged."""
    policy = three_split_policy("min-latency", race=False)
    policy.link.force(bandwidth_bps=8e6, rtt_ms=20.0)
    assert policy.plan(1, [0, 1, 2], 0.0, Timeline(), next_arrival=math.inf).split == 1
    _hedge_fired(policy, 0.1)
    choice = policy.plan(2, [0, 1, 2], 0.2, Timeline(), next_arrival=math.inf)
    assert choice.split == 2 and "hedge risk 20 ms (33% of recent offloads hedged)" in choice.reason  # 1/3 x 60 ms
    # the late answer of the hedged frame teaches the link only: the hit is not counted twice
    policy.observe(FrameOutcome(0, 1, "cloud", True, 20.0, 10_096, rpc_ms=900.0, hedged=True, late_ms=800.0, at=0.9))
    assert policy.risk.counts(1.0) == (1, 0)
    assert policy.plan(3, [0, 1, 2], 10.5, Timeline(), next_arrival=math.inf).split == 1  # aged out


def test_many_clean_answers_outweigh_one_hit_and_late_answers_count_by_how_late() -> None:
    policy = three_split_policy("min-latency", race=False)
    policy.link.force(bandwidth_bps=8e6, rtt_ms=20.0)
    _hedge_fired(policy, 0.0)
    for i in range(17):
        _answered(policy, 0.1 * i)
    assert max(policy.risk.shares(2.0)) == pytest.approx(1 / 20)  # 3 ms: k = 1 still gains
    assert policy.plan(1, [0, 1, 2], 2.0, Timeline(), next_arrival=math.inf).split == 1
    # answered after its hedge time, not hedged (the local run could not have won): as much a hit
    # as it was late against head(K) = 60 ms; as late as a local run or more, a whole one
    _answered(policy, 2.1, late_ms=15.0)
    assert policy.risk.counts(2.1) == pytest.approx((1.25, 17.75))
    _answered(policy, 2.2, late_ms=600.0)
    assert policy.risk.counts(2.2) == pytest.approx((2.25, 17.75))


def test_a_raced_frames_lateness_counts_by_how_late_its_answer_came_not_as_a_hit() -> None:
    """A race cannot cost its frame: its hedge firing is no hit; its answer counts as a plain
    late answer does (late_ms against head(K) = 60 ms). One that never comes is a whole hit."""
    policy = three_split_policy("min-latency")
    policy.observe(FrameOutcome(0, 0, "cloud", False, 0.0, 50_096, hedged=True, at=0.1, raced=True))
    assert policy.risk.counts(0.1) == (0, 0)
    policy.observe(FrameOutcome(0, 0, "cloud", True, 0.0, 50_096, rpc_ms=95.0, server_total_ms=10.0, hedged=True,
                                late_ms=6.0, at=0.12, raced=True))
    assert policy.risk.counts(0.12) == pytest.approx((0.1, 0.9))
    policy.observe(FrameOutcome(1, 0, "cloud", True, 0.0, 50_096, rpc_ms=60.0, server_total_ms=10.0, at=0.2,
                                raced=True))  # in time: clean
    assert policy.risk.counts(0.2) == pytest.approx((0.1, 1.9))
    policy.observe(FrameOutcome(2, 0, "cloud", False, 0.0, 50_096, hedged=True, at=0.3, raced=True))
    policy.observe(FrameOutcome(2, 0, "cloud", False, 0.0, 50_096, hedged=True, at=2.3, raced=True, lost=True))
    assert policy.risk.counts(2.3) == pytest.approx((1.1, 1.9))


def test_with_frames_following_a_hit_also_costs_them_the_edge() -> None:
    """Paced: the hedged frame's local run takes head(K) of edge time from the frames behind it."""
    policy = three_split_policy("min-latency", race=False)
    policy.link.force(bandwidth_bps=8e6, rtt_ms=20.0)
    for i in range(18):
        _answered(policy, 0.01 * i)
    _hedge_fired(policy, 0.2)  # p = 1/21: 2.9 ms unpaced, 5.7 ms with frames following
    unpaced = policy.plan(1, [0, 1, 2], 0.3, Timeline(), next_arrival=math.inf)
    assert unpaced.split == 1 and "hedge risk 3 ms" in unpaced.reason
    paced = policy.plan(2, [0, 1, 2], 0.3, Timeline(), arrived=0.3, next_arrival=0.8)
    assert "hedge risk 6 ms" in paced.reason


def test_while_a_hedged_frames_answer_is_out_the_risk_is_certain() -> None:
    """A hedge that fired with its answer still to come is a stall in progress: a new offload's
    bytes would queue behind it. Until that answer comes (or none will), the planner counts the
    risk as certain and the frames stay on the edge; the window's share then applies again."""
    policy = three_split_policy("min-latency", race=False)
    policy.link.force(bandwidth_bps=8e6, rtt_ms=20.0)
    for i in range(40):
        _answered(policy, 0.01 * i)
    timeline = Timeline()
    timeline.link_sent(7, 10_096, 0.4, predicted_transfer_ms=10.0, after_ms=25.0)
    timeline.link_hedged(7)
    _hedge_fired(policy, 0.5)  # 1 in 43: 1.4 ms from the window alone, not enough to stay local
    assert timeline.hedged_in_flight() == 1
    choice = policy.plan(1, [0, 1, 2], 0.6, timeline, next_arrival=math.inf)
    assert choice.split == 2
    assert "hedge risk 60 ms (a hedged frame's answer is still out)" in choice.reason
    timeline.edge_done(1, 0.66)
    timeline.link_done(7, 0.7)  # the late answer: the link delivers again
    assert timeline.hedged_in_flight() == 0
    after = policy.plan(2, [0, 1, 2], 0.7, timeline, next_arrival=math.inf)
    assert after.split == 1 and "hedge risk 1 ms" in after.reason


def test_probes_that_keep_landing_in_drops_keep_a_marginal_frame_on_the_edge() -> None:
    """No offload for 10 s, so no hedge to count; the agent's probes read the link at 8 Mbps,
    then 1 Mbps, and so on. At the next good reading a frame would gain 5 ms by k = 1 - less than
    what the drops the probes keep finding would cost it; on a link whose probes read steady the
    same frame goes."""
    clock = ManualClock()
    steady = three_split_policy("min-latency", clock=clock, race=False)
    flaky = three_split_policy("min-latency", clock=clock, race=False)
    for i in range(12):
        clock.t += 0.5
        for policy, bps in ((steady, 8e6), (flaky, 8e6 if i % 3 else 1e6)):
            policy.link.observe_probe(40_000, rpc_ms=20.0 + 40_000 * 8 / bps * 1000)
    assert steady.link.drop_counts(10.0) == (0, 11)
    assert flaky.link.drop_counts(10.0) == (3, 11)  # p = 3 / 13: 14 ms against a 5 ms gain
    now = clock.t
    assert steady.plan(1, [0, 1, 2], now, Timeline(), next_arrival=math.inf).split == 1
    choice = flaky.plan(1, [0, 1, 2], now, Timeline(), next_arrival=math.inf)
    assert choice.split == 2 and "hedge risk 14 ms (3 of 11 recent link samples dropped)" in choice.reason


def test_an_offload_must_gain_more_than_a_usual_overrun() -> None:
    """k = 1 is predicted 55 ms, local 60 ms: with recent answers 4 ms over their predictions it
    still gains; 6 ms over, the 5 ms it would gain is within what the link usually adds."""
    policy = three_split_policy("min-latency", race=False)
    policy.link.force(bandwidth_bps=8e6, rtt_ms=20.0)
    policy.overrun_ms = lambda: 4.0
    assert policy.plan(1, [0, 1, 2], 0.0, Timeline(), next_arrival=math.inf).split == 1
    policy.overrun_ms = lambda: 6.0
    assert policy.plan(2, [0, 1, 2], 0.1, Timeline(), next_arrival=math.inf).split == 2
    policy.overrun_ms = lambda: -30.0  # answers quicker than predicted: no bonus either
    assert policy.plan(3, [0, 1, 2], 0.2, Timeline(), next_arrival=math.inf).split == 1


def test_a_bad_spells_overruns_hold_the_plan_on_the_edge_only_for_the_answer_memory() -> None:
    """Only answers teach the margin learner, and once its overruns keep the plan on the edge
    none come: a soak's agent (race off) ran 29 minutes on the edge of a link as good as when it
    offloaded. Its errors now age out after ANSWER_MEMORY_S, and the plan offloads again."""
    from edge_node.agent import OVERRUN_QUANTILE
    from edge_node.hedge import MarginLearner
    from scheduler.link import ANSWER_MEMORY_S

    clock = ManualClock()
    learner = MarginLearner(floor_ms=20.0, clock=clock)
    policy = three_split_policy("min-latency", race=False)
    policy.link.force(bandwidth_bps=8e6, rtt_ms=20.0)
    policy.overrun_ms = lambda: learner.quantile_ms(OVERRUN_QUANTILE)  # as EdgeAgent._attach_overrun
    assert policy.plan(1, [0, 1, 2], 0.0, Timeline(), next_arrival=math.inf).split == 1  # 55 ms against 60
    for _ in range(20):
        learner.observe(actual_ms=95.0, predicted_ms=55.0)  # a bad spell: answers 40 ms late
    assert policy.plan(2, [0, 1, 2], 0.1, Timeline(), next_arrival=math.inf).split == 2
    clock.t += ANSWER_MEMORY_S - 1  # no answer since: still the evidence there is
    assert policy.plan(3, [0, 1, 2], 0.2, Timeline(), next_arrival=math.inf).split == 2
    clock.t += 2
    assert policy.plan(4, [0, 1, 2], 0.3, Timeline(), next_arrival=math.inf).split == 1
