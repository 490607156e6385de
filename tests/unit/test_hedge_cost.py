"""What a hedge's local run costs the frames that follow: the planner's own charge
(paths.delay_of_edge_run, AdaptivePolicy.hedge_delay_ms), which the watchdog weighs against what
the run saves the hedged frame (tests/unit/test_agent_loop.py has the watchdog's side)."""

from __future__ import annotations

import pytest
from helpers import cost_model, policy_for

from scheduler.paths import Timeline, delay_of_edge_run

pytestmark = pytest.mark.edge_side  # no TensorFlow


def model():
    """k = 0 (sends 27.5 KB) or K = 1 (77 ms on the edge), as the documented device's all-edge."""
    return cost_model([27_504, 0], [0.0, 77.0], [10.0, 0.0])


def test_a_run_into_the_next_frames_arrival_costs_it_and_the_one_after() -> None:
    cost = model()
    slow = policy_for(cost, bw=0.1e6).link.estimate()  # k = 0 would take 2.2 s: the next frames go local
    follow = cost.predict_all([0, 1], slow)
    # a 77 ms run from 0: the next frame (at 50 ms) starts at 77 instead of 50 (+27 ms), and
    # the one after (at 150 ms) at 154 instead of 150 (+4 ms)
    assert delay_of_edge_run(follow, 1, 0.05, 0.1, 0.0, 0.077, 0.0) == pytest.approx(31.0)
    # a run over before the next frame comes costs nothing; no next frame, nothing
    assert delay_of_edge_run(follow, 1, 0.1, 0.1, 0.0, 0.077, 0.0) == 0.0
    assert delay_of_edge_run(follow, 1, None, 0.1, 0.0, 0.077, 0.0) == 0.0


def test_followers_that_can_take_the_link_are_delayed_less() -> None:
    cost = model()
    fast = policy_for(cost, bw=20e6).link.estimate()  # k = 0: 11 ms + RTT 50 + 10 = 71 ms, no edge
    follow = cost.predict_all([0, 1], fast)
    assert delay_of_edge_run(follow, 1, 0.05, 0.1, 0.0, 0.077, 0.0) == 0.0  # they go to the link


def test_the_policy_charges_by_the_camera_it_planned_for() -> None:
    cost = model()
    policy = policy_for(cost, bw=0.1e6)
    timeline = Timeline()
    assert policy.hedge_delay_ms(0.0, timeline, 77.0) == 0.0  # nothing planned: no camera known
    for i in range(3):  # a 10 fps camera; each frame runs here (the link is slow)
        t = i * 0.1
        assert policy.plan(i, [0, 1], t, timeline, arrived=t).split == 1
        timeline.edge_done(i, t + 0.077)
    # at 0.28 the edge is free (since 0.277); the next frame comes at 0.3: a 40 ms run now ends
    # at 0.32 and delays it 20 ms, and the one at 0.4 not at all (0.32 + 77 ms < 0.4)
    assert policy.hedge_delay_ms(0.28, timeline, 40.0) == pytest.approx(20.0, abs=0.5)
    # a 77 ms run ends at 0.357: +57 ms for the frame at 0.3, which ends at 0.434: +34 for the next
    assert policy.hedge_delay_ms(0.28, timeline, 77.0) == pytest.approx(91.0, abs=0.5)
    assert policy.hedge_delay_ms(0.28, timeline, 20.0) == pytest.approx(0.0, abs=0.5)  # over at 0.3
    # one frame in flight (an unpaced source in latency mode): no next frame to delay
    policy.plan(3, [0, 1], 0.3, timeline, arrived=0.3, next_arrival=float("inf"))
    assert policy.hedge_delay_ms(0.35, timeline, 77.0) == 0.0
