"""Stage `step`: the uplink goes high -> low -> high while the adaptive agent runs, paced like a camera.

The harness sets the new rate after `step_frames` and 2 x `step_frames` frames have been
answered (it counts the lines of the run's results log) and notes the wall-clock time; frames
captured after a change belong to the new phase. For each change: the new best split (the
oracle of a fixed sweep at that rate), the split the agent ended the phase on, the frames and
seconds until it settled (the first frame of the final run of equal splits) and the switches.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from splitpoint.bench.conditions import fixed_sweep
from splitpoint.bench.results import StepChange, StepFrame, StepOracle, StepResult
from splitpoint.bench.stats import count_switches, ok_records, rnd

if TYPE_CHECKING:
    from splitpoint.bench.harness import Bench


def run(b: Bench) -> None:
    hi, lo = b.opts.step_rates
    rtt = b.opts.step_rtt
    phase = b.opts.step_frames
    oracles: dict[float, StepOracle] = {}
    for bw in (hi, lo):
        if (bw, rtt) not in b.fixed_cache:
            b.say(f"step change: measuring every fixed split at {bw:g} Mbps, RTT {rtt:g} ms for the oracle ...")
        sw = fixed_sweep(b, bw, rtt)
        oracles[bw] = StepOracle(split=sw.oracle_split, median_ms={str(k): v.median_ms for k, v in sw.fixed.items()})
    b.say(f"step change {hi:g} -> {lo:g} -> {hi:g} Mbps (RTT {rtt:g} ms, {b.opts.step_fps:g} fps, "
          f"{phase} frames per phase) ...")
    b.set_link(hi, rtt)
    changes: list[tuple[float, int]] = []  # (rate Mbps, unix ns)
    plan = [(phase, lo), (2 * phase, hi)]

    def on_poll() -> None:
        if len(changes) >= len(plan):
            return
        try:
            count = b.results_path("step").read_bytes().count(b"\n")
        except OSError:
            return
        at, rate = plan[len(changes)]
        if count >= at:
            b.link.set_uplink(rate * 1e6)
            changes.append((rate, time.time_ns()))
            b.say(f"  link set to {rate:g} Mbps after {count} frames")

    worst = b.predict_ms(0, lo, rtt)
    out = b.run_agent("step", 3 * phase, ["--mode", "latency", "--fps", str(b.opts.step_fps), *b.adaptive_flags()],
                      min(max(worst, 1000 / b.opts.step_fps), b.opts.max_frame_s * 1000), on_poll=on_poll)
    recs = ok_records(out.records)
    res = StepResult(rates_mbps=[hi, lo, hi], rtt_ms=rtt, fps=b.opts.step_fps, phase_frames=phase,
                     deadline_ms=b.opts.deadline_ms or 1000.0 / b.opts.step_fps,
                     oracles={str(k): v for k, v in oracles.items()})
    t_start = out.started_unix_ns or (recs[0]["capture_time_unix_ns"] if recs else time.time_ns())
    res.frames = [StepFrame(frame_id=r["frame_id"], split=r["split"], where=r["where"],
                            t_s=rnd((r["capture_time_unix_ns"] - t_start) / 1e9, 4),
                            end_to_end_ms=r["timings_ms"]["end_to_end"]) for r in recs]
    bounds = [ns for _, ns in changes] + [math.inf]
    for i, (rate, ns) in enumerate(changes):
        before = [r for r in recs if r["capture_time_unix_ns"] < ns]
        during = [r for r in recs if ns <= r["capture_time_unix_ns"] < bounds[i + 1]]
        splits = [r["split"] for r in during]
        best = oracles[rate].split
        final = splits[-1] if splits else None
        j = len(splits)
        while j > 0 and splits[j - 1] == final:
            j -= 1
        ch = StepChange(to_mbps=rate, t_s=rnd((ns - t_start) / 1e9, 4), frames_after=len(splits), best_split=best,
                        final_split=final, settled_on_best=final == best, frames_to_settle=j if splits else None,
                        seconds_to_settle=(rnd((during[j]["capture_time_unix_ns"] - ns) / 1e9, 3)
                                           if splits and j > 0 else 0.0 if splits else None),
                        switches=count_switches(splits, before[-1]["split"] if before else None))
        med = oracles[rate].median_ms
        f_ms, b_ms = med.get(str(final)), med.get(str(best))
        if final is not None and f_ms and b_ms:
            ch.final_over_best_latency = rnd(f_ms / b_ms, 4)
        if splits and final != best:
            ch.note = "the agent did not end the phase on the measured best split"
        res.changes.append(ch)
    if len(changes) < len(plan):
        res.error = f"only {len(changes)} of {len(plan)} link changes happened (run ended early?)"
        b.error("step: " + res.error)
    b.result.step = res
    for ch in res.changes:
        b.say(f"  -> {ch.to_mbps:g} Mbps: best k={ch.best_split}, agent ended on k={ch.final_split} "
              f"after {ch.frames_to_settle} frames ({ch.seconds_to_settle} s), {ch.switches} switches")
