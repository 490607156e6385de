"""Per-frame path planning: when the edge and the uplink will be free, and when each path finishes.

A frame has two resources, and two frames can use them at once::

    local (k = K):  [ edge: head(K) ]-----------------------------------------> result
    split k:        [ edge: head(k) ]--[ uplink: bytes(k)/B ]--RTT + queue + tail(k)--> answer
                                        ^ may wait for the link (t_l)
    next frame:                      [ edge: head(..) ] ... may start while the first is on the link

`Timeline` keeps what is booked on each: the accelerator is one FIFO (heads and local runs,
booked when planned, freed by `edge_done`), the uplink another (a transfer booked when
planned, marked sent when the bytes go out, marked by `link_hedged` when its hedge fires, freed
by `link_done`; the session's bulk probe is booked there too, `probe_sent` to `probe_done`).
`free_at(now)` says when each will be free; `hedged_in_flight()` whether a
hedged frame's answer is still out (a stall in progress: the planner's risk, scheduler/risk.py).
`path_times` turns one `CostModel.predict` figure into the times of a path started now, and
`evaluate` adds what a choice costs the following frames (see its docstring); the objective
itself is applied by `AdaptivePolicy.plan` (scheduler/policy.py).

Pure: no threads, sockets or clocks - every time is passed in (seconds, a monotonic clock);
durations are ms, as in the cost model. Thread-safe: the agent reports events from several
threads. Lock order: a caller's locks (the policy's) before the timeline's; the timeline
calls nothing while holding its own.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from scheduler.cost import Prediction

NEVER = float("-inf")
#: the link booking of the session's bulk probe (frame ids are >= 0)
_PROBE = -1


@dataclass
class _Booking:
    seq: int
    ready_s: float  # earliest start: when planned (edge), when the head is done or was sent (link)
    duration_s: float  # predicted time on the resource
    sent: bool = False  # link: the bytes were handed to the stream, not only planned
    wire_bytes: int = 0
    after_s: float = 0.0  # link: RTT + queue + tail predicted after the transfer, before the answer
    hedged: bool = False  # link: its hedge fired before the answer came (the link may be stalled)
    stall_evidence: bool = True  # link: overdue, it shows the link stalled (not a probe to one of several replicas)


class Timeline:
    """When the edge accelerator (t_e) and the uplink (t_l) will be free."""

    def __init__(self) -> None:
        self._edge: dict[int, _Booking] = {}
        self._link: dict[int, _Booking] = {}
        # the last time each resource was seen free: an edge run that ended, a transfer whose
        # answer came (minus the predicted time after the transfer)
        self._edge_free = NEVER
        self._link_free = NEVER
        self._seq = itertools.count()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ events from the agent

    def edge_reserved(self, frame_id: int, ready_s: float, duration_ms: float) -> None:
        """Book the accelerator for `duration_ms` from `ready_s` (behind what is booked already).
        `AdaptivePolicy.plan` books a frame's head or local run; the agent books only runs the
        plan did not foresee (a hedge's or a fallback's local run, for head(K) =
        `PathChoice.local_ms`). One booking per frame at a time: a new one replaces it."""
        with self._lock:
            self._edge[frame_id] = _Booking(next(self._seq), ready_s, duration_ms / 1000)

    def edge_done(self, frame_id: int, now: float) -> None:
        """The frame's head or local run finished (or was dropped): the accelerator is free."""
        with self._lock:
            if self._edge.pop(frame_id, None) is not None:
                self._edge_free = max(self._edge_free, now)

    def link_sent(self, frame_id: int, wire_bytes: int, now: float,
                  predicted_transfer_ms: float | None = None, after_ms: float | None = None,
                  planned: bool = False) -> None:
        """The frame's bytes were handed to the stream at `now` (or, `planned`, will be: the
        plan books the transfer at the head's predicted end). Predictions default to the
        planned booking's; a frame with neither (a fixed policy's) is not tracked."""
        with self._lock:
            old = self._link.get(frame_id)
            if old is None:
                if predicted_transfer_ms is None or after_ms is None:
                    return
                old = _Booking(next(self._seq), now, predicted_transfer_ms / 1000, after_s=after_ms / 1000)
            duration = old.duration_s if predicted_transfer_ms is None else predicted_transfer_ms / 1000
            after = old.after_s if after_ms is None else after_ms / 1000
            self._link[frame_id] = _Booking(old.seq, now, duration, not planned, wire_bytes, after, old.hedged)

    def link_hedged(self, frame_id: int) -> None:
        """The frame's hedge fired with its answer still to come: the link is caught in a sag or
        an outage until that answer comes (or `link_done` says none will)."""
        with self._lock:
            b = self._link.get(frame_id)
            if b is not None:
                b.hedged = True

    def hedged_in_flight(self) -> int:
        """Sent frames whose hedge fired and whose answer has not come: while there is one, a
        new offload queues behind a transfer already later than the agent's worst expectation."""
        with self._lock:
            return sum(1 for b in self._link.values() if b.hedged)

    def link_done(self, frame_id: int, now: float, answered: bool = True) -> None:
        """No more of the frame's bytes will use the link: its answer came (`answered`; even when a
        hedge already won), its stream ended, or the agent gave up on the answer. Every sent
        frame needs this call: one never released counts as overdue, and keeps the link busy,
        for ever."""
        with self._lock:
            b = self._link.pop(frame_id, None)
            if b is not None and answered and b.sent:
                # the bytes were through about `after_s` before the answer came back
                self._link_free = max(self._link_free, min(now, max(b.ready_s, now - b.after_s)))

    def probe_sent(self, wire_bytes: int, now: float, transfer_ms: float, after_ms: float,
                   stall_evidence: bool = True) -> None:
        """The session's bulk probe (`wire_bytes`, predicted `transfer_ms` on the wire and
        `after_ms` before its reply) went out at `now`: a frame sent now queues behind it, as a
        frame's transfer behind another's. Unbooked, a 32 KiB probe on a 1.1 Mbps uplink
        (240 ms, one every probe_first_s while the agent runs on the edge) let the plan send a
        k = 89 frame it predicted at 73 ms into a link busy for 130 ms more (a 205 ms answer, 3
        frames late behind its hedge). At most one probe at a time (the session's prober).

        Not `stall_evidence`: overdue, it holds the link no longer than predicted. A probe to
        one of several replicas may be late because round_robin put it on a hung one, not
        because the link stalled; counted as a stall it kept an adaptive agent on the edge
        while the healthy replicas stood idle (the frames' own transfers still show a stall)."""
        self.link_sent(_PROBE, wire_bytes, now, transfer_ms, after_ms)
        if not stall_evidence:
            with self._lock:
                self._link[_PROBE].stall_evidence = False

    def probe_done(self, now: float, answered: bool = True) -> None:
        """The probe's reply came (`answered`), or it failed: its bytes no longer hold the link."""
        self.link_done(_PROBE, now, answered)

    # ------------------------------------------------------------------ the question the plan asks

    def free_at(self, now: float, bandwidth_bps: float | None = None) -> tuple[float, float]:
        """(t_e, t_l): the earliest times, at or after `now`, the accelerator and the uplink are free.

        Bookings run in order, each from max(its ready time, the previous one's end). One not
        reported done ends no earlier than `now`. A sent transfer whose answer is overdue (now
        past its predicted end + RTT + queue + tail) is evidence now, never "free" because its
        prediction ran out: the link is busy until now + all its bytes (how much has crossed
        cannot be seen from here) at min(`bandwidth_bps` - the estimate, default the rate the
        plan assumed -, the censored bound bytes / time on the wire). So it looks busy for at
        least as long again as the transfer has already taken, longer the longer it stalls."""
        with self._lock:
            t_e = self._edge_free
            for b in sorted(self._edge.values(), key=lambda b: b.seq):
                t_e = max(now, max(t_e, b.ready_s) + b.duration_s)
            t_l = self._link_free
            for b in sorted(self._link.values(), key=lambda b: (b.ready_s, b.seq)):
                start = max(t_l, b.ready_s if b.sent else max(b.ready_s, now))
                end = start + b.duration_s
                if b.sent and now >= end + b.after_s and b.wire_bytes > 0 and b.stall_evidence:
                    end = now + _remaining_s(b, now - start - b.after_s, bandwidth_bps)
                t_l = end
            return max(now, t_e), max(now, t_l)

    def pending(self) -> tuple[list[int], list[int]]:
        """Frames booked on (the edge, the link; a probe's booking is not a frame's): for tests and logs."""
        with self._lock:
            return sorted(self._edge), sorted(f for f in self._link if f != _PROBE)

    def frames_on_link(self) -> bool:
        """Whether a frame's transfer is booked on the link: planned (its head still running) or
        sent and not answered. The session does not start a probe then (it would go first)."""
        with self._lock:
            return any(f != _PROBE for f in self._link)

    def probing(self) -> bool:
        """Whether a probe is booked on the link (for tests and logs)."""
        with self._lock:
            return _PROBE in self._link


