"""The deadline watchdog: frames held for the cloud past their hedge time.

Every `period_s` (20 ms), and sooner when a held frame's hedge is due sooner, `tick` looks at
the frames held in the ledger:

- an overdue transfer is evidence now, not when it ends: the uplink is at most
  bytes / (elapsed - the server's expected time), a censored sample for the link estimate;
- hedge = "auto": a frame past its hedge time is hedged (edge_node/cloud_paths.py: its
  local run is queued, the frame stays held and the first result wins) - once the local run
  is predicted to finish before the cloud answer: when the edge is free at t_e (the
  planner's timeline) + head(K) < now + the time the frame has already spent on the wire
  (an overdue transfer takes at least as long again, as the timeline assumes) + the server's
  expected time. A hedge that cannot win only takes the accelerator from the next frames'
  heads: on an edge slower than the camera that made every other frame late, and the
  camera's queue grew without bound. And once it can win, it must win by more than it costs
  the frames that follow (`hedge_delay_ms`: the policy's charge for keeping the edge busy,
  scheduler/paths.py `delay_of_edge_run`): on an edge that needs 77 of every 100 ms, a hedge
  that saved its frame nothing (the answer came 40 ms into the run) or that the answer would
  have matched made the next two frames late (docs/agent-experiments.md). On a dead link the saving
  grows by a ms per ms of silence while the cost is at most a few head(K)s, so the hedge fires
  at most about head(K) + the edge's queue + that cost after its hedge time;
- hedge = "off": a frame past frame_deadline_ms is claimed and falls back, as before hedging;
- a stream that answered nothing for 2 x frame_deadline_ms while frames sent on it wait is
  given up (CloudPaths.check_silence: the session backs off, its frames run here).

The loop sleeps until the next check is due (`tick` returns how long): the period, or less,
to the earliest time a held frame can be hedged (`_hedge_due`) - a hedge fires at its time,
not up to a period later. A 20 ms tick alone fires a hedge up to 20 ms late, and each of those
ms is added to the hedged frame and to every frame queued behind its local run.

The watchdog only queues local runs (on the local executor) and never runs one itself:
a full-model run here would delay every other frame's hedge. Tests call `tick()`
directly with a manual clock and no thread (period_s None).

Locks: none of its own; it takes the ledger's and CloudPaths' leaf locks one at a time.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from scheduler.link import LinkEstimator
from scheduler.paths import Timeline

from .cloud_paths import CloudPaths
from .ledger import FrameLedger
from .pending import Pending

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name

#: the shortest sleep between two checks: a hedge due now is checked soon, never in a busy loop
MIN_WAIT_S = 0.001


class DeadlineWatchdog:
    def __init__(self, cloud: CloudPaths, ledger: FrameLedger, link: LinkEstimator, hedge_mode: str,
                 clock: Callable[[], float], timeline: Timeline, period_s: float | None = 0.02,
                 local_ms: Callable[[], float] = lambda: 0.0,
                 hedge_delay_ms: Callable[[float, float], float] = lambda now, run_ms: 0.0):
        self.cloud = cloud
        self.ledger = ledger
        self.link = link
        self.hedge_mode = hedge_mode
        self.clock = clock
        self.period_s = period_s
        self.timeline = timeline  # the agent's one timeline
        self.local_ms = local_ms  # head(K) as the policy predicts it (0: unknown, hedge at the hedge time)
        #: (now, run ms) -> what a local run queued now adds to the frames that follow (the policy's)
        self.hedge_delay_ms = hedge_delay_ms
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.period_s is None:  # driven by the caller's tick()
            return
        self._thread = threading.Thread(target=self._loop, name="deadline-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _loop(self) -> None:
        assert self.period_s is not None
        wait = self.period_s
        while not self._stopped.wait(wait):
            try:
                wait = self.tick()
            except Exception:  # noqa: BLE001 - a dead watchdog would leave every unanswered frame waiting
                log.exception("deadline watchdog: check failed")
                wait = self.period_s

    def tick(self) -> float:
        """One check of the held frames; returns how long to wait before the next (s): the
        period, or less when a held frame's hedge is due sooner (math.inf: no period and
        nothing due)."""
        now = self.clock()
        overdue = {p.frame.index: p for _, p in self.ledger.held() if now > p.deadline}
        overdue.update((p.frame.index, p) for p in self.cloud.late_frames() if now > p.deadline)
        for p in overdue.values():
            # overdue is evidence now: the uplink is at most bytes / (elapsed - the server's expected time)
            self.link.observe_censored(p.wire_bytes, (now - p.sent) * 1000 - p.server_ms)
        if self.hedge_mode == "off":
            def past_deadline(p: Pending) -> bool:
                return now > p.deadline

            for _, p in self.ledger.claim_where(past_deadline):
                self.cloud.fallback(p, p.hedge.reason())
        else:
            # a raced frame's local run is queued already: its hedge is news for the planner
            # only, at its hedge time, also when its local result has been recorded
            for fid, p in overdue.items():
                if not p.hedged and (p.raced or self._hedge_pays(p, now)):
                    self.cloud.hedge(fid, p)
        self.cloud.check_silence(now)
        self.cloud.forget_late(now)
        return self._next_wait(now)

    def _next_wait(self, now: float) -> float:
        """The time to the next check: the period, or to the earliest hedge still to come. A
        frame whose due time has passed without a hedge (the estimate was early: the edge got
        busier) is left to the period, so a wrong estimate costs a period, never a busy loop."""
        period = math.inf if self.period_s is None else self.period_s
        t_e, _ = self.timeline.free_at(now)
        waiting = [p for _, p in self.ledger.held()] + [p for p in self.cloud.late_frames() if p.raced]
        waiting = [p for p in waiting if not p.hedged]
        run_ms = self.local_ms()
        cost_ms = self.hedge_delay_ms(now, run_ms) if waiting and self.hedge_mode != "off" else 0.0
        dues = [self._hedge_due(p, t_e, (run_ms + cost_ms) / 1000) for p in waiting]
        soonest = min((d for d in dues if d >= now), default=math.inf)
        return min(period, max(MIN_WAIT_S, soonest - now))

    def _hedge_due(self, p: Pending, t_e: float, local_s: float) -> float:
        """The earliest time `tick` would hedge (hedge off: give up on) `p`, were the edge's queue
        to stay as it is (free at `t_e`): its hedge time, and for a hedge also no sooner than it
        pays (`_hedge_pays`: the frame has been out longer than head(K) plus what the run costs
        the frames behind it plus the wait for the edge, half of which the link's silence earns
        while the edge works). `local_s`: head(K) + that cost as it is now (s) - an estimate,
        checked again when due."""
        if self.hedge_mode == "off" or p.raced:
            return p.deadline
        lone = p.sent + local_s  # the edge free by then: out longer than head(K) + the cost
        return max(p.deadline, lone if t_e <= lone else (t_e + local_s + p.sent) / 2)

    def _hedge_pays(self, p: Pending, now: float) -> bool:
        """Whether `p`'s local run, started when the edge is free, would finish before its cloud
        answer is expected by more than it delays the frames that follow (see the module doc)."""
        t_e, _ = self.timeline.free_at(now)
        run_ms = self.local_ms()
        local_done = max(now, t_e) + run_ms / 1000
        on_wire = max(0.0, now - p.sent - p.server_ms / 1000)
        saved_ms = (now + on_wire + p.server_ms / 1000 - local_done) * 1000
        return saved_ms > 0 and saved_ms > self.hedge_delay_ms(now, run_ms)
