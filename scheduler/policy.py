"""Split policies: given what the agent knows now, which split should the next frame use?

The agent asks `choose()` once per frame - or `plan()`, which also weighs what is
already queued on the edge and the uplink (scheduler/paths.py) - and reports every
finished frame to `observe()`. A policy only picks among `candidates` (splits
whose heads are loaded and warm on the agent).

How `plan()` and the hysteresis share the work: every split is evaluated by its
finish given t_e and t_l (scheduler/paths.py), what it adds to the following frames,
and the hedge risk; hysteresis (margin, dwell) then picks *which offload split* is the
cloud path - among the splits below K, by those figures, so that the cut does not flap
on a noisy estimate. Each frame then goes down the cloud path or runs locally (K),
whichever wins under the objective, with no hysteresis: a frame never queues behind a
busy link to honour a dwell. Under min-latency a frame may also be raced - run here and sent
as k = 0 at once, the first result counts - when that finishes it sooner on a risky or
untried link (`_races`, paths.race_times, risk.untried_share).

What every policy is - the `SplitPolicy` protocol and the `FrameOutcome` it learns
from - and the fixed policy are in scheduler/policy_base.py.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.cost import CostModel, Prediction
from scheduler.link import LinkEstimator, LinkState
from scheduler.objectives import Decision, PolicyConfig, active_objective, decide, objective_of
from scheduler.paths import PathChoice, Timeline, delay_of_edge_run, evaluate, path_times
from scheduler.policy_base import FrameOutcome
from scheduler.risk import OffloadRisk

log = logging.getLogger(__name__)


#: how fast the learnt camera spacing follows a change of frame rate
SPACING_ALPHA = 0.3


@dataclass
class _Sticky:
    """One hysteresis state: the split held, frames since the last switch, switches so far."""

    label: str
    current: int | None = None
    dwell: int = 0
    switches: int = 0


class AdaptivePolicy:
    """Chooses the split from live link estimates, with hysteresis and a minimum dwell."""

    def __init__(self, cfg: PolicyConfig, cost: CostModel, link: LinkEstimator,
                 battery: Callable[[], float | None] | None = None):
        self.cfg = cfg
        self.cost = cost
        self.link = link
        self.battery = battery
        self.name = cfg.name
        self._split = _Sticky("split")  # choose(): among every candidate
        self._cloud = _Sticky("cloud path")  # plan(): among the offload splits (k < K)
        self.last_decision: Decision | None = None
        #: the predictions and objective of the last choose(): what a frame's hedge time is made of
        self._last_preds: dict[int, Prediction] = {}
        self._last_objective = cfg.name
        #: plan(): how often offloaded frames were hedged lately (what a cloud path risks)
        self.risk = OffloadRisk()
        #: a usual overrun of the cloud path over its prediction (ms; the agent sets it: its margin learner)
        self.overrun_ms: Callable[[], float] = lambda: 0.0
        #: plan(): the last frame's arrival and the learnt camera spacing (s)
        self._last_arrived: float | None = None
        self._spacing: float | None = None
        #: plan(): when the last plan expected the next frame (None: none before that one ended)
        self._next_at: float | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> int | None:
        return self._split.current

    @property
    def dwell(self) -> int:
        return self._split.dwell

    @property
    def switches(self) -> int:
        return self._split.switches + self._cloud.switches

    @property
    def cloud_path(self) -> int | None:
        """The offload split plan() currently sends frames down (None before the first plan)."""
        return self._cloud.current

    def _active_objective(self) -> str:
        level = self.battery() if self.cfg.battery_low_pct is not None and self.battery is not None else None
        return active_objective(self.cfg, level)

    def choose(self, candidates: list[int]) -> int:
        with self._lock:
            state = self.link.estimate()
            preds = self.cost.predict_all(candidates, state)
            name = self._active_objective()
            decision = decide(preds, name, self.cfg)
            self.last_decision = decision
            self._last_preds = {p.split: p for p in preds}
            self._last_objective = name
            return self._hold(self._split, decision, preds, candidates, name, state)

    def plan(self, frame_id: int, candidates: list[int], now: float, timeline: Timeline,
             arrived: float | None = None, next_arrival: float | None = None) -> PathChoice:
        """The path for one frame, booked on `timeline`: local (K) or the cloud path, whichever
        finishes it first under the objective given when the edge and the uplink are free. The
        cloud path is the offload split held (`_hold`) on the same finish-time figures.

        `now`: the caller's clock (s). `arrived`: when the frame came from the camera (default
        now); the latency and the deadline count from it, and the spacing of arrivals is
        learnt. `next_arrival`: when the next frame is expected (now if one is already
        waiting; math.inf: none before this one ends, e.g. one frame in flight); default
        arrived + the learnt spacing. Each path is charged what it adds to
        the next frames' latencies (paths.evaluate), so the edge and the link share the load
        when neither alone keeps up. Ties go to the earlier own finish, then local.
        Afterwards hedge_prediction(split) is counted from the head's start including the
        wait for the link."""
        with self._lock:
            state = self.link.estimate()
            arrived = now if arrived is None else arrived
            next_at = self._next_at = self._expect_next(arrived, now, next_arrival)
            name = self._active_objective()
            local_k = self.cost.num_layers
            preds = self.cost.predict_all(candidates, state)
            by_split = {p.split: p for p in preds}
            # the following frames may go local or down the cloud path held now (paths.evaluate)
            follow = [by_split[k] for k in (local_k, self._cloud.current) if k in by_split]
            t_e, t_l = timeline.free_at(now, state.bandwidth_bps)
            evaluated = evaluate(preds, local_k, now, t_e, t_l, arrived, next_at, self._spacing or 0.0,
                                 follow=follow, race=self._races(name))
            options = {o.prediction.split: o for o in evaluated if not o.raced}
            race = next((o for o in evaluated if o.raced), None)
            risk_ms, risk_why, untried_ms = self._risk_ms(now, preds, local_k, next_at is not None,
                                                          stalled=timeline.hedged_in_flight() > 0)
            effective = {k: o.prediction.with_latency(o.latency_ms + o.delay_ms + (0.0 if k == local_k else risk_ms))
                         for k, o in options.items()}
            paths = [effective[local_k]] if local_k in effective else []
            if len(effective) > len(paths):
                # the cloud path: every split below K by its finish time as things stand (counted
                # from now, so that a wait all paths share does not dilute the margin), held
                waited_ms = (now - arrived) * 1000
                offload = [e.with_latency(e.latency_ms - waited_ms) for k, e in effective.items() if k != local_k]
                held = self._hold(self._cloud, decide(offload, name, self.cfg), offload,
                                  [p.split for p in offload], name, state)
                paths.append(effective[held])
            allowance = 0.0
            if len(paths) == 2 and name == "min-latency":
                # offload instead of running here only for a gain that survives a usual overrun: the
                # cloud path's latency plus the OVERRUN_QUANTILE of recent (actual - predicted)
                # (the agent's margin learner); a few ms' gain is otherwise a coin toss against a
                # local run that varies by under a ms (experiment: docs/agent-experiments.md)
                allowance = max(0.0, self.overrun_ms())
                if allowance > 0:
                    paths[1] = paths[1].with_latency(paths[1].latency_ms + allowance)
            decision = decide(paths, name, self.cfg,
                              tie=lambda p: (options[p.split].times.finish_s, p.split != local_k, p.split))
            chosen = options[decision.split]
            # racing: when it finishes the frame sooner, the following frames counted; against a
            # cloud path with the risk of an untried link (scheduler/risk.py, untried_share). No
            # threshold: what it saves in expectation is small, what it saves is the frames an
            # outage would make late (a margin of 10% stopped it after ~17 clean answers, and the
            # next frame was caught: docs/agent-experiments.md)
            against = effective[decision.split].latency_ms
            if decision.split != local_k:
                against += untried_ms - risk_ms
            raced = race is not None and race.latency_ms + race.delay_ms < against
            if raced:
                assert race is not None
                chosen = race
            p, t = chosen.prediction, chosen.times
            sent = path_times(p, local_k, now, t_e, t_l)  # the offload's own times (raced: k = 0's)
            if raced:
                timeline.edge_reserved(frame_id, now, by_split[local_k].head_ms)
            elif p.split != 0:  # k = 0 runs nothing on the accelerator (paths.path_times)
                timeline.edge_reserved(frame_id, now, p.head_ms)
            if not t.local:
                timeline.link_sent(frame_id, p.wire_bytes, sent.head_done_s, p.transfer_ms,
                                   p.latency_ms - p.head_ms - p.transfer_ms, planned=True)
            self.last_decision = decision
            self._last_objective = name
            self._last_preds = {q.split: q for q in preds}
            if math.isfinite(sent.finish_s):
                self._last_preds[p.split] = p.with_latency((sent.finish_s - sent.head_start_s) * 1000)
            local = next((q.latency_ms for q in preds if q.split == local_k), None)
            reason = (("raced: run here and sent as k = 0 at once; " if raced else "") +
                      f"{decision.reason}; edge free in {(t_e - now) * 1000:.0f} ms, "
                      f"link in {(t_l - now) * 1000:.0f} ms" + (f", hedge risk {risk_ms:.0f} ms ({risk_why})" if risk_ms else ""))
            if log.isEnabledFor(logging.DEBUG):  # `splitpoint -v edge`: why each frame went where it did
                # with the estimate and the allowance, so that a cloud path weighed far above what it
                # measures can be taken apart (docs/agent-experiments.md, the long slices at 549d331)
                log.debug("frame %d: k=%d%s, %s; weighed %s ms (its wait, what it adds to the next frames, the risk%s);"
                          " link estimate %s%s",
                          frame_id, p.split, " raced" if raced else "", reason,
                          ", ".join(f"k={q.split} {q.latency_ms:.1f}" for q in paths),
                          ", the overrun allowance" if name == "min-latency" and len(paths) == 2 else "",
                          state, f"; overrun allowance {allowance:.1f} ms" if allowance > 0 else "")
            return PathChoice(frame_id, p.split, t.finish_s, chosen.latency_ms, t.head_start_s,
                              sent.transfer_start_s, p, local, reason, raced)

    def _races(self, name: str) -> bool:
        """Whether plan() may race a frame (run it here and send it as k = 0 at once): `race`,
        under min-latency only, and without an energy budget - it spends radio energy on a
        result the local run may give anyway."""
        return self.cfg.race and name == "min-latency" and self.cfg.energy_budget_mj is None

    def _risk_ms(self, now: float, preds: list[Prediction], local_k: int, followed: bool,
                 stalled: bool) -> tuple[float, str, float]:
        """What sending a frame to the cloud risks, in expected ms, and where p came from (under
        the lock): the chance of a hit (scheduler/risk.py: recent offloads hedged, or the link's
        recent drops) times what a hit costs - its local run, head(K), after the wait, and, when
        frames follow, that run's time taken from them on the edge. The hedge's wait itself (the
        margin) is left out: the figure is a floor. `stalled`: a hedged frame's answer is still
        out, so a new offload's bytes would queue behind a transfer already later than the worst
        the agent expected: p is taken as 1. The third figure is the same with p at least
        `OffloadRisk.untried_share` (a hit assumed beside the clean prior): what racing is
        weighed against (plan)."""
        if stalled:
            p, why = 1.0, "a hedged frame's answer is still out"
        else:
            drops, samples = self.link.drop_counts(self.risk.window_s)
            hedged, dropped = self.risk.shares(now, (drops, samples))
            p = max(hedged, dropped)
            if hedged >= dropped:
                why = f"{hedged:.0%} of recent offloads hedged"
            else:  # the offloads in time are counted again only for this text, not on every plan
                cleans = self.risk.counts(now)[1]
                why = (f"{drops} of {samples} recent link samples dropped"
                       + (f", {cleans:.0f} offloads in time" if cleans >= 0.5 else ""))
        local = next((q.head_ms for q in preds if q.split == local_k), None)
        if local is None or not math.isfinite(local):
            return 0.0, "", 0.0
        cost = local * (2 if followed else 1)
        untried = max(p, self.risk.untried_share(now)) * cost
        return (p * cost, why, untried) if p > 0 else (0.0, "", untried)

    def _expect_next(self, arrived: float, now: float, next_arrival: float | None) -> float | None:
        """When the next frame is expected (under the lock); learns the camera's spacing."""
        last, self._last_arrived = self._last_arrived, arrived
        if last is not None and arrived > last:
            gap = arrived - last
            self._spacing = gap if self._spacing is None else (1 - SPACING_ALPHA) * self._spacing + SPACING_ALPHA * gap
        if next_arrival is not None:
            return None if math.isinf(next_arrival) else max(now, next_arrival)
        return None if self._spacing is None else max(now, arrived + self._spacing)

    def hedge_delay_ms(self, now: float, timeline: Timeline, run_ms: float) -> float:
        """What a hedge's local run of `run_ms`, queued on the edge now, adds to the frames that
        follow (ms; paths.delay_of_edge_run): the charge plan() gives its own choices, with the
        paths the following frames may take (local and the cloud path held) under the link as
        estimated now - a link the hedge's silence has censored sends them local, so the run
        costs them its whole length. 0 when the last plan expected no next frame."""
        with self._lock:
            if self._next_at is None:
                return 0.0
            state = self.link.estimate()
            local_k = self.cost.num_layers
            follow = [p for p in self.cost.predict_all([k for k in (local_k, self._cloud.current) if k is not None],
                                                       state) if math.isfinite(p.latency_ms)]
            t_e, t_l = timeline.free_at(now, state.bandwidth_bps)
            run_end = max(now, t_e) + run_ms / 1000
            return delay_of_edge_run(follow, local_k, max(now, self._next_at), self._spacing or 0.0, t_e, run_end, t_l)

    def hedge_prediction(self, k: int) -> tuple[float, bool, float] | None:
        """What the last choose() or plan() expected of split `k`: (latency ms, False, server ms),
        or under min-energy with a deadline (deadline_ms, True, server ms) - the split was picked
        to meet it, so the deadline is when to stop waiting. Server ms = queue + tail (what is
        not the link). None when it made no finite prediction for `k`."""
        with self._lock:
            p = self._last_preds.get(k)
            server = 0.0 if p is None else p.queue_ms + p.tail_ms
            if self._last_objective == "min-energy" and self.cfg.deadline_ms is not None:
                return float(self.cfg.deadline_ms), True, server
            if p is None or not math.isfinite(p.latency_ms):
                return None
            return p.latency_ms, False, server

    def _meets_constraints(self, p: Prediction | None) -> bool:
        if p is None:
            return False
        if self.cfg.deadline_ms is not None and p.latency_ms > self.cfg.deadline_ms:
            return False
        if self.cfg.energy_budget_mj is not None and p.energy_mj is not None and p.energy_mj > self.cfg.energy_budget_mj:
            return False
        return True

    def _hold(self, sticky: _Sticky, decision: Decision, preds: list[Prediction], candidates: list[int],
              name: str, state: LinkState) -> int:
        """Hysteresis (under the lock): keep `sticky.current` unless `decision` gains more than the
        margin after the dwell, or the current split breaks a constraint."""
        sticky.dwell += 1
        if sticky.current is None or sticky.current not in candidates:
            self._switch(sticky, decision, state, None)
            return decision.split
        if decision.split == sticky.current:
            return sticky.current
        by_split = {p.split: p for p in preds}
        obj = objective_of(name, self.cfg)
        now = obj(by_split[sticky.current]) if sticky.current in by_split else float("inf")
        gain = (now - decision.value) / now if now > 0 else 0.0
        current_ok = self._meets_constraints(by_split.get(sticky.current))
        if sticky.dwell < self.cfg.min_dwell_frames and current_ok:
            return sticky.current
        if gain <= self.cfg.margin and current_ok:
            return sticky.current
        self._switch(sticky, decision, state, gain)
        return decision.split

    def _switch(self, sticky: _Sticky, decision: Decision, state: LinkState, gain: float | None) -> None:
        previous = sticky.current
        sticky.current = decision.split
        sticky.dwell = 0
        if previous is not None:
            sticky.switches += 1
        log.info(
            "%s %s -> %d (%s; predicted gain %s) with link %s",
            sticky.label, previous, decision.split, decision.reason, "n/a" if gain is None else f"{gain:.0%}", state,
        )

    def observe(self, outcome: FrameOutcome) -> None:
        if outcome.where != "cloud":
            return
        if outcome.rpc_ms is not None:
            self.link.observe_transfer(outcome.wire_bytes, outcome.rpc_ms, outcome.server_total_ms or 0.0,
                                       outcome.server_queue_ms)
        if outcome.at is None:
            return
        if outcome.rpc_ms is None:  # a hedge firing, or a raced frame's answer given up
            if outcome.hedged and (not outcome.raced or outcome.lost):
                self.risk.hit(outcome.at)
        elif not outcome.hedged or outcome.raced:
            # an answer; a plain hedged frame's was counted when its hedge fired. A raced frame's
            # hedge is not a hit: the race could not cost its frame, and its k = 0 answer a few ms
            # late (27.6 kB on a 3 Mbps link) counted as one kept TMobile-LTE-short on the edge for
            # its first 4-8 s. Late by head(K) or more costs what a hit does; less, that share of one
            local_ms = self.cost.edge.latency_ms(self.cost.num_layers, self.cost.stat)
            self.risk.add(outcome.at, outcome.late_ms / local_ms if local_ms > 0 else float(outcome.late_ms > 0))

    def describe(self) -> str:
        return f"{self.name} (margin {self.cfg.margin:.0%}, dwell {self.cfg.min_dwell_frames} frames)"
