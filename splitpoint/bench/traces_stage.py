"""Stage `traces`: real cellular uplink traces, frames paced like a camera; adaptive vs every fixed split.

Which runs: every trace of --traces (default: every *.up file of the traces directory); a trace
longer than --trace-long-s in --trace-slices slices at offsets spread over it (a slice is the
trace rotated to start at its offset); each slice at every RTT of --trace-rtt. Each run replays the same slice of the trace: the link gets the trace when the run starts and
gets it again, from its t = 0, when the agent signals (`splitpoint edge --events`, line
`source-open`) that its frame source has opened and it has started (an adaptive agent's first
probe done), right before its first frame. So every run, fixed or adaptive, meets the same
capacity at the same frame whatever its start-up took.
Each frame's latency counts from the time the camera would have taken it. The best fixed split
in hindsight is the one with the lowest mean; the clairvoyant bound (clairvoyant.py) is the best
mean any scheduler knowing the trace's future could reach. The peers' rules (peer_runs.py) pick
a split each from the replay's start and are shown beside them, on that split's fixed run.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from splitpoint.bench import peer_runs
from splitpoint.bench.stats import (
    completion_ns,
    count_switches,
    last_over_first_median,
    latency_stats,
    ok_records,
    rnd,
)
from splitpoint.bench.trace_results import ClairvoyantBound, TraceResult, TraceRunResult
from splitpoint.bench.worker_client import RunOutcome, SourceOpenWatch
from splitpoint.traces import BandwidthTrace

if TYPE_CHECKING:
    from splitpoint.bench.harness import Bench


def slice_offsets(duration_s: float, seconds: float, long_s: float, slices: int) -> list[float]:
    """Where the replayed slices start: 0 for a trace up to `long_s` long; else `slices` offsets
    spread evenly from its start to its end (the last slice ends where the trace ends)."""
    if duration_s <= long_s or slices <= 1 or duration_s <= seconds:
        return [0.0]
    span = duration_s - seconds
    return [round(span * i / (slices - 1), 3) for i in range(slices)]


def rotated(trace: BandwidthTrace, offset_s: float) -> BandwidthTrace:
    """The trace as seen from `offset_s` on (a repeating trace wraps around): t = 0 is offset_s."""
    if offset_s <= 0:
        return trace
    starts, rates = [0.0], [trace.rate_bps(offset_s)]
    segs = trace.segments
    starts += [s - offset_s for s, _ in segs if s > offset_s]
    rates += [r for s, r in segs if s > offset_s]
    if not trace.repeat:
        return BandwidthTrace(starts, rates, repeat=False, name=f"{trace.name}@{offset_s:g}s")
    tail = trace.duration_s - offset_s
    starts += [tail + s for s, _ in segs if s < offset_s]
    rates += [r for s, r in segs if s < offset_s]
    return BandwidthTrace(starts, rates, duration_s=trace.duration_s, repeat=True, name=f"{trace.name}@{offset_s:g}s")


def run(b: Bench) -> None:
    from splitpoint.traces import load_trace

    tdir = b.opts.traces_path()
    names = b.opts.trace_names()
    b.result.traces = []
    if not names:
        msg = f"no *.up traces in {tdir} (--traces-dir, --traces)"
        b.say("  " + msg)
        b.error(msg)
        return
    for name in names:
        path = tdir / name
        if not path.exists():
            msg = f"trace {path} not found (--traces-dir)"
            b.say("  " + msg)
            b.error(msg)
            b.result.traces.append(TraceResult(trace=name, error=msg))
            continue
        whole = load_trace(path)
        for offset in slice_offsets(whole.duration_s, b.opts.trace_seconds, b.opts.trace_long_s, b.opts.trace_slices):
            for rtt in b.opts.trace_rtt:
                entry = replay(b, whole, path, offset, rtt)
                b.result.traces.append(entry)
                b.save()


def replay(b: Bench, whole: BandwidthTrace, path: Path, offset: float, rtt: float) -> TraceResult:
    """The adaptive agent and every fixed split over one slice of a trace at one RTT; the bound."""
    fps, seconds = b.opts.trace_fps, b.opts.trace_seconds
    deadline = b.opts.deadline_ms or 1000.0 / fps
    n = max(2, int(round(seconds * fps)))
    warm = min(b.opts.warmup, n // 4)
    trace = rotated(whole, offset)
    slice_rate = trace.bits_between(0, seconds) / seconds / 1e6
    entry = TraceResult(trace=path.name, path=str(path), offset_s=offset, trace_duration_s=rnd(whole.duration_s),
                        seconds=seconds, fps=fps, frames=n, warmup=warm, rtt_ms=rtt, deadline_ms=deadline,
                        edge_alone_ms=rnd(b.edge_ms.get(b.K)),
                        trace_mean_mbps=rnd(whole.mean_bps / 1e6), slice_mean_mbps=rnd(slice_rate),
                        slice_rates_mbps=[rnd(trace.bits_between(t, t + 0.5) / 0.5 / 1e6)
                                          for t in np.arange(0, seconds, 0.5)])
    b.say(f"trace {path.name}: {entry.slice_label} (mean {slice_rate:.2f} Mbps; whole trace "
          f"{whole.mean_bps / 1e6:.2f}), {fps:g} fps, RTT {rtt:g} ms, deadline {deadline:g} ms: adaptive + "
          f"{len(b.splits)} fixed splits ...")
    _say_outage(b, entry, trace)
    tag = f"{path.stem}-{offset:g}s-{rtt:g}ms"
    entry.peers = peer_runs.trace_picks(b, trace, whole, rtt, deadline)
    for p in entry.peers:
        b.say(f"  {p.reason or p.error}")
    for label, k in [("adaptive", None)] + [(f"k={k}", k) for k in b.splits]:
        if k is not None and k != b.K:
            wire_ms = b.wire_ms(k, max(slice_rate, 1e-6))
            if wire_ms > b.opts.max_frame_s * 1000:
                entry.runs[label] = TraceRunResult(split=k, skipped=f"wire time at the slice's mean rate "
                                                                    f"{wire_ms / 1000:.1f} s > --max-frame-s "
                                                                    f"{b.opts.max_frame_s:g}")
                continue
        entry.runs[label] = _one_run(b, trace, tag, label, k, n, warm, deadline, slice_rate, rtt)
        b.save()
    peer_runs.rule_runs(entry, lambda label, k: _one_run(b, trace, tag, label, k, n, warm, deadline, slice_rate, rtt))
    _summarise(entry)
    entry.clairvoyant = _clairvoyant(b, trace, entry)
    a = entry.runs.get("adaptive") or TraceRunResult()
    cv = entry.clairvoyant
    b.say(f"  adaptive mean {a.mean_ms} ms p95 {a.p95_ms} ms misses {a.deadline_misses}; best fixed "
          f"{entry.best_fixed} mean {entry.best_fixed_mean_ms} ms; ratio {entry.adaptive_over_best_fixed}; "
          f"clairvoyant ({cv.error or cv.kind}) mean {cv.mean_ms} ms, adaptive/clairvoyant "
          f"{cv.adaptive_over_clairvoyant}")
    return entry


def _say_outage(b: Bench, entry: TraceResult, trace: BandwidthTrace) -> None:
    """Say up front when the slice goes dark for longer than a frame may take (--max-frame-s): a
    fixed split's frames caught in it wait their frame_deadline_ms each, so its runs last minutes
    where the slice lasts seconds, and may end at their timeout. Its mean rate does not show it."""
    start, length = trace.longest_outage(0.0, entry.seconds)
    if length <= b.opts.max_frame_s:
        return
    entry.longest_outage_s = rnd(length)
    b.say(f"  the link is dark for {length:.1f} s from {start:.1f} s into the slice: a frame caught in it "
          f"waits up to frame_deadline_ms ({b.frame_deadline_ms / 1000:g} s) unless the agent hedges or falls "
          "back, so the fixed splits' runs take minutes and a run that passes its timeout is cut (its error "
          "says so)")


def _one_run(b: Bench, trace: BandwidthTrace, tag: str, label: str, k: int | None, n: int, warm: int,
             deadline: float, slice_rate: float, rtt: float) -> TraceRunResult:
    fps = b.opts.trace_fps
    extra = ["--mode", "latency", "--fps", str(fps)]
    extra += b.adaptive_flags() if k is None else ["--split", str(k)]
    per = b.predict_ms(k if k is not None else 0, max(slice_rate, 0.2), rtt)
    run_name = f"trace-{tag}-{label.replace('=', '').replace(' ', '-')}"
    events = b.runs_dir / f"{run_name}-{time.time_ns()}.events.jsonl"
    b.set_link(None, rtt, trace)
    # a trace given to set_uplink starts at its own t = 0: given again when the agent's source opens
    watch = SourceOpenWatch(events, lambda: b.link.set_uplink(trace))
    out = b.run_agent(run_name, n, extra, min(max(per, 1000 / fps), b.opts.max_frame_s * 1000),
                      on_poll=watch.poll, events=events)
    watch.poll()  # a run shorter than one poll interval
    res = trace_stats(out, k, warm, deadline, watch.t_set_ns)
    res.trace_synced_to_source_open = watch.synced
    if not watch.synced:
        b.error(f"trace run {run_name}: no source-open signal in {events}; the trace ran from the command")
    return res


def trace_stats(out: RunOutcome, k: int | None, warm: int, deadline: float, t_set: int) -> TraceRunResult:
    recs_all = sorted(out.records, key=lambda r: r["frame_id"])
    recs = ok_records(out.records, warm)
    counted = [r for r in recs_all if r["frame_id"] >= warm]
    s = TraceRunResult(split=k, **latency_stats([r["timings_ms"]["end_to_end"] for r in recs]))
    s.deadline_misses = sum(1 for r in counted if r.get("status") != "ok" or r["timings_ms"]["end_to_end"] > deadline)
    s.counted_frames = len(counted)
    s.fallbacks = sum(1 for r in recs if r.get("fallback_reason"))
    s.last_over_first_median = last_over_first_median([r["timings_ms"]["end_to_end"] for r in recs])
    if recs_all and recs_all[0].get("capture_time_unix_ns"):
        s.first_frame_after_trace_start_s = rnd((recs_all[0]["capture_time_unix_ns"] - t_set) / 1e9)
        last = max(completion_ns(r) for r in recs_all if r.get("status") == "ok") if recs else t_set
        s.duration_s = rnd((last - recs_all[0]["capture_time_unix_ns"]) / 1e9)
    if k is None:
        ok_all = ok_records(out.records)
        s.splits = [r["split"] for r in ok_all]
        s.t_s = [rnd((r["capture_time_unix_ns"] - t_set) / 1e9, 3) for r in ok_all]
        s.end_to_end_ms = [r["timings_ms"]["end_to_end"] for r in ok_all]
        s.switches = count_switches(s.splits)
        s.split_counts = {str(a): c for a, c in sorted(Counter(s.splits).items())}
    else:
        s.counted_ms = [r["timings_ms"]["end_to_end"] if r.get("status") == "ok" else None
                        for r in sorted(counted, key=lambda r: r["frame_id"])]
    if out.error or out.rc:
        s.error = out.error or f"exit {out.rc}"
    return s


def _summarise(entry: TraceResult) -> None:
    fixed = entry.fixed_runs()
    if not fixed:
        return
    best = min(fixed, key=lambda lbl: fixed[lbl].mean_ms or 0.0)
    entry.best_fixed = best
    entry.best_fixed_mean_ms = fixed[best].mean_ms
    entry.best_fixed_p95_ms = fixed[best].p95_ms
    entry.best_fixed_misses = fixed[best].deadline_misses
    a, best_mean = entry.runs.get("adaptive"), fixed[best].mean_ms
    if a is not None and a.mean_ms and best_mean:
        entry.adaptive_over_best_fixed = rnd(a.mean_ms / best_mean, 4)


def _clairvoyant(b: Bench, trace: Any, entry: TraceResult) -> ClairvoyantBound:
    """The best mean any scheduler knowing this trace could reach (splitpoint/bench/clairvoyant.py)."""
    from splitpoint.bench import clairvoyant as cv

    head, tail, queue = cv.measured_stage_times(b.result.conditions or [], b.K, b.edge_ms, b.cloud_ms)
    paths = cv.paths_from_profiles(b.splits, b.K, head, tail, b.wire, queue)
    a = entry.runs.get("adaptive")
    try:
        fixed = {r.split: r.mean_ms for r in entry.fixed_runs().values() if r.split is not None and r.mean_ms is not None}
        return cv.trace_bound(trace, paths, entry.fps, entry.frames, entry.rtt_ms, entry.warmup, entry.deadline_ms,
                              a.mean_ms if a is not None else None, fixed)
    except ValueError as exc:
        return ClairvoyantBound(error=str(exc))

