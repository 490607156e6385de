"""The clairvoyant bound of a trace run: the best mean latency any scheduler could reach knowing
the trace's future capacity.

The model (the same pipeline the agent runs on the emulated link):

* frame i is captured at t_i = i / fps (the trace restarts at the first frame, as the bench does);
* each frame takes one path: a split k (head on the edge, its cut tensor over the uplink, the
  server's queue and tail) or local (k = K, the whole model on the edge, nothing sent);
* the edge works on one frame at a time and the uplink carries one frame at a time, in capture
  order, but the two work on different frames at once (frame i+1's head runs while frame i
  crosses the link);
* k = 0 has no head (the agent quantizes the input on the CPU, its "head" time): its input goes
  to the uplink whatever the edge is doing;
* a head takes its measured time; the cut tensor of n bytes starting to cross at s is through
  at the exact time the trace has carried 8n bits since s (`BandwidthTrace.bits_between`
  inverted, as the emulator does); then the set RTT and the server's measured queue + tail
  time (the server is not a shared resource here: that only makes the bound lower).

The optimum is computed exactly by dynamic programming over frames. After frame i the future
depends only on (edge free at, uplink free at), and the latency of every later frame is
non-decreasing in both; so a state that is no better in edge time, uplink time and latency
so far than another can be dropped (it cannot lead to a better total), and the Pareto front
of the rest is exact. States whose edge and uplink are free before the next frame are the
same state (both are clamped to its capture time), which keeps the front small. Should the
front exceed `max_states`, neighbouring states are merged into their componentwise minimum,
which is better than each of them: the result is then a proven lower bound instead of the
optimum (`exact` false) and no per-frame schedule is reported.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from scheduler.cost import bits, wire_bytes
from splitpoint.bench.results import ConditionResult
from splitpoint.bench.stats import last_over_first_median
from splitpoint.bench.trace_results import BoundPath, ClairvoyantBound, TraceResult
from splitpoint.traces import BandwidthTrace

__all__ = ["Capacity", "ClairvoyantResult", "PathCost", "clairvoyant", "markdown_row", "measured_stage_times",
           "offload_overhead_ms", "paths_from_profiles", "trace_bound"]

#: the front's size cap (exact below it; a lower bound above it). Paced runs the pipeline keeps
#: up with stay far below (under 10 states on the real traces at 10 fps); an overloaded camera grows
#: the front every frame, and the cap bounds the time (~15 s for 600 frames x 11 paths)
MAX_STATES = 2000


@dataclass(frozen=True)
class PathCost:
    """One way to serve a frame: split k, or local (wire_bytes 0, nothing sent)."""

    split: int
    head_ms: float
    wire_bytes: int = 0        # bytes that cross the uplink, per-frame overhead included
    server_ms: float = 0.0     # server queue + tail

    @property
    def local(self) -> bool:
        return self.wire_bytes == 0


@dataclass
class ClairvoyantResult:
    mean_ms: float
    frames: int                          # frames counted in the mean (after the warm-up)
    exact: bool                          # the optimum; False: a lower bound (the front was merged)
    p95_ms: float | None = None          # of the mean-optimal schedule (exact only)
    deadline_misses: int | None = None   # of the mean-optimal schedule (exact only)
    splits: list[int] = field(default_factory=list)          # per frame, warm-up included (exact only)
    latencies_ms: list[float] = field(default_factory=list)  # per frame (exact only)
    max_front: int = 0
    warmup: int = 0

    def record(self) -> ClairvoyantBound:
        """The bench's record of the result (splitpoint.bench.results)."""
        counts: dict[str, int] = {}  # over the counted frames, like `frames` and the mean
        for k in self.splits[self.warmup:]:
            counts[str(k)] = counts.get(str(k), 0) + 1
        return ClairvoyantBound(mean_ms=round(self.mean_ms, 3), p95_ms=None if self.p95_ms is None else round(self.p95_ms, 3),
                                deadline_misses=self.deadline_misses, frames=self.frames,
                                kind="exact optimum" if self.exact else "lower bound", exact=self.exact,
                                split_counts=dict(sorted(counts.items(), key=lambda kv: int(kv[0]))),
                                max_front=self.max_front,
                                last_over_first_median=last_over_first_median(self.latencies_ms[self.warmup:]))