def _remaining_s(b: _Booking, on_wire_s: float, bandwidth_bps: float | None) -> float:
    bits = b.wire_bytes * 8
    rate = bandwidth_bps if bandwidth_bps is not None and bandwidth_bps > 0 else (
        bits / b.duration_s if b.duration_s > 0 else math.inf)
    if on_wire_s > 0:
        rate = min(rate, bits / on_wire_s)  # the censored bound, as LinkEstimator.observe_censored
    return bits / rate if rate > 0 else math.inf


# --------------------------------------------------------------------------- one path's times


class PathTimes(NamedTuple):
    """When a path started at `now` would run, given t_e and t_l (seconds). A named tuple, not a
    frozen dataclass: a plan builds about 90 of them (evaluate's lookahead), and a frozen
    dataclass's constructor cost a quarter of the plan's time."""

    split: int
    local: bool
    head_start_s: float
    head_done_s: float
    transfer_start_s: float | None  # None: local
    finish_s: float
    edge_free_s: float  # t_e after this frame
    link_free_s: float  # t_l after this frame


def race_times(local: PathTimes, sent: PathTimes) -> PathTimes:
    """A frame run locally and sent as k = 0 at once (`sent`: k = 0's times, which start now
    and take nothing of the edge): its result is the first of the two, the edge is taken as
    by the local run and the link as by the transfer."""
    return PathTimes(sent.split, False, local.head_start_s, local.head_done_s, sent.transfer_start_s,
                     min(local.finish_s, sent.finish_s), local.edge_free_s, sent.link_free_s)


