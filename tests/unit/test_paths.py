"""Per-frame path planning: the resource timeline, finish times, and a discrete-event camera.

The issue's example: an edge needing 125 ms per frame (head(K)) and a 1.2 Mbps uplink needing
184 ms for k = 0 (27 504 + 96 bytes), RTT 50 ms, tail(0) 10 ms: alone, each falls behind a
10 fps camera; together they sustain 1/0.125 + 1/0.184 = 13.4 frames/s.
"""

from __future__ import annotations

import heapq
import itertools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from helpers import cost_model, policy_for

from scheduler.cost import CostModel
from scheduler.link import LinkState
from scheduler.paths import PathChoice, Timeline, evaluate, path_times, race_times
from scheduler.policy import AdaptivePolicy
from scheduler.policy_base import FixedPolicy, FrameOutcome

pytestmark = pytest.mark.edge_side  # no TensorFlow

BW = 1.2e6
RTT = 50.0


def issue_model(**kw) -> CostModel:
    """k = 0 (send the input, 184 ms at 1.2 Mbps) or K = 1 (125 ms on the edge)."""
    return cost_model([27_504, 0], [0.0, 125.0], [10.0, 0.0], **kw)


# --------------------------------------------------------------------------- the timeline


def test_an_empty_timeline_is_free_now() -> None:
    assert Timeline().free_at(5.0) == (5.0, 5.0)


def test_edge_bookings_queue_in_order_and_free_early_when_done() -> None:
    tl = Timeline()
    tl.edge_reserved(1, 0.0, 125.0)
    tl.edge_reserved(2, 0.05, 125.0)
    assert tl.free_at(0.1) == pytest.approx((0.25, 0.1))
    tl.edge_done(1, 0.11)  # finished 15 ms early: frame 2 started then
    assert tl.free_at(0.12)[0] == pytest.approx(0.235)
    tl.edge_done(2, 0.2)
    assert tl.free_at(0.2)[0] == pytest.approx(0.2)


def test_an_edge_run_past_its_prediction_ends_no_earlier_than_now() -> None:
    tl = Timeline()
    tl.edge_reserved(1, 0.0, 100.0)
    tl.edge_reserved(2, 0.0, 100.0)
    assert tl.free_at(0.15)[0] == pytest.approx(0.25)
    assert tl.free_at(0.3)[0] == pytest.approx(0.4)  # 1 overran: 2 cannot have started yet


def test_transfers_queue_behind_each_other_and_the_answer_frees_the_link() -> None:
    tl = Timeline()
    tl.link_sent(1, 27_600, 0.0, 184.0, 60.0)
    tl.link_sent(2, 27_600, 0.1, 184.0, 60.0)
    assert tl.free_at(0.1)[1] == pytest.approx(0.368)
    # 1 is past its transfer but its answer is not due (0.244): the link is not judged overdue
    assert tl.free_at(0.2)[1] == pytest.approx(0.368)
    tl.link_done(1, 0.244)  # answered: its bytes were through at 0.184
    assert tl.free_at(0.25)[1] == pytest.approx(0.368)
    tl.link_done(2, 0.43)
    assert tl.free_at(0.43) == (0.43, 0.43)


def test_a_planned_transfer_waits_for_now_until_it_is_sent() -> None:
    tl = Timeline()
    tl.link_sent(1, 27_600, 0.05, 184.0, 60.0, planned=True)
    assert tl.frames_on_link()  # planned counts: the session starts no probe ahead of it
    assert tl.free_at(0.0)[1] == pytest.approx(0.234)
    assert tl.free_at(0.1)[1] == pytest.approx(0.284)  # the head is late: not sent before now
    tl.link_sent(1, 27_600, 0.07)  # sent at 0.07, predictions kept from the plan
    assert tl.free_at(0.1)[1] == pytest.approx(0.254)