class Capacity:
    """The trace's cumulative bits over [0, horizon_s], inverted: when is a transfer through?"""

    def __init__(self, trace: BandwidthTrace, horizon_s: float):
        starts: list[float] = []
        rates: list[float] = []
        segs = trace.segments
        period = trace.duration_s if trace.repeat else math.inf
        offset = 0.0
        while offset <= horizon_s:
            for s, r in segs:
                if offset + s > horizon_s and starts:
                    break
                starts.append(offset + s)
                rates.append(r)
            if not trace.repeat:
                break
            offset += period
        if not any(r > 0 for r in rates):   # BandwidthTrace refuses all-zero traces; this is the horizon
            raise ValueError(f"the trace carries nothing within {horizon_s:g} s")
        cum = [0.0]
        for i in range(1, len(starts)):
            cum.append(cum[-1] + rates[i - 1] * (starts[i] - starts[i - 1]))
        self._starts, self._rates, self._cum = starts, rates, cum
        # past the last start the last rate holds; if that is 0, the link is dead after it
        self._tail_rate = rates[-1]

    def bits_by(self, t: float) -> float:
        """Bits carried in [0, t]."""
        if t <= 0:
            return 0.0
        i = bisect.bisect_right(self._starts, t) - 1
        return self._cum[i] + self._rates[i] * (t - self._starts[i])

    def finish(self, start_s: float, nbytes: int) -> float:
        """The earliest t >= start_s with 8 * nbytes bits carried in [start_s, t] (inf: never)."""
        if nbytes <= 0:
            return start_s
        target = self.bits_by(start_s) + bits(nbytes)
        i = bisect.bisect_left(self._cum, target) - 1    # the segment in which cum reaches target
        if i >= len(self._cum) - 1 or i < 0:
            i = len(self._cum) - 1
            if target > self._cum[i]:
                if self._tail_rate <= 0:
                    return math.inf
                return self._starts[i] + (target - self._cum[i]) / self._tail_rate
        # here cum[i] < target <= cum[i+1]: segment i has a positive rate
        return max(start_s, self._starts[i] + (target - self._cum[i]) / self._rates[i])


def _front(states: list[tuple[float, float, float, int, int, float]],
           max_states: int) -> tuple[list[tuple[float, float, float, int, int, float]], bool]:
    """Keep the states no other state beats in (edge, uplink, cost); merge beyond max_states."""
    states.sort(key=lambda s: (s[0], s[1], s[2]))
    kept: list[tuple[float, float, float, int, int, float]] = []
    # the kept states' (uplink, cost) staircase: uplinks ascending, costs strictly descending, so
    # the least cost among kept states with uplink <= u is at the last entry with uplink <= u
    ups: list[float] = []
    costs: list[float] = []
    for s in states:
        # kept states have edge <= s's: s is dominated if one also has uplink and cost <= s's
        j = bisect.bisect_right(ups, s[1]) - 1
        if j >= 0 and costs[j] <= s[2]:
            continue
        kept.append(s)
        pos = bisect.bisect_left(ups, s[1])
        end = pos
        while end < len(ups) and costs[end] >= s[2]:
            end += 1
        ups[pos:end] = [s[1]]
        costs[pos:end] = [s[2]]
    if len(kept) <= max_states:
        return kept, True
    size = math.ceil(len(kept) / max_states)
    merged = []
    for g in range(0, len(kept), size):
        group = kept[g:g + size]
        best = min(group, key=lambda s: s[2])
        merged.append((min(s[0] for s in group), min(s[1] for s in group), best[2], best[3], best[4], best[5]))
    return merged, False


