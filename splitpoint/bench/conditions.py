"""Stage `conditions`: every split fixed at each (bandwidth, RTT) -> the oracle; the adaptive agent's pick.

For each condition every measured split runs fixed (`--split k --mode latency`) for warm-up +
frames frames; the oracle is the split with the lowest median. The adaptive agent then runs
and its settled split (the mode of the last half of its frames) is compared with the oracle
through the fixed runs' medians, so chosen/oracle compares like with like. A split whose wire
time alone exceeds --max-frame-s is not run; its lower bound (wire time + RTT) is kept instead. The peers' rules pick among the same fixed runs
(peer_runs.condition_picks: no extra runs).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from splitpoint.bench import peer_runs
from splitpoint.bench.results import AdaptiveRun, ConditionResult, EnergyResult, FixedRun
from splitpoint.bench.stats import (
    count_switches,
    latency_stats,
    median,
    ok_records,
    rnd,
    settled_split,
)
from splitpoint.bench.worker_client import RunOutcome

if TYPE_CHECKING:
    from splitpoint.bench.harness import Bench

STAGE_KEYS = ("head", "local", "transfer", "server_queue", "server_compute", "rpc")


@dataclass
class Sweep:
    """Every split fixed at one condition (cached: the step change reuses the conditions' sweeps)."""

    bandwidth_mbps: float
    rtt_ms: float
    fixed: dict[int, FixedRun] = field(default_factory=dict)
    oracle_split: int | None = None
    oracle_caveat: str | None = None
    energy_oracle_split: int | None = None

    def median(self, k: int | None) -> float | None:
        """Split k's median; None when not run, or when its frames fell back (not k's latency)."""
        run = self.fixed.get(k) if k is not None else None
        return run.median_ms if run is not None and not run.fell_back() else None


def run(b: Bench) -> None:
    conds = b.opts.condition_list()
    b.result.conditions = []
    for i, (bw, rtt) in enumerate(conds, 1):
        t = time.monotonic()
        b.say(f"condition {i}/{len(conds)}: {bw:g} Mbps, RTT {rtt:g} ms: {len(b.splits)} fixed splits ...")
        sweep = fixed_sweep(b, bw, rtt)
        cond = condition_result(b, sweep, adaptive_run(b, bw, rtt))
        cond.peers = peer_runs.condition_picks(b, sweep)
        if b.energy is not None:
            cond.energy = energy_result(b, sweep, adaptive_run(b, bw, rtt, "min-energy"))
        b.result.conditions.append(cond)
        b.save()
        b.say(f"  oracle k={cond.oracle_split} {cond.oracle_median_ms} ms; agent settled on k={cond.chosen_split} "
              f"{cond.chosen_median_ms} ms; chosen/oracle {cond.chosen_over_oracle} ({time.monotonic() - t:.1f}s)")


def fixed_sweep(b: Bench, bw: float, rtt: float) -> Sweep:
    key = (bw, rtt)
    if key in b.fixed_cache:
        return b.fixed_cache[key]  # type: ignore[no-any-return]
    b.set_link(bw, rtt)
    n = b.opts.warmup + b.opts.frames
    sweep = Sweep(bw, rtt)
    for k in b.splits:
        wire_ms = b.wire_ms(k, bw)
        if wire_ms > b.opts.max_frame_s * 1000:
            sweep.fixed[k] = FixedRun(split=k, skipped=f"wire time alone {wire_ms / 1000:.1f} s per frame > "
                                                          f"--max-frame-s {b.opts.max_frame_s:g}",
                                      lower_bound_ms=rnd(wire_ms + rtt))
            continue
        out = b.run_agent(f"fixed-k{k}-{bw:g}M-{rtt:g}ms", n, ["--split", str(k), "--mode", "latency"],
                          b.predict_ms(k, bw, rtt))
        sweep.fixed[k] = fixed_stats(b, k, out, bw)
    measured = {k: m for k in sweep.fixed if (m := sweep.median(k)) is not None}
    fell_back = [k for k, v in sweep.fixed.items() if v.fell_back()]
    caveats = [f"splits {fell_back} fell back to the edge in half or more of their frames: not candidates "
               "for the oracle, nor all-cloud"] if fell_back else []
    if measured:
        oracle = min(measured, key=lambda k: (measured[k], k))
        sweep.oracle_split = oracle
        unsure = [k for k, v in sweep.fixed.items() if v.lower_bound_ms is not None and v.lower_bound_ms < measured[oracle]]
        if unsure:
            caveats.append(f"splits {unsure} were not run and their lower bound is below the oracle's latency")
        e = {k: v.energy_median_mj for k, v in sweep.fixed.items()
             if v.energy_median_mj is not None and k in measured}
        if e:
            sweep.energy_oracle_split = min(e, key=lambda k: (e[k], k))
    sweep.oracle_caveat = "; ".join(caveats) or None
    b.fixed_cache[key] = sweep
    return sweep


def frame_energy_mj(b: Bench, r: dict[str, Any], bw_mbps: float) -> float | None:
    """A measured frame's edge energy through the planner's energy model (scheduler.cost.EnergyModel)."""
    e = b.energy
    if e is None:
        return None
    t = r["timings_ms"]
    k = r["split"]
    if r["where"] == "local":
        energy = e.frame_mj(b.K, t.get("local", 0.0))
        if r.get("fallback_reason"):  # the head ran before the frame fell back to the edge
            energy += e.frame_mj(k, t.get("head", 0.0))
        return energy
    wire_ms = b.wire_ms(k, bw_mbps)
    head = t.get("head", 0.0)
    return e.frame_mj(k, head, wire_ms, bw_mbps * 1e6, max(0.0, t["end_to_end"] - head - wire_ms))


def fixed_stats(b: Bench, k: int, out: RunOutcome, bw: float | None) -> FixedRun:
    recs = ok_records(out.records, b.opts.warmup)
    run = FixedRun(split=k, **latency_stats([r["timings_ms"]["end_to_end"] for r in recs]))
    run.fallbacks = sum(1 for r in recs if r.get("fallback_reason"))
    run.failed = sum(1 for r in out.records if r.get("status") != "ok")
    run.stages_median_ms = {stage: median([r["timings_ms"][stage] for r in recs if stage in r["timings_ms"]])
                            for stage in STAGE_KEYS}
    if out.error or out.rc:
        run.error = out.error or f"exit {out.rc}"
    if b.energy is not None and bw:
        es = [e for r in recs if (e := frame_energy_mj(b, r, bw)) is not None]
        run.energy_median_mj = rnd(statistics.median(es)) if es else None
    return run


def adaptive_run(b: Bench, bw: float, rtt: float, objective: str = "min-latency") -> AdaptiveRun:
    b.set_link(bw, rtt)
    n = b.opts.adaptive_frames
    worst = max(b.predict_ms(k, bw, rtt) for k in b.splits)
    out = b.run_agent(f"adaptive-{objective}-{bw:g}M-{rtt:g}ms", n, ["--mode", "latency", *b.adaptive_flags(objective)],
                      min(worst, b.opts.max_frame_s * 1000))
    recs = ok_records(out.records)
    splits = [r["split"] for r in recs]
    own = latency_stats([r["timings_ms"]["end_to_end"] for r in recs if r["frame_id"] >= b.opts.warmup])
    res = AdaptiveRun(objective=objective, frames=len(recs), splits=splits, settled_split=settled_split(splits),
                      switches=count_switches(splits), fallbacks=sum(1 for r in recs if r.get("fallback_reason")),
                      **{f"own_{k}": v for k, v in own.items() if k != "frames"})
    if out.error or out.rc:
        res.error = out.error or f"exit {out.rc}"
    return res


def _ratio(a: float | None, b: float | None, nd: int) -> float | None:
    return rnd(a / b, nd) if a and b else None


def condition_result(b: Bench, sweep: Sweep, adaptive: AdaptiveRun) -> ConditionResult:
    fixed = sweep.fixed
    oracle, chosen = sweep.oracle_split, adaptive.settled_split

    def p95(k: int | None) -> float | None:
        return fixed[k].p95_ms if sweep.median(k) is not None and k is not None else None

    c, o = sweep.median(chosen), sweep.median(oracle)
    edge, cloud = sweep.median(b.K), sweep.median(0)
    cond = ConditionResult(
        bandwidth_mbps=sweep.bandwidth_mbps, rtt_ms=sweep.rtt_ms, fixed={str(k): v for k, v in fixed.items()},
        oracle_split=oracle, oracle_caveat=sweep.oracle_caveat, adaptive=adaptive, chosen_split=chosen,
        oracle_median_ms=o, oracle_p95_ms=p95(oracle), chosen_median_ms=c, chosen_p95_ms=p95(chosen),
        all_edge_median_ms=edge, all_cloud_median_ms=cloud, chosen_over_oracle=_ratio(c, o, 4),
        speedup_vs_all_edge=_ratio(edge, c, 3), speedup_vs_all_cloud=_ratio(cloud, c, 3),
        oracle_speedup_vs_all_edge=_ratio(edge, o, 3), oracle_speedup_vs_all_cloud=_ratio(cloud, o, 3))
    if chosen is not None and chosen not in fixed:
        cond.chosen_note = f"k={chosen} was not among the measured splits"
    elif chosen is not None and fixed[chosen].fell_back():
        cond.chosen_note = f"k={chosen}'s fixed run fell back to the edge: no latency of its own to compare"
    better = [x for x in (edge, cloud) if x is not None]
    if c and better:
        cond.better_of_edge_cloud_ms = min(better)
        cond.chosen_over_better_of_edge_cloud = _ratio(c, min(better), 4)
    return cond


def energy_result(b: Bench, sweep: Sweep, adaptive: AdaptiveRun) -> EnergyResult:
    def e(k: int | None) -> float | None:
        return sweep.fixed[k].energy_median_mj if sweep.median(k) is not None and k is not None else None

    oracle, chosen = sweep.energy_oracle_split, adaptive.settled_split
    c, o, edge, cloud = e(chosen), e(oracle), e(b.K), e(0)
    return EnergyResult(adaptive=adaptive, oracle_split=oracle, oracle_mj=o, chosen_split=chosen, chosen_mj=c,
                        all_edge_mj=edge, all_cloud_mj=cloud, chosen_over_oracle=_ratio(c, o, 4),
                        saving_vs_all_edge=_ratio(edge, c, 3), saving_vs_all_cloud=_ratio(cloud, c, 3))