def path_times(p: Prediction, num_layers: int, now: float, t_e: float, t_l: float) -> PathTimes:
    """local: max(now, t_e) + head(K); split k: the head ends at max(now, t_e) + head(k), the
    transfer starts at max(head end, t_l), and the answer comes the predicted transfer + RTT +
    queue + tail(k) later. k = 0 has no head (the input is quantized on the CPU, not queued
    for the accelerator: edge_node/heads.py), so it starts now whatever the edge's queue.
    Every figure is `p`'s (CostModel.predict): what follows the head is latency - head, the
    link's share is transfer_ms."""
    head_start = now if p.split == 0 else max(now, t_e)
    head_done = head_start + p.head_ms / 1000
    if p.split == num_layers:
        return PathTimes(p.split, True, head_start, head_done, None,
                         head_start + p.latency_ms / 1000, head_done, t_l)
    start = max(head_done, t_l)
    edge_free = max(now, t_e) if p.split == 0 else head_done  # k = 0 leaves the edge's queue as it was
    return PathTimes(p.split, False, head_start, head_done, start,
                     start + (p.latency_ms - p.head_ms) / 1000, edge_free, start + p.transfer_ms / 1000)


#: how many following frames a choice is charged for. One is not enough: with a FIFO
#: accelerator it settles on two local frames per cloud one and leaves the link idle while a
#: cloud frame's head waits behind local runs (12 of the 13.4 frames/s the issue's example
#: can sustain); two reaches 13.4 and lowers the mean latency at 10 fps; three adds nothing.
LOOKAHEAD_FRAMES = 2


@dataclass(frozen=True)
class PathOption:
    prediction: Prediction
    times: PathTimes
    latency_ms: float  # finish - the frame's arrival
    delay_ms: float  # what this choice adds to the following frames' latencies (0 without them)
    #: run locally and sent as k = 0 at once (`prediction` is k = 0's): the first result counts
    raced: bool = False


