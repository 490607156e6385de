"""How likely an offloaded frame is to be caught by the link: the share of recent offloads hedged.

A frame sent into a sag or an outage costs far more than its prediction says: its hedge time
passes, it runs locally after all (head(K) on the edge, after the wait), and that run takes the
edge from the frames behind it. The bandwidth estimate cannot see this coming - an outage on a
cellular uplink starts between two frames - but how often it has happened lately can be
counted. `OffloadRisk` counts, over the last `window_s` seconds, the offloaded frames whose
hedge fired (`hit`), those answered in time (`clean`), and answers that came after their hedge
time without a hedge (the local run could not have won): those are part hit, part clean, by how
late they came against what a hit costs (`add(weight)`). `prior_clean` clean frames are added
so that one early hit is not read as certainty:

    p = sum of hit weights / (events + prior_clean)    (over the last window_s seconds)

With no offload in the window that share says nothing, and an agent on the edge stops
offloading, so the link's own record fills in: the share of its judged samples (probes
included) that came in at under half their prediction and that the link came back from (a
dropout, not a new level), over the same window (`LinkEstimator.drop_counts`,
scheduler/link.py), with the same prior. The planner takes
the larger of the two:

    p = max(hits / (events + prior_clean), drops / (samples + prior_clean))

Without it an agent that had sat on the edge for 10 s through a link that kept dropping out
read p = 0 at the first good probe, offloaded two frames for a predicted 7 ms gain, and both
were caught in the next drop (Verizon-EVDO-driving at 1044 s: 5 deadline misses, all-edge none).

Counted as whole hits, a first answer 2.6 ms late (p = 1/4) kept a Verizon-LTE-short run on the
edge, where no offload could lower the share again, for the whole window (10 s).

The planner (AdaptivePolicy.plan) adds p x `hit_cost_ms` (what a hit costs, by the agent's own
hedge rule, to the frame and to the frames queued behind its local run) to the cloud path's
predicted latency, so that on a link that keeps dropping out the edge keeps the frames whose predicted gain
is smaller than the expected loss, and on a steady link (p near 0) nothing changes. With no
offload in the window p is 0 again: the link gets another chance, as after a probe.

What the window cannot say is that the link is stalled *now*: the planner takes p as 1 while a
hedged frame's answer is still out (`Timeline.hedged_in_flight`, scheduler/paths.py).

Pure: times are passed in (seconds, the agent's clock). Thread-safe: hedges fire on the
watchdog thread, answers come on gRPC threads, plans are made on the agent's loop; the lock is a
leaf.
"""

from __future__ import annotations

import threading
from collections import deque

#: how far back hedges are counted: a few seconds, the time scale of a cellular sag or of a
#: run of handovers, not minutes (the link's character changes as the drone moves)
RISK_WINDOW_S = 10.0
#: clean offloads assumed before any is seen: one hit among the first frames reads 1/3, not 1
RISK_PRIOR_CLEAN = 2.0


class OffloadRisk:
    """The share of the last `window_s` seconds' offloaded frames whose hedge fired."""

    def __init__(self, window_s: float = RISK_WINDOW_S, prior_clean: float = RISK_PRIOR_CLEAN):
        if window_s <= 0 or prior_clean < 0:
            raise ValueError(f"window_s must be > 0 and prior_clean >= 0, not {window_s}, {prior_clean}")
        self.window_s = window_s
        self.prior_clean = prior_clean
        self._events: deque[tuple[float, float]] = deque()  # (time s, hit weight), oldest first
        self._lock = threading.Lock()

    def hit(self, now: float) -> None:
        """An offloaded frame's hedge fired: it ran (or will run) locally after waiting."""
        self.add(now, 1.0)

    def clean(self, now: float) -> None:
        """An offloaded frame was answered before its hedge time."""
        self.add(now, 0.0)

    def add(self, now: float, weight: float) -> None:
        """One event that is `weight` a hit (0: clean, 1: a hit; clamped) and the rest clean."""
        with self._lock:
            self._events.append((now, min(1.0, max(0.0, weight))))
            self._expire(now)

    def _expire(self, now: float) -> None:
        """Forget what is older than the window (under the lock)."""
        while self._events and self._events[0][0] < now - self.window_s:
            self._events.popleft()

    def shares(self, now: float, link: tuple[int, int] = (0, 0)) -> tuple[float, float]:
        """(the share of offloads hedged, the share of the link's samples dropped) at `now`;
        `link`: the link's (drops, judged samples) over the same window. p is the larger."""
        hits, cleans = self.counts(now)
        return self._share(hits, hits + cleans), self._share(*link)

    def _share(self, bad: float, events: float) -> float:
        total = events + self.prior_clean
        return bad / total if total > 0 else 0.0

    def counts(self, now: float) -> tuple[float, float]:
        """(hits, cleans) in the window: the sum of the hit weights, and the rest of the events."""
        with self._lock:
            self._expire(now)
            hits = sum(w for _, w in self._events)
            return hits, len(self._events) - hits


def hit_cost_ms(predicted_ms: float, head_ms: float, local_ms: float, hedge_ms: float,
                next_in_ms: float | None = None, spacing_ms: float | None = None,
                followers: int = 2) -> float:
    """What a hit adds, in ms, to the latencies of an offloaded frame and the frames behind it.

    All times count from the frame's head start. `predicted_ms`: its predicted latency;
    `head_ms`: its head, head(k); `local_ms`: head(K); `hedge_ms`: its hedge time (prediction +
    margin, or the deadline). The watchdog hedges at the hedge time and no sooner than the
    frame has been on the link for head(K) (edge_node/watchdog.py: before that its local run
    could not win), so the hedge fires at max(hedge_ms, head_ms + local_ms) and the frame ends
    head(K) later: that minus `predicted_ms` is its own loss.

    The next frame (`next_in_ms` after the head start; None: none expected) finds the edge busy
    with that run until it ends; while the link is stalled it runs on the edge, so each later
    one (every `spacing_ms`, default `next_in_ms`) waits spacing - head(K) less (the edge's
    slack per frame; none when head(K) >= spacing). `followers` of them are counted, the
    planner's own look-ahead (scheduler/paths.py): a drain longer than that is left out.

    Measured on ATT-LTE-driving-2016 at RTT 10 ms (k = 0, predicted about 47 ms, hedge time 75,
    head(K) 77, 10 fps): the hedged frame ended at 159 ms and the next three waited 59, 37 and
    15 ms; this gives 107 + 54 + 31. Only an approximation: a frame that comes before the hedge
    fires takes the edge first, which moves the loss onto the hedged frame."""
    fires = max(hedge_ms, head_ms + local_ms)
    cost = max(0.0, fires + local_ms - predicted_ms)
    if next_in_ms is None:
        return cost
    slack = (next_in_ms if spacing_ms is None else spacing_ms) - local_ms
    wait = fires + local_ms - next_in_ms
    for _ in range(followers):
        if wait <= 0:
            break
        cost += wait
        wait -= slack
    return cost
