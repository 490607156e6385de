"""Link and load estimation from live traffic and probes.

Each answered frame gives one sample: the time from sending to the answer,
minus the time the server says it spent, is RTT + bytes / bandwidth. The RTT is
tracked as a windowed minimum of small exchanges (probes and the smallest
frames), the bandwidth from each frame as bytes / (transfer - RTT).

The bandwidth the scheduler plans with is robust, as robust MPC plans video
bitrates: a base prediction (an EWMA of the samples, optionally capped by a low
percentile of the last `window`) divided by (1 + the largest relative
over-prediction of the last `horizon` samples). A cellular uplink that just fell
from 10 to 2 Mbps made the last predictions 5x too high, so the next ones are
discounted until the errors age out of the horizon. Only over-predictions count:
a link that turned out faster than predicted cost no deadline, and counting it
would slow the recovery. The error is capped at `max_error` (the discount at
1 / (1 + max_error)) so that one collapse does not pin the estimate near zero
long after the base has caught up.

Three more sources of evidence:

- a censored sample (`observe_censored`): a frame still unanswered after
  `elapsed` ms says the uplink is at most bytes / (elapsed - RTT). It caps the
  estimate at once, and counts as an over-prediction, instead of waiting for the
  answer that a dead link never delivers. The next real sample lifts the cap.
- a collapse: a real sample further below the prediction than the discount covers
  (over-predicted by more than `max_error`) caps the estimate at that sample until
  the next one, so that the frames after it are not sent into the fallen link
  while the EWMA comes down.
- a bulk probe (`observe_probe`), sent after an idle spell: what was learnt
  before is stale, so samples, errors and cap restart from it (the probe is judged
  against the prediction first, for the count of drops below). An agent that
  went all-edge on a bad link therefore recovers at the first probe after the
  link does, within one probe period. Probes are sized to the estimate
  (`probe_bytes`: about PROBE_TARGET_MS of traffic, bounded), not a fixed 64 KiB.

How often the link dropped out lately (`drop_counts`): every judged sample, probes included
(re-probes not: edge_node/session.py), is kept with its time and its prediction, over a window
that probes do not restart. A drop is a sample under 1/DROP_FACTOR of its prediction (a transfer that took more than twice as long as
predicted) that the link came back from: the next sample is at 1/DROP_FACTOR of that prediction
or more (or there is no next sample yet). An agent that runs all-edge while probing a link that
keeps dropping out has no offload outcome to learn its risk from (scheduler/risk.py), but its
probes keep landing in the drops: a probe that reads 0.79 Mbps two seconds after one that read
0.14 Mbps is not a link to send a frame into for a 7 ms gain. A step to another level is no
drop: down, the samples after it stay down (the estimate follows; that is not a dropout to
fear once it has); up, each sample came in above its prediction. Counted without the recovery,
the fall of a 50 -> 2 -> 50 Mbps step kept the agent on the edge after the rise (its k = 0
frames at 50 Mbps are too quick to be judged, the slow ones at 2 Mbps are). A drop is deeper
than a collapse (1.5x under, max_error): counted at 1.5x, a fast, noisy LTE uplink came in that
far under often enough that the agent ran 5 s of Verizon-LTE-short on the edge where the
earlier agent had offloaded without a hedge (one paired run; docs/agent-experiments.md).

A frame under JUDGED_MIN_BYTES, or whose time on the wire was shorter than one RTT, measures
the link's timing (a burst allowance, the wait for a delivery slot) more than its rate: its
sample feeds the EWMA and the window but is not judged (no error, no collapse). A probe on the
wire for less than one RTT is not judged either (no drop record).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: payloads below this many bytes are treated as RTT samples (transfer time negligible)
SMALL_BYTES = 2048
MIN_TRANSFER_MS = 0.05
#: a probe carries about this much time of traffic at the current estimate ...
PROBE_TARGET_MS = 50.0
#: ... within these bounds. The floor is set by the link's burst allowance, not the RTT: a
#: shaper (a cellular scheduler, tc's tbf `burst 15kb`) lets its first tens of KB
#: through at once, so a 6 KB probe on a 0.5 Mbps link measured 40-90 Mbps; 32 KiB keeps that
#: error under 2x. The cap keeps every probe cheaper than the 64 KiB ones used before.
PROBE_MIN_BYTES, PROBE_MAX_BYTES = 32 * 1024, 48 * 1024
#: frames smaller than this give samples that are not judged (no error, no collapse): above the
#: 15 KB burst of such a shaper, and half the probe floor (a 96 px input, 27 KB, is judged)
JUDGED_MIN_BYTES = 16 * 1024
#: a judged sample under 1/DROP_FACTOR of its prediction, that the link came back from, is a drop
DROP_FACTOR = 2.0
#: judged samples kept for `drop_counts` (at 10 fps of judged frames, the last ~25 s)
DROP_HISTORY = 256
#: how long answers speak for how late the plan runs (the agent's margin,
#: edge_node/hedge.MarginLearner: each answer's error is dropped at this age) and for the
#: server's queue (its average starts again once no answer has fed it for this long). Only
#: answers teach either, and an agent they keep on the edge gets none: in a soak an agent ran on
#: the edge for 29 minutes of a link as good as when it offloaded, a bad spell having left late
#: answers in the margin (an allowance of 40 ms against a 40 ms local run). Far longer than the
#: 50 answers of the margin's window take while offloading (2-5 s at 10-25 fps)
ANSWER_MEMORY_S = 30.0


@dataclass(frozen=True)
class LinkState:
    bandwidth_bps: float
    rtt_ms: float
    server_queue_ms: float = 0.0
    samples: int = 0
    forced: bool = False

    def __str__(self) -> str:
        return f"{self.bandwidth_bps / 1e6:.2f} Mbps, RTT {self.rtt_ms:.1f} ms, queue {self.server_queue_ms:.1f} ms"


def percentile(values: Iterable[float], q: float) -> float:
    """numpy.percentile's default (linear) of a few values, in plain Python: the agent reads
    the estimate twice a frame, and numpy's call cost about 80 us on 20 values each time -
    half of a 0.32 ms plan - where sorting them costs 2 us (docs/scheduler.md)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def probe_bytes(bandwidth_bps: float) -> int:
    """Payload of a bulk probe: about PROBE_TARGET_MS at `bandwidth_bps`, bounded."""
    want = bandwidth_bps * PROBE_TARGET_MS / 1000 / 8
    return int(min(PROBE_MAX_BYTES, max(PROBE_MIN_BYTES, want)))