def test_an_overdue_transfer_keeps_the_link_busy_longer_the_longer_it_stalls() -> None:
    tl = Timeline()
    tl.link_sent(1, 27_600, 0.0, 184.0, 60.0)  # answer due at 0.244
    assert tl.free_at(0.24)[1] == pytest.approx(0.24)  # through, answer on its way
    # at 0.3 s it has been on the wire for at least 0.24 s: all 220 800 bits at <= 0.92 Mbps
    assert tl.free_at(0.3)[1] == pytest.approx(0.3 + 0.24)
    assert tl.free_at(1.0)[1] == pytest.approx(1.0 + 0.94)
    # a lower estimate (censored samples in the LinkEstimator) stretches it further
    assert tl.free_at(1.0, bandwidth_bps=0.2e6)[1] == pytest.approx(1.0 + 220_800 / 0.2e6)
    tl.link_sent(2, 27_600, 0.5, 184.0, 60.0)  # queued behind the stalled one
    assert tl.free_at(1.0)[1] == pytest.approx(1.94 + 0.184)
    tl.link_done(1, 1.2)
    assert tl.free_at(1.2)[1] == pytest.approx(1.2 - 0.06 + 0.184)


def test_a_hedged_transfer_counts_as_a_stall_until_its_answer_or_stream_end() -> None:
    tl = Timeline()
    tl.link_sent(1, 27_600, 0.0, 184.0, 60.0)
    tl.link_sent(2, 27_600, 0.1, 184.0, 60.0)
    tl.link_hedged(1)
    tl.link_hedged(99)  # unknown (already answered): ignored
    tl.link_sent(1, 27_600, 0.2)  # a later report of the same send keeps the mark
    assert tl.hedged_in_flight() == 1
    tl.link_hedged(2)
    tl.link_done(1, 0.5)  # the late answer
    assert tl.hedged_in_flight() == 1
    tl.link_done(2, 0.6, answered=False)  # its stream ended
    assert tl.hedged_in_flight() == 0


def test_stream_end_frees_the_link_without_claiming_when() -> None:
    tl = Timeline()
    tl.link_sent(1, 27_600, 0.0, 184.0, 60.0)
    tl.link_done(1, 0.5, answered=False)
    tl.edge_done(99, 0.5)  # unknown frames are ignored
    tl.link_sent(7, 100, 0.5)  # no booking and no prediction (a fixed policy): not tracked
    assert tl.free_at(0.5) == (0.5, 0.5) and tl.pending() == ([], [])


def test_a_probe_holds_the_link_like_a_transfer_until_its_reply() -> None:
    tl = Timeline()
    tl.probe_sent(32_768, 0.0, 238.0, 10.0)  # 32 KiB at 1.1 Mbps
    assert tl.probing() and tl.pending() == ([], []) and not tl.frames_on_link()  # a probe is not a frame
    assert tl.free_at(0.1)[1] == pytest.approx(0.238)
    tl.link_sent(5, 4_000, 0.1, 29.0, 13.5)  # a frame sent meanwhile queues behind it
    assert tl.frames_on_link()
    assert tl.free_at(0.1)[1] == pytest.approx(0.267)
    tl.probe_done(0.25)  # its bytes were through at 0.24
    assert not tl.probing() and tl.free_at(0.25)[1] == pytest.approx(0.269)
    tl.link_done(5, 0.29)
    assert not tl.frames_on_link()
    # a probe that failed frees the link without saying when its bytes were through
    tl.probe_sent(32_768, 1.0, 238.0, 10.0)
    tl.probe_done(1.05, answered=False)
    assert tl.free_at(1.05) == (1.05, 1.05)


def test_a_stalled_probe_keeps_the_link_busy_as_a_stalled_frame_does() -> None:
    tl = Timeline()
    tl.probe_sent(32_768, 0.0, 238.0, 10.0)
    # at 0.5 s it has been on the wire 0.49 s: all 262 144 bits at <= 0.535 Mbps
    assert tl.free_at(0.5)[1] == pytest.approx(0.5 + 0.49)


def test_a_late_probe_to_one_of_several_replicas_holds_the_link_only_for_its_prediction() -> None:
    """round_robin may have put it on a hung replica: overdue, it is no stall (frames are the
    link's evidence there), so from its predicted end the link is free for the next frame."""
    tl = Timeline()
    tl.probe_sent(32_768, 0.0, 238.0, 10.0, stall_evidence=False)
    assert tl.free_at(0.1)[1] == pytest.approx(0.238)  # on the wire, as predicted: frames queue behind it
    assert tl.free_at(0.5) == (0.5, 0.5) and tl.probing()  # still out, but no longer holding the link
    tl.link_sent(5, 4_000, 0.5, 29.0, 13.5)
    assert tl.free_at(0.5)[1] == pytest.approx(0.529)
    tl.probe_done(2.0, answered=False)
    assert not tl.probing()