def clairvoyant(paths: list[PathCost], capacity: Capacity, fps: float, frames: int, rtt_ms: float,
                warmup: int = 0, deadline_ms: float | None = None, max_states: int = MAX_STATES) -> ClairvoyantResult:
    """The minimum mean latency over frames warmup..frames-1 (all frames occupy the edge and link)."""
    if not paths:
        raise ValueError("no paths to choose from")
    if not (fps > 0 and frames > warmup >= 0):
        raise ValueError(f"need fps > 0 and frames > warmup >= 0 (fps {fps}, frames {frames}, warmup {warmup})")
    rtt = rtt_ms / 1000.0
    # state: (edge free at, uplink free at, latency sum, index of the parent state, split, latency of this frame)
    layers: list[list[tuple[float, float, float, int, int, float]]] = []
    prev: list[tuple[float, float, float, int, int, float]] = [(0.0, 0.0, 0.0, -1, -1, 0.0)]
    exact = True
    max_front = 1
    for i in range(frames):
        t = i / fps
        t_next = (i + 1) / fps if i + 1 < frames else 0.0
        out = []
        for idx, (e, u, c, _, _, _) in enumerate(prev):
            e0, u0 = max(e, t), max(u, t)
            for p in paths:
                if p.split == 0:  # no head: the input is quantized on the CPU, the edge left as it was
                    e1, sent = e, t + p.head_ms / 1000.0
                else:
                    e1 = sent = e0 + p.head_ms / 1000.0
                if p.local:
                    u1, done = u0, e1
                else:
                    u1 = capacity.finish(max(sent, u0), p.wire_bytes)
                    done = u1 + rtt + p.server_ms / 1000.0
                lat = (done - t) * 1000.0
                if not math.isfinite(lat):
                    continue
                # free before the next frame: the same as free at its capture (merges equal states)
                out.append((max(e1, t_next), max(u1, t_next), c + (lat if i >= warmup else 0.0), idx, p.split, lat))
        if not out:
            raise ValueError(f"frame {i}: no path can finish (the trace carries nothing and no path is local)")
        prev, ok = _front(out, max_states)
        exact = exact and ok
        max_front = max(max_front, len(prev))
        layers.append(prev)
    best = min(prev, key=lambda s: s[2])
    counted = frames - warmup
    result = ClairvoyantResult(mean_ms=best[2] / counted, frames=counted, exact=exact, max_front=max_front,
                               warmup=warmup)
    if exact:
        splits, lats = [], []
        state = best
        for layer in reversed(range(frames)):
            splits.append(state[4])
            lats.append(state[5])
            if layer:
                state = layers[layer - 1][state[3]]
        result.splits, result.latencies_ms = splits[::-1], lats[::-1]
        result.p95_ms = float(np.percentile(result.latencies_ms[warmup:], 95))  # as the bench's latency_stats
        if deadline_ms is not None:
            result.deadline_misses = sum(1 for x in result.latencies_ms[warmup:] if x > deadline_ms)
    return result


def paths_from_profiles(splits: list[int], num_layers: int, head_ms: dict[int, float], tail_ms: dict[int, float],
                        tensor_bytes: dict[int, int],
                        queue_ms: dict[int, float] | None = None) -> list[PathCost]:
    """Paths from the bench's measured per-split times (bytes on the wire as the cost model counts them); splits no other beats in head, bytes and
    server time only (a dominated split can never be the better choice for any frame)."""
    queue_ms = queue_ms or {}
    paths = []
    for k in splits:
        if k == num_layers:
            paths.append(PathCost(k, head_ms.get(k, 0.0)))
        else:
            paths.append(PathCost(k, head_ms.get(k, 0.0), wire_bytes(tensor_bytes[k]),
                                  tail_ms.get(k, 0.0) + queue_ms.get(k, 0.0)))
    remote = [p for p in paths if not p.local]
    kept = [p for p in paths if p.local or not any(
        q is not p and q.head_ms <= p.head_ms and q.wire_bytes <= p.wire_bytes and q.server_ms <= p.server_ms
        and (q.head_ms, q.wire_bytes, q.server_ms, q.split) < (p.head_ms, p.wire_bytes, p.server_ms, p.split)
        for q in remote)]
    return kept