def evaluate(preds: Iterable[Prediction], num_layers: int, now: float, t_e: float, t_l: float,
             arrived: float, next_at: float | None, spacing_s: float = 0.0,
             lookahead: int = LOOKAHEAD_FRAMES, follow: Iterable[Prediction] | None = None,
             race: bool = False) -> list[PathOption]:
    """Each path's finish time and, when a next frame is expected at `next_at` (and then every
    `spacing_s`), what the choice adds to the next `lookahead` frames: the least sum of their
    latencies after this choice, minus the least such sum over choices. `follow`: the paths
    the following frames may take (default `preds`); the planner passes local and the cloud
    path it holds, so that weighing every split costs len(preds) x (2 + 4) path times, not
    len(preds) ** 3. `race`: one more option when `preds` has both k = 0 and K, the frame run
    locally and sent as k = 0 at once (`race_times`; `PathOption.raced`).

    Why the next frames count: a split's head waits for the accelerator too, so a frame's own
    earliest finish is always local whenever head(K) < head(k) + transfer + RTT + tail(k) and
    the link is idle - even while the local queue grows without bound (an edge needing 125 ms
    behind a 10 fps camera). Charging each choice the wait it leaves the following frames
    sends a frame to the link once the edge backlog costs more than the detour, which is what
    keeps both resources busy. Without a next frame this is plain earliest finish."""
    preds = list(preds)
    following = preds if follow is None else list(follow)
    paths = [(p, path_times(p, num_layers, now, t_e, t_l), False) for p in preds]
    if race:
        by_split = {p.split: (p, t) for p, t, _ in paths}
        if 0 in by_split and num_layers in by_split and num_layers != 0:
            sent, sent_times = by_split[0]
            paths.append((sent, race_times(by_split[num_layers][1], sent_times), True))
    options = []
    for p, times, raced in paths:
        later = math.inf
        if next_at is not None:
            later = _least_sum(following, num_layers, max(now, next_at), max(0.0, spacing_s),
                               times.edge_free_s, times.link_free_s, lookahead)
        options.append((p, times, raced, later))
    least = min((n for *_, n in options), default=math.inf)
    out = []
    for p, times, raced, later in options:
        delay = (later - least) * 1000 if math.isfinite(least) else 0.0
        out.append(PathOption(p, times, (times.finish_s - arrived) * 1000, delay, raced))
    return out


def _least_sum(preds: list[Prediction], num_layers: int, when: float, spacing_s: float,
               t_e: float, t_l: float, frames: int) -> float:
    """The least sum of latencies (s) of `frames` frames arriving at `when`, every `spacing_s`."""
    if frames <= 0:
        return 0.0
    best = math.inf
    for q in preds:
        t = path_times(q, num_layers, when, t_e, t_l)
        rest = _least_sum(preds, num_layers, when + spacing_s, spacing_s, t.edge_free_s, t.link_free_s, frames - 1)
        best = min(best, t.finish_s - when + rest)
    return best


def delay_of_edge_run(follow: Iterable[Prediction], num_layers: int, next_at: float | None, spacing_s: float,
                      t_e: float, run_end: float, t_l: float, lookahead: int = LOOKAHEAD_FRAMES) -> float:
    """What keeping the edge busy until `run_end` instead of `t_e` adds to the latencies of the
    next `lookahead` frames (ms), the first arriving at `next_at`, then every `spacing_s`, each
    taking the best of `follow` - the charge `evaluate` gives a choice (`PathOption.delay_ms`),
    for a run no plan chose: a hedge's local run (edge_node/watchdog.py). 0 without a next frame."""
    if next_at is None or run_end <= t_e:
        return 0.0
    follow = list(follow)
    before = _least_sum(follow, num_layers, next_at, spacing_s, t_e, t_l, lookahead)
    after = _least_sum(follow, num_layers, next_at, spacing_s, run_end, t_l, lookahead)
    if not (math.isfinite(before) and math.isfinite(after)):
        return 0.0
    return max(0.0, (after - before) * 1000)


@dataclass(frozen=True)
class PathChoice:
    """What the planner decided for one frame. Times are on the caller's clock (seconds); with a
    fixed policy only `split` is set (it predicts nothing)."""

    frame_id: int
    split: int
    finish_s: float | None = None
    predicted_ms: float | None = None  # finish - the frame's arrival
    head_start_s: float | None = None
    transfer_start_s: float | None = None  # None: local
    prediction: Prediction | None = None  # CostModel.predict for the split, queueing not included
    local_ms: float | None = None  # head(K): what a hedge's or a fallback's local run books
    reason: str = ""
    #: run locally (booked on the edge) and sent as k = 0 (booked on the link) at once
    raced: bool = False