def test_the_plan_does_not_send_a_frame_into_a_link_a_probe_holds() -> None:
    """The case from the ATT-LTE-driving 496 s slice at RTT 10 ms: head(89) 38 ms + a small cut at
    1.1 Mbps + 13.5 ms beat head(K) 77 ms on a free link, but a 32 KiB probe had 130 ms to go."""
    cost = cost_model([27_504, 3_000, 0], [0.0, 38.0, 77.0], [10.0, 3.5, 0.0])
    policy = policy_for(cost, bw=1.1e6)
    policy.link.force(bandwidth_bps=1.1e6, rtt_ms=10.0)
    free = policy.plan(1, [1, 2], 0.0, Timeline())
    assert free.split == 1 and free.predicted_ms < 77.0
    tl = Timeline()
    tl.probe_sent(32_768, 0.0, 238.0, 10.0)
    busy = policy.plan(2, [1, 2], 0.1, tl)
    assert busy.split == 2


# --------------------------------------------------------------------------- finish times


def test_path_times_follow_the_cost_model() -> None:
    cost = issue_model()
    link = policy_for(cost).link.estimate()
    local, cloud = cost.predict(1, link), cost.predict(0, link)
    t = path_times(local, 1, now=1.0, t_e=1.1, t_l=1.5)
    assert (t.head_start_s, t.finish_s, t.edge_free_s, t.link_free_s) == pytest.approx((1.1, 1.225, 1.225, 1.5))
    t = path_times(cloud, 1, now=1.0, t_e=1.1, t_l=1.5)
    assert t.transfer_start_s == pytest.approx(1.5)
    assert t.finish_s == pytest.approx(1.5 + 0.184 + 0.05 + 0.01)
    assert t.link_free_s == pytest.approx(1.684) and t.edge_free_s == pytest.approx(1.1)


def test_the_next_frame_is_charged_the_wait_a_choice_leaves_it() -> None:
    cost = issue_model()
    link = policy_for(cost).link.estimate()
    preds = cost.predict_all([0, 1], link)
    # edge busy for 100 ms more, link idle, next frame in 100 ms
    by = {o.prediction.split: o for o in evaluate(preds, 1, 0.0, 0.1, 0.0, 0.0, 0.1, lookahead=1)}
    # k = 0 has no head: it does not wait for the busy edge
    assert by[1].latency_ms == pytest.approx(225) and by[0].latency_ms == pytest.approx(244)
    # after local the next (at 0.1) is best sent, 0.1-0.344: 244 ms (local would run 0.225-0.35);
    # after cloud it runs locally 0.1-0.225: 125 ms
    assert by[1].delay_ms == pytest.approx(119) and by[0].delay_ms == 0
    alone = {o.prediction.split: o for o in evaluate(preds, 1, 0.0, 0.1, 0.0, 0.0, None)}
    assert alone[1].delay_ms == alone[0].delay_ms == 0


# --------------------------------------------------------------------------- a camera, simulated


@dataclass
class Done:
    frame: int
    split: int
    arrived: float
    planned: float
    finish: float
    predicted: float  # the plan's finish

    @property
    def latency_ms(self) -> float:
        return (self.finish - self.arrived) * 1000