class LinkEstimator:
    """Thread-safe estimates of uplink bandwidth, RTT and the server's queue."""

    def __init__(self, alpha: float = 0.3, window: int = 20, percentile: float | None = 20.0,
                 initial_bandwidth_bps: float = 10e6, initial_rtt_ms: float = 50.0,
                 horizon: int = 5, max_error: float = 0.5, clock: Callable[[], float] = time.monotonic):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], not {alpha}")
        if horizon < 0 or max_error < 0:
            raise ValueError(f"horizon and max_error must be >= 0, not {horizon}, {max_error}")
        self.alpha = alpha
        self.percentile = percentile
        self.max_error = max_error
        self._clock = clock
        self._bw = initial_bandwidth_bps
        self._rtt = initial_rtt_ms
        self._queue = 0.0
        self._queue_at: float | None = None  # when an answer last gave the queue (None: never)
        self._bw_samples: deque[float] = deque(maxlen=window)
        self._rtt_samples: deque[float] = deque(maxlen=window)
        #: relative over-predictions of the last `horizon` samples (0 when not over)
        self._errors: deque[float] = deque(maxlen=horizon)
        #: censored: the uplink is at most this (bit/s) until the next real sample
        self._cap: float | None = None
        #: (time s, sample, prediction) of every judged sample, probes included (bit/s); not
        #: restarted by probes
        self._judged: deque[tuple[float, float, float]] = deque(maxlen=DROP_HISTORY)
        self._n = 0
        self._forced: tuple[float | None, float | None] = (None, None)
        self._lock = threading.Lock()
        #: when a sample last measured the rate: a probe, or a frame on the wire for an RTT or
        #: more (edge_node/session.py probes when none has for a while); never: the first
        #: frame triggers a probe
        self.last_rate_sample = float("-inf")

    def observe_rtt(self, rtt_ms: float) -> None:
        """A small exchange (a probe, a tiny frame): its time is the round trip."""
        with self._lock:
            self._rtt_samples.append(rtt_ms)
            self._rtt = min(self._rtt_samples)  # the least-queued recent round trip

    def observe_transfer(self, wire_bytes: int, rpc_ms: float, server_ms: float = 0.0, server_queue_ms: float | None = None) -> None:
        """One answered frame: `rpc_ms` from send to answer, `server_ms` spent inside the server.

        A server time longer than the round trip, or a queue time longer than the server time,
        cannot be: such an answer's timing says nothing about the link and is left out. Taken,
        its transfer time came out at the floor and read the link at gigabits per second (a
        frame the agent then planned to offload at any size), and a queue of 10 s in it kept
        the agent from offloading for dozens of frames."""
        if server_ms > rpc_ms or (server_queue_ms is not None and server_queue_ms > server_ms):
            return
        transfer = max(MIN_TRANSFER_MS, rpc_ms - server_ms)
        if wire_bytes < SMALL_BYTES:
            self.observe_rtt(transfer)
        with self._lock:
            if server_queue_ms is not None:
                self._queue = (1 - self.alpha) * self._queue_now() + self.alpha * server_queue_ms
                self._queue_at = self._clock()
            if wire_bytes >= SMALL_BYTES:
                sample_bps = self._wire_rate(wire_bytes, transfer)
                if self._long_on_wire(transfer):
                    # A small payload measures the link's timing more than its rate: it waits for
                    # the next delivery slot (a 2.3 KB cut that waited 25 ms on a 3 Mbps cellular
                    # link "measures" 0.7 Mbps). It feeds the estimate but is not judged as a
                    # surprise (error, collapse); hedges and scheduler.risk see those frames.
                    self._add_bandwidth(sample_bps, judged=wire_bytes >= JUDGED_MIN_BYTES)
                    self.last_rate_sample = self._clock()
                elif sample_bps > self._base():
                    # On the wire for less than one RTT: its time is mostly the link's timing (a
                    # burst allowance, the wait for a delivery slot), which only adds to it, so
                    # its reading is a lower bound on the rate. Fed as a sample, a 4.7 KB cut's
                    # 6 ms on an 8 Mbps cellular uplink (RTT 10 ms) read 6.3 Mbps; with the 20th
                    # percentile of such readings the agent planned with 3-4 Mbps and kept k = 53
                    # where the 27 KB input (k = 0) would have been 10 ms sooner on most frames
                    # (Verizon-LTE-short, docs/agent-experiments.md). A reading above the estimate
                    # raises it; one below says nothing, and the probes (which such frames do
                    # not hold off: last_rate_sample) measure the rate.
                    self._add_bandwidth(sample_bps, judged=False)

    def observe_probe(self, wire_bytes: int, rpc_ms: float, server_ms: float = 0.0, judged: bool = True) -> float:
        """A bulk probe, sent because no frame measured the link's rate for a while: what was
        learnt before is stale (or, beside small cuts, lower bounds), so the bandwidth estimate
        restarts from this measurement (samples, errors and any censored cap). Without the restart an agent that ran all-edge while the link was bad
        needed many probes (seconds apart) before it offloaded again once the link recovered.
        A probe not `judged` (a re-probe: its prediction is one reading), or on the wire for less
        than one RTT, leaves no drop record.
        Returns the probe's reading (bit/s)."""
        transfer = max(MIN_TRANSFER_MS, rpc_ms - server_ms)
        with self._lock:
            sample_bps = self._wire_rate(wire_bytes, transfer)
            # Judged by the frames' rule: 48 KiB at 50 Mbps spend 8 ms on the wire, and readings
            # that short scatter. In a step-only run an agent that went to the edge at 50 Mbps
            # stayed there for 8 s with its estimate at 55 Mbps and no frame hedged: its probes,
            # the only samples judged there, must have left the drops that held it (not logged).
            judged = judged and self._long_on_wire(transfer)
            self._add_bandwidth(sample_bps, restart=True, judged=judged)
            self.last_rate_sample = self._clock()
        return sample_bps

    def drop_counts(self, window_s: float) -> tuple[int, int]:
        """(drops, judged samples) over the last `window_s` seconds of this estimator's clock: how
        often the link came in at under 1/DROP_FACTOR of its prediction and came back from it."""
        with self._lock:
            since = self._clock() - window_s
            recent = [(sample, predicted) for t, sample, predicted in self._judged if t >= since]
        drops = 0
        for i, (sample, predicted) in enumerate(recent):
            came_back = i + 1 == len(recent) or recent[i + 1][0] * DROP_FACTOR >= predicted
            if sample * DROP_FACTOR < predicted and came_back:
                drops += 1
        return drops, len(recent)

    def observe_bandwidth(self, bandwidth_bps: float) -> None:
        """A direct bandwidth sample (a replayed trace, a test)."""
        with self._lock:
            self._add_bandwidth(bandwidth_bps)

    def observe_censored(self, wire_bytes: int, elapsed_ms: float) -> bool:
        """`wire_bytes` sent `elapsed_ms` ago are still unanswered: the uplink is at most
        bytes / (elapsed - RTT). Caps the estimate now (and counts as an over-prediction);
        True when it lowered it. No evidence while elapsed is within one RTT."""
        with self._lock:
            on_wire = elapsed_ms - self._rtt
            if wire_bytes < SMALL_BYTES or on_wire <= MIN_TRANSFER_MS:
                return False
            from scheduler.cost import bits  # here: scheduler.cost imports this module

            bound = bits(wire_bytes) / (on_wire / 1000)
            before = self._robust()
            if bound >= before:
                return False
            self._cap = bound if self._cap is None else min(self._cap, bound)
            self._note_error(self._base(), bound)
            return True

    def _long_on_wire(self, transfer_ms: float) -> bool:
        """Was the transfer on the wire (its time less one RTT) for at least one RTT, long enough
        to measure the link's rate rather than its timing? Frames and probes alike (under the lock)."""
        return transfer_ms - self._rtt >= self._rtt

    def _wire_rate(self, wire_bytes: int, transfer_ms: float) -> float:
        """bit/s of a transfer that took `transfer_ms` including one round trip (under the lock)."""
        from scheduler.cost import bits  # here: scheduler.cost imports this module

        on_wire = max(MIN_TRANSFER_MS, transfer_ms - self._rtt)
        return bits(wire_bytes) / (on_wire / 1000)

    def _note_error(self, predicted_bps: float, actual_bps: float) -> None:
        """Record how far `predicted_bps` over-shot `actual_bps` (under the lock)."""
        over = max(0.0, (predicted_bps - actual_bps) / actual_bps) if actual_bps > 0 else self.max_error
        self._errors.append(min(self.max_error, over))

    def _add_bandwidth(self, sample_bps: float, restart: bool = False, judged: bool = True) -> None:
        """Feed the EWMA, the percentile window and the error horizon (under the lock);
        `restart` forgets all of them first (not the drops: `drop_counts`); a sample not `judged`
        adds no error, no cap and no drop record."""
        collapsed = False
        if self._n > 0 and judged:  # the initial figure is a guess, not a prediction to judge
            base = self._base()
            self._judged.append((self._clock(), sample_bps, base))
            if not restart:  # a restart's sample is the new estimate: no error, no cap
                self._note_error(base, sample_bps)
                collapsed = sample_bps * (1 + self.max_error) < base
        if restart:
            self._bw_samples.clear()
            self._errors.clear()
        # A real sample supersedes the censored bound. One the discount cannot cover (the link
        # fell further than max_error below the prediction) caps the estimate itself until the
        # next sample: the EWMA would take several frames, each sent into the collapsed link,
        # to come down.
        self._cap = sample_bps if collapsed else None
        self._bw_samples.append(sample_bps)
        fresh = restart or self._n == 0
        self._bw = sample_bps if fresh else (1 - self.alpha) * self._bw + self.alpha * sample_bps
        self._n += 1

    def _base(self) -> float:
        """The undiscounted prediction: the EWMA, capped by a low percentile when set (under the lock)."""
        bw = self._bw
        if self.percentile is not None and len(self._bw_samples) >= 3:
            bw = min(bw, percentile(self._bw_samples, self.percentile))
        return bw

    def _robust(self) -> float:
        """The prediction to plan with: discounted by the worst recent over-prediction, then
        capped by a censored bound (under the lock)."""
        bw = self._base() / (1 + max(self._errors, default=0.0))
        return bw if self._cap is None else min(bw, self._cap)

    def force(self, bandwidth_bps: float | None = None, rtt_ms: float | None = None) -> None:
        """Pin the estimate (benchmarks, tests, an operator who knows the link); None releases it."""
        with self._lock:
            self._forced = (bandwidth_bps, rtt_ms)

    def idle_s(self) -> float:
        """Seconds since a sample last measured the rate (`last_rate_sample`)."""
        return self._clock() - self.last_rate_sample

    def _queue_now(self) -> float:
        """The queue estimate, back at its start (0) when no answer gave it for ANSWER_MEMORY_S;
        under the lock."""
        if self._queue_at is not None and self._clock() - self._queue_at > ANSWER_MEMORY_S:
            self._queue, self._queue_at = 0.0, None
        return self._queue

    def estimate(self) -> LinkState:
        with self._lock:
            bw, rtt = self._robust(), self._rtt
            fb, fr = self._forced
            return LinkState(
                bandwidth_bps=fb if fb is not None else bw,
                rtt_ms=fr if fr is not None else rtt,
                server_queue_ms=self._queue_now(),
                samples=self._n,
                forced=fb is not None or fr is not None,
            )