def trace_bound(trace: BandwidthTrace, paths: list[PathCost], fps: float, frames: int, rtt_ms: float,
                warmup: int, deadline_ms: float | None, adaptive_mean_ms: float | None = None,
                fixed_means_ms: dict[int, float] | None = None) -> ClairvoyantBound:
    """The bound of one trace run as the bench records it: the result, what it assumed, the regret;
    with `fixed_means_ms` (split -> the measured mean of its fixed run on this replay) also the
    per-offload overhead those runs show over the model, and the bound with it added."""
    capacity = Capacity(trace, frames / fps + 600.0)   # room for a backlog to drain on a slow trace
    res = clairvoyant(paths, capacity, fps, frames, rtt_ms, warmup, deadline_ms)
    out = res.record()
    out.paths = [BoundPath(p.split, round(p.head_ms, 3), p.wire_bytes, round(p.server_ms, 3)) for p in paths]
    if adaptive_mean_ms and res.mean_ms > 0:
        out.adaptive_over_clairvoyant = round(adaptive_mean_ms / res.mean_ms, 4)
    overhead = offload_overhead_ms(paths, fixed_means_ms or {}, capacity, fps, frames, rtt_ms, warmup, deadline_ms)
    if overhead is not None:
        out.offload_overhead_ms = round(overhead, 3)
        if overhead > 0:
            padded = [p if p.local else PathCost(p.split, p.head_ms, p.wire_bytes, p.server_ms + overhead) for p in paths]
            out.mean_with_overhead_ms = round(
                clairvoyant(padded, capacity, fps, frames, rtt_ms, warmup, deadline_ms).mean_ms, 3)
    return out


def offload_overhead_ms(paths: list[PathCost], fixed_means_ms: dict[int, float], capacity: Capacity, fps: float,
                        frames: int, rtt_ms: float, warmup: int, deadline_ms: float | None) -> float | None:
    """What every offloaded frame costs beyond the model, as this replay's fixed runs show it: the
    smallest excess, over the cloud splits, of a split's measured mean over the model's mean for
    that split alone on the same trace. None when no cloud split's fixed run kept its mean within
    the deadline: a standing backlog multiplies a run's overhead by its queue. The model leaves
    out the agent's, gRPC's and the emulator's own time per frame (documented runs: 4-7 ms on
    every small cut, all-edge within 0.3 ms), so no schedule on this system comes within about
    that much per offloaded frame of the bound. The smallest excess, so that the padded bound
    stays below every fixed cloud run's own figure. Reported beside the bound; no target reads it."""
    excess = []
    for p in paths:
        measured = fixed_means_ms.get(p.split)
        if p.local or measured is None or (deadline_ms is not None and measured > deadline_ms):
            continue
        alone = clairvoyant([p], capacity, fps, frames, rtt_ms, warmup, deadline_ms).mean_ms
        excess.append(measured - alone)
    return min(excess) if excess else None


def measured_stage_times(conditions: list[ConditionResult], num_layers: int, edge_ms: dict[int, float],
                         cloud_ms: dict[int, float]) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """(head, tail, server queue) per split, in ms: the median over the bench's conditions of each
    fixed run's stage medians (the edge's time is "local" for k = K); a split no condition ran
    falls back to the profiles (head, tail) and no queue."""
    head, tail, queue = dict(edge_ms), dict(cloud_ms), {}
    seen: dict[int, dict[str, list[float]]] = {}
    for cond in conditions:
        for key, run in cond.fixed.items():
            stages = run.stages_median_ms
            for stage in ("head", "local", "server_queue", "server_compute"):
                value = stages.get(stage)
                if value is not None:
                    seen.setdefault(int(key), {}).setdefault(stage, []).append(float(value))
    for k, st in seen.items():
        edge = st.get("local" if k == num_layers else "head")
        if edge:
            head[k] = float(np.median(edge))
        if st.get("server_compute"):
            tail[k] = float(np.median(st["server_compute"]))
        if st.get("server_queue"):
            queue[k] = float(np.median(st["server_queue"]))
    return head, tail, queue


def markdown_row(entry: TraceResult) -> list[str]:
    """The clairvoyant line of a trace table (same columns as the runs) and the regret."""
    cv = entry.clairvoyant
    if cv is None:
        return []
    if cv.error:
        return [f"| clairvoyant | - | not computed: {cv.error} | | | | | |"]

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    counts = ", ".join(f"k={k}: {n}" for k, n in cv.split_counts.items())
    misses = "-" if cv.deadline_misses is None else f"{cv.deadline_misses}/{cv.frames}"
    name = f"clairvoyant, {cv.kind}" + (f" ({counts})" if counts else "")
    return [f"| {name} | {cv.frames} | {f(cv.mean_ms)} | - | {f(cv.p95_ms)} | {misses} | - | - |"]