class World:
    """The true edge (one FIFO accelerator) and uplink (one FIFO pipe); `stall` is a window
    (start, end) in which the uplink carries nothing. Reports events to the timeline as the
    agent would, in time order."""

    def __init__(self, cost: CostModel, stall: tuple[float, float] | None = None):
        self.cost, self.stall = cost, stall
        self.edge = self.link = 0.0
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.events, (t, next(self.seq), fn))

    def run_until(self, t: float) -> None:
        while self.events and self.events[0][0] <= t:
            heapq.heappop(self.events)[2]()

    def transfer_end(self, start: float, seconds: float) -> float:
        if self.stall is None or start + seconds <= self.stall[0] or start >= self.stall[1]:
            return start + seconds
        before = max(0.0, self.stall[0] - start)
        return self.stall[1] + seconds - before

    def execute(self, c: PathChoice, now: float, tl: Timeline, done: list[Done], arrived: float) -> None:
        p = c.prediction
        if p.split == 0:  # no head: the input goes to the link without waiting for the accelerator
            head_start = head_done = now
        else:
            head_start = max(now, self.edge)
            head_done = self.edge = head_start + p.head_ms / 1000
        self.at(head_done, lambda: tl.edge_done(c.frame_id, head_done))
        if p.split == self.cost.num_layers:
            done.append(Done(c.frame_id, p.split, arrived, now, head_done, c.finish_s))
            return
        start = max(head_done, self.link)
        end = self.link = self.transfer_end(start, p.transfer_ms / 1000)
        answer = end + (p.latency_ms - p.head_ms - p.transfer_ms) / 1000
        self.at(head_done, lambda: tl.link_sent(c.frame_id, p.wire_bytes, head_done))
        self.at(answer, lambda: tl.link_done(c.frame_id, answer))
        done.append(Done(c.frame_id, p.split, arrived, now, answer, c.finish_s))


def camera(policy: AdaptivePolicy, candidates: list[int], fps: float, frames: int,
           stall: tuple[float, float] | None = None) -> list[Done]:
    """Frames arrive every 1/fps s and are planned on arrival; the world runs them as planned."""
    tl, world, done = Timeline(), World(policy.cost, stall), []
    for i in range(frames):
        now = i / fps
        world.run_until(now)
        choice = policy.plan(i, candidates, now, tl, arrived=now)
        assert choice.split in candidates and choice.predicted_ms is not None
        world.execute(choice, now, tl, done, now)
    return done


def test_edge_and_link_together_keep_up_with_a_camera_neither_keeps_up_with_alone() -> None:
    both = camera(policy_for(issue_model()), [0, 1], fps=10, frames=300)
    lat = [d.latency_ms for d in both]
    assert max(lat) < 400, max(lat)
    assert statistics.median(lat[-50:]) <= 1.5 * statistics.median(lat[:50])
    uses = [d.split for d in both[50:]]
    assert 0.15 < uses.count(0) / len(uses) < 0.6  # the edge takes 8/s, the link the rest
    longest = max(len(list(g)) for _, g in itertools.groupby(uses))
    assert longest <= 3, f"frames should alternate, not queue behind one path: {uses[:30]}"
    for alone in ([1], [0]):
        lat = [d.latency_ms for d in camera(policy_for(issue_model()), alone, fps=10, frames=300)]
        assert lat[-1] > 3000 and lat[-1] > lat[150] > lat[50]  # the queue grows without bound


def test_a_saturated_camera_gets_about_thirteen_frames_per_second() -> None:
    done = camera(policy_for(issue_model()), [0, 1], fps=30, frames=600)
    ends = sorted(d.finish for d in done)
    rate = (len(ends) - 101) / (ends[-1] - ends[100])  # steady state, past the first frames
    assert rate == pytest.approx(1 / 0.125 + 1 / 0.184, rel=0.05)


def test_an_overdue_transfer_sends_the_next_frames_local_at_once_and_recovery_brings_them_back() -> None:
    stall = (2.0, 4.0)  # the uplink carries nothing for 2 s; the planner is not told
    done = camera(policy_for(issue_model()), [0, 1], fps=10, frames=100, stall=stall)
    stuck = next(d for d in done if d.split == 0 and d.planned <= stall[0] < d.finish)
    assert stuck.finish > stall[1] > stuck.predicted + 1.0
    # from the moment its answer is overdue, every frame runs locally until it comes
    during = [d for d in done if stuck.predicted <= d.planned < stuck.finish]
    assert len(during) >= 15 and all(d.split == 1 for d in during), [(d.frame, d.split) for d in during]
    # the link answers again: frames come back to it within a few frames, and the backlog drains
    after = [d for d in done if d.planned >= stuck.finish]
    assert 0 in [d.split for d in after[:3]]
    assert max(d.latency_ms for d in done[-20:]) < 350


