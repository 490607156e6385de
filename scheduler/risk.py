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

    p = max(hits / (events + prior_clean), drops / (samples + cleans + prior_clean))

(cleans: the offloads answered in time, which say the link delivered as well as a sample that
did not drop does).

Without it an agent that had sat on the edge for 10 s through a link that kept dropping out
read p = 0 at the first good probe, offloaded two frames for a predicted 7 ms gain, and both
were caught in the next drop (Verizon-EVDO-driving at 1044 s: 5 deadline misses, all-edge none).

Counted as whole hits, a first answer 2.6 ms late (p = 1/4) kept a Verizon-LTE-short run on the
edge, where no offload could lower the share again, for the whole window (10 s).

The planner (AdaptivePolicy.plan) adds p x (what a hit costs) to each cloud path's predicted
latency, so that on a link that keeps dropping out the edge keeps the frames whose predicted gain
is smaller than the expected loss, and on a steady link (p near 0) nothing changes. With no
offload in the window p is 0 again: the link gets another chance, as after a probe.

With no offload in the window p reads 0 - the link gets another chance - but that chance is a
frame sent blind; racing (scheduler/policy.py: the frame run here and sent as k = 0 at once)
is weighed with `untried_share`, which assumes half a hit beside the clean prior. A raced
frame's hedge is no hit (the race could not cost its frame); its answer counts by how late it
came, as a plain late answer's, and one that never comes counts as a hit then
(AdaptivePolicy.observe). Counted at its hedge time as a whole hit, a k = 0 answer 6 ms late
kept TMobile-LTE-short on the edge for its first 4 s (RTT 10 ms, 792d828).

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
#: hits assumed beside them when racing is weighed (`untried_share`): an offload with none tried
#: lately is taken as a 1-in-5 chance of being caught, not as certainly safe
RACE_PRIOR_HIT = 0.5


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
        `link`: the link's (drops, judged samples) over the same window. p is the larger.
        Offloads answered clean count among the link's samples as ones that did not drop: an
        agent sending cuts too small to be judged (scheduler/link.py) adds no judged sample, and
        without them two drops of its last large frames held p at 2 / 22 for the whole window
        while 25 cuts came back in time (the slow device on Verizon-LTE-short: every other frame
        run here, 25 ms behind the one before)."""
        hits, cleans = self.counts(now)
        drops, samples = link
        return self._share(hits, hits + cleans), self._share(drops, samples + cleans)

    def untried_share(self, now: float, prior_hit: float = RACE_PRIOR_HIT) -> float:
        """The share of offloads hedged with `prior_hit` hits assumed beside the clean prior:
        (hits + prior_hit) / (events + prior_clean + prior_hit), 1/5 with no event in the
        window and about prior_hit / n after n clean ones. `shares` reads 0 with no event, so
        that an agent on the edge gets back to the link; this is what plan() weighs racing
        with (scheduler/policy.py): a link not tried lately is then raced - a probe that
        cannot cost the frame - instead of sent blind, where half the hits of the RTT 10 ms
        trace runs of b5ba038 fell."""
        hits, cleans = self.counts(now)
        return (hits + prior_hit) / (hits + cleans + self.prior_clean + prior_hit)

    def _share(self, bad: float, events: float) -> float:
        total = events + self.prior_clean
        return bad / total if total > 0 else 0.0

    def counts(self, now: float) -> tuple[float, float]:
        """(hits, cleans) in the window: the sum of the hit weights, and the rest of the events."""
        with self._lock:
            self._expire(now)
            hits = sum(w for _, w in self._events)
            return hits, len(self._events) - hits