def test_min_energy_meets_the_deadline_by_paying_for_local_runs_only_when_it_must() -> None:
    # local costs 3 W x 125 ms = 375 mJ; cloud 2 W x 184 ms + 1 W x 60 ms = 428 mJ at 1.2 Mbps:
    # at 12 Mbps cloud costs 36.8 + 60 = 97 mJ and takes 18 + 60 = 78 ms.
    cost = issue_model(head_w=[1.0, 3.0])
    policy = policy_for(cost, "min-energy", bw=12e6, deadline_ms=200.0)
    tl = Timeline()
    c = policy.plan(1, [0, 1], 0.0, tl)
    assert c.split == 0 and c.predicted_ms == pytest.approx(78.4, abs=0.1)
    # the link is now busy for 18 ms; frame 2 arrives at once: cloud still meets 200 ms
    assert policy.plan(2, [0, 1], 0.0, tl).split == 0
    # a stalled transfer: the link is busy for long, cloud would miss the deadline -> local
    tl2 = Timeline()
    tl2.link_sent(7, 27_600, 0.0, 18.0, 60.0)
    c = policy.plan(3, [0, 1], 1.0, tl2)
    assert c.split == 1 and "fastest" not in c.reason
    # nothing meets the deadline: the earliest finish. The edge is busy until 0.5 (local ends at
    # 0.625); the overdue transfer holds the link until 0.2 + 0.14 s, and k = 0 needs no edge, so
    # cloud ends at 0.34 + 0.018 + 0.06 = 0.418
    tl3 = Timeline()
    tl3.edge_reserved(8, 0.0, 500.0)
    tl3.link_sent(9, 27_600, 0.0, 18.0, 60.0)
    c = policy.plan(4, [0, 1], 0.2, tl3)
    assert c.split == 0 and c.finish_s == pytest.approx(0.4184) and "fastest" in c.reason


def test_weighted_uses_the_finish_time_as_the_latency() -> None:
    cost = issue_model(head_w=[1.0, 3.0])
    # cloud: 97 mJ, 78 ms; local: 375 mJ, 125 ms. latency_weight 1, energy_weight 1: cloud wins
    policy = policy_for(cost, "weighted", bw=12e6)
    assert policy.plan(1, [0, 1], 0.0, Timeline()).split == 0
    tl = Timeline()
    tl.link_sent(7, 27_600, 0.0, 500.0, 60.0)  # cloud waits 500 ms for the link: 578 + 97 > 125 + 375
    assert policy.plan(2, [0, 1], 0.0, tl).split == 1


def test_ties_go_to_the_earlier_own_finish_then_local() -> None:
    # cloud: 0 + 65 + 50 + 10 = 125 ms = head(K): a tie on the objective and on the finish
    wire = int(65e-3 * BW / 8) - 96
    cost = cost_model([wire, 0], [0.0, 125.0], [10.0, 0.0])
    for cands in ([0, 1], [1, 0]):
        c = policy_for(cost).plan(1, cands, 0.0, Timeline())
        assert c.split == 1 and c.finish_s == pytest.approx(0.125)


def test_a_fixed_policy_stays_fixed_and_books_nothing() -> None:
    tl = Timeline()
    tl.link_sent(7, 27_600, 0.0, 5000.0, 60.0)  # a link busy for five seconds
    c = FixedPolicy(0).plan(1, [0, 1], 0.0, tl)
    assert c == PathChoice(1, 0, reason="fixed split 0")
    assert tl.pending() == ([], [7])


def test_hysteresis_holds_the_cloud_split_while_each_frame_still_picks_local_or_cloud() -> None:
    # k = 1 sends 8 KB after a 60 ms head, k = 0 the input; at 1.2 Mbps k = 1 (169 ms) beats
    # k = 0 (244 ms) and both lose to local (125 ms) on an idle system
    cost = cost_model([27_504, 8_000, 0], [0.0, 60.0, 125.0], [10.0, 5.0, 0.0])
    policy = policy_for(cost, margin=0.1, min_dwell_frames=5)
    assert policy.plan(1, [0, 1, 2], 0.0, Timeline()).split == 2 and policy.cloud_path == 1
    # 3.5 Mbps: k = 0 (123 ms) gains 8% on k = 1 (133.5 ms), under the margin: the cloud path holds
    policy.link.force(bandwidth_bps=3.5e6, rtt_ms=RTT)
    for i in range(6):
        policy.plan(2 + i, [0, 1, 2], 0.0, Timeline())
    assert policy.cloud_path == 1 and policy.switches == 0
    # 10 Mbps: k = 0 (82 ms) gains 32%: the cloud path moves, and the idle frame goes to it
    policy.link.force(bandwidth_bps=10e6, rtt_ms=RTT)
    assert policy.plan(10, [0, 1, 2], 0.0, Timeline()).split == 0
    assert policy.cloud_path == 0 and policy.switches == 1
    # a busy link sends the next frame local at once; the cloud path and its dwell are untouched
    tl = Timeline()
    tl.link_sent(7, 27_600, 0.0, 400.0, 60.0)
    assert policy.plan(11, [0, 1, 2], 0.0, tl).split == 2
    assert policy.cloud_path == 0 and policy.switches == 1


def test_the_cloud_path_is_chosen_by_finish_time_with_the_edge_queue_counted() -> None:
    """Every split below K is weighed by when it would finish as things stand, not by its
    queue-free prediction: with the edge busy, a split whose head would wait behind the local
    runs loses to one that needs no head (seen on the slow device, where k = 53 was held while
    the edge fell behind)."""
    # at 2.4 Mbps on idle resources k = 1 (60 + 26.7 + 55 = 141.7 ms) beats k = 0 (92 + 60 =
    # 152 ms) and both beat local (125 ms)? no: local wins; with the edge busy for 300 ms local
    # ends at 425 ms, k = 1 at 441.7 ms (its head waits), k = 0 at 152 ms (no head)
    cost = cost_model([27_504, 8_000, 0], [0.0, 60.0, 125.0], [10.0, 5.0, 0.0])
    policy = policy_for(cost, bw=2.4e6, margin=0.1, min_dwell_frames=5, race=False)  # the plain paths
    tl = Timeline()
    tl.edge_reserved(8, 0.0, 300.0)
    c = policy.plan(1, [0, 1, 2], 0.0, tl, next_arrival=math.inf)
    assert c.split == 0 and policy.cloud_path == 0
    assert c.finish_s == pytest.approx(0.0 + 27_600 * 8 / 2.4e6 + RTT / 1000 + 0.010)
    # it books nothing on the edge: its "head" ending does not read as the local run's end
    tl.edge_done(1, 0.01)
    assert tl.free_at(0.01)[0] == pytest.approx(0.3)
    # the edge free again: k = 1 gains 7% on k = 0, under the margin: the cloud path holds
    for i in range(6):
        policy.plan(2 + i, [0, 1, 2], 10.0 + i, Timeline(), next_arrival=math.inf)
    assert policy.cloud_path == 0 and policy.switches == 0


def test_hedge_prediction_counts_the_wait_for_the_link() -> None:
    policy = policy_for(issue_model())
    tl = Timeline()
    tl.link_sent(7, 27_600, 0.0, 300.0, 60.0)  # the link is busy until 0.3
    tl.edge_reserved(8, 0.0, 50.0)  # the edge until 0.05
    # local: 0.05 + 0.125 = 0.175; cloud (k = 0, no head): transfer 0.3-0.484, answer 0.544
    c = policy.plan(1, [0, 1], 0.0, tl)
    assert c.split == 1 and c.finish_s == pytest.approx(0.175) and c.local_ms == 125.0
    c = policy.plan(2, [0], 0.0, tl)  # cloud only: no head to wait for, waits for the link until 0.3
    assert c.head_start_s == pytest.approx(0.0) and c.transfer_start_s == pytest.approx(0.3)
    lat, is_deadline, server = policy.hedge_prediction(0)
    assert lat == pytest.approx(544) and not is_deadline and server == 10.0
    assert tl.pending() == ([1, 8], [2, 7])  # frame 2 (k = 0) books only the link


def test_a_frame_waiting_behind_this_one_tips_it_to_the_link() -> None:
    # the edge is busy for 100 ms, the link idle: alone, local (225 ms) beats cloud (244 ms)
    tl = Timeline()
    tl.edge_reserved(8, 0.0, 100.0)
    assert policy_for(issue_model()).plan(1, [0, 1], 0.0, tl).split == 1
    # two more frames waiting (next_arrival = now): after local the edge is busy until 0.225 and
    # they wait longer than after cloud, which leaves the edge to them: local is charged for it
    tl = Timeline()
    tl.edge_reserved(8, 0.0, 100.0)
    c = policy_for(issue_model()).plan(1, [0, 1], 0.0, tl, next_arrival=0.0)
    assert c.split == 0 and c.predicted_ms == pytest.approx(244)


def test_no_next_frame_before_this_one_ends_charges_nothing() -> None:
    """One frame in flight (an unpaced source in latency mode): next_arrival = inf, the plan is
    the frame's own earliest finish, local, where a waiting frame tipped it to the link above."""
    policy = policy_for(issue_model())
    for fid, t in enumerate((0.0, 0.01, 0.02)):  # frames 10 ms apart: a learnt spacing to charge with
        tl = Timeline()
        tl.edge_reserved(8, t, 100.0)
        c = policy.plan(fid, [0, 1], t, tl, arrived=t, next_arrival=math.inf)
        assert c.split == 1 and c.predicted_ms == pytest.approx(225)
    tl = Timeline()
    tl.edge_reserved(8, 0.03, 100.0)
    assert policy.plan(9, [0, 1], 0.03, tl, arrived=0.03).split == 0  # the default charges the next frame


def test_a_dead_link_estimate_plans_local_and_never_nan() -> None:
    policy = policy_for(issue_model(), bw=0.0)  # no bandwidth: every transfer takes forever
    tl = Timeline()
    assert policy.plan(1, [0, 1], 0.0, tl, next_arrival=0.1).split == 1
    c = policy.plan(2, [0], 0.0, tl)  # the link is all there is
    assert c.split == 0 and c.finish_s == math.inf and c.predicted_ms == math.inf
    assert policy.hedge_prediction(0) is None  # no finite prediction to hedge with
    assert tl.free_at(1.0)[1] == math.inf and tl.free_at(1.0)[0] == pytest.approx(1.0)
    tl.link_done(2, 1.0, answered=False)
    assert tl.free_at(1.0) == (1.0, 1.0)


def test_without_following_frames_the_plan_is_the_earliest_finish_written_out() -> None:
    """Random queues on both resources, the issue's model: the chosen path is the argmin of the
    formulas written out again (ties: local)."""
    import random

    rng = random.Random(7)
    cost = issue_model()
    for _ in range(200):
        bw = rng.uniform(0.3e6, 20e6)
        te, tl_ = rng.uniform(0, 0.5), rng.uniform(0, 0.5)
        tl = Timeline()
        tl.edge_reserved(100, 0.0, te * 1000)
        tl.link_sent(101, 27_600, 0.0, tl_ * 1000, 0.0)
        c = policy_for(cost, bw=bw).plan(1, [0, 1], 0.0, tl)
        local = te + 0.125
        cloud = tl_ + 27_600 * 8 / bw + RTT / 1000 + 0.010  # k = 0: no head, no wait for the edge
        assert c.split == (0 if cloud < local else 1), (bw, te, tl_)
        assert c.finish_s == pytest.approx(min(local, cloud))


# --------------------------------------------------------------------------- racing k = 0 beside a local run


def _hit(policy: AdaptivePolicy, at: float) -> None:
    """An offloaded frame's hedge fired (what scheduler/risk.py counts)."""
    policy.observe(FrameOutcome(0, 0, "cloud", False, 0.0, 27_600, hedged=True, at=at))


def test_a_risky_link_races_k0_beside_a_local_run_under_min_latency() -> None:
    """At 12 Mbps k = 0 answers in 78.4 ms, local takes 125 ms. One hedge in three lately: the
    cloud path is charged 1/3 x 125 ms and still wins alone, but run here and sent at once the
    frame ends at the cloud's time with no risk - whichever comes first is its result."""
    policy = policy_for(issue_model(), bw=12e6, race=False)
    _hit(policy, 0.5)
    c = policy.plan(1, [0, 1], 1.0, Timeline(), next_arrival=math.inf)
    assert c.split == 0 and not c.raced and "hedge risk 42 ms" in c.reason  # race = false: the plain paths
    policy = policy_for(issue_model(), bw=12e6)
    _hit(policy, 0.5)
    tl = Timeline()
    c = policy.plan(2, [0, 1], 1.0, tl, next_arrival=math.inf)
    assert c.split == 0 and c.raced and c.reason.startswith("raced: ")
    assert c.finish_s == pytest.approx(1.0784) and c.predicted_ms == pytest.approx(78.4)
    assert c.transfer_start_s == pytest.approx(1.0)
    assert tl.pending() == ([2], [2])  # the local run on the edge, the transfer on the link
    assert tl.free_at(1.0)[0] == pytest.approx(1.125)
    lat, _, _ = policy.hedge_prediction(0)  # the hedge of the transfer: k = 0's own time
    assert lat == pytest.approx(78.4)


def test_an_untried_link_is_raced_and_one_proven_clean_is_not() -> None:
    """No offload in the window: p reads 0 for the plain paths (an agent on the edge must get
    back to the link), but racing is weighed against 1/5 of a hit (risk.untried_share); after
    enough clean answers that share is worth less than what the local run beside the transfer
    takes from the next frame, whose head (k = 1) would wait for it. (Sooner, 100 ms after
    this one, that wait outweighs even the untried share; after the local run, it is free.)"""
    cost = cost_model([27_504, 2_000, 0], [0.0, 20.0, 125.0], [10.0, 5.0, 0.0])
    policy = policy_for(cost, bw=12e6)
    assert policy.risk.untried_share(0.0) == pytest.approx(1 / 5)
    c = policy.plan(1, [0, 1, 2], 0.0, Timeline(), next_arrival=0.11)
    assert c.split == 0 and c.raced and "hedge risk" not in c.reason
    for i in range(30):
        policy.observe(FrameOutcome(i, 1, "cloud", True, 20.0, 2_000, rpc_ms=56.0, server_total_ms=5.0,
                                    at=0.1 + 0.01 * i))
    assert policy.risk.untried_share(0.5) == pytest.approx(0.5 / 32.5)
    c = policy.plan(2, [0, 1, 2], 0.5, Timeline(), next_arrival=0.61)
    assert c.split == 1 and not c.raced


def test_racing_loses_to_the_cloud_alone_when_the_edge_is_wanted_by_the_next_frames() -> None:
    """Frames waiting (next_arrival = now): a local run beside the transfer takes the edge from
    them for 125 ms, more than the risk the race saves."""
    policy = policy_for(issue_model(), bw=12e6)
    _hit(policy, 0.5)
    c = policy.plan(2, [0, 1], 1.0, Timeline(), next_arrival=1.0)
    assert c.split == 0 and not c.raced


@pytest.mark.parametrize("name, cfg", [("min-energy", {}), ("weighted", {}),
                                       ("min-latency", {"energy_budget_mj": 1000.0})])
def test_racing_is_offered_under_min_latency_without_an_energy_budget_only(name: str, cfg: dict) -> None:
    policy = policy_for(issue_model(head_w=[1.0, 3.0]), name, bw=12e6, **cfg)
    _hit(policy, 0.5)
    assert not policy.plan(2, [0, 1], 1.0, Timeline(), next_arrival=math.inf).raced


def test_racing_needs_k0_loaded() -> None:
    cost = cost_model([27_504, 8_000, 0], [0.0, 20.0, 125.0], [10.0, 5.0, 0.0])
    policy = policy_for(cost, bw=12e6)
    _hit(policy, 0.5)
    assert policy.plan(2, [0, 1, 2], 1.0, Timeline(), next_arrival=math.inf).raced
    assert not policy.plan(3, [1, 2], 1.0, Timeline(), next_arrival=math.inf).raced


def test_race_times_are_the_first_result_with_both_resources_taken() -> None:
    cost = issue_model()
    local, sent = (path_times(cost.predict(k, LinkState(12e6, RTT)), 1, 0.0, 0.05, 0.02) for k in (1, 0))
    t = race_times(local, sent)
    assert t.finish_s == pytest.approx(min(local.finish_s, sent.finish_s))
    assert (t.edge_free_s, t.link_free_s) == (local.edge_free_s, sent.link_free_s)
    assert t.transfer_start_s == pytest.approx(0.02) and not t.local
