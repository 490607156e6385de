"""The peers' rules in the bench: which split each picks per trace replay and condition, whose run it is.

splitpoint/bench/peers.py holds the rules (pure functions over the planner's cost model); this
module gives them the bench's inputs and files their picks. Every rule picks among the splits
the stage measures (`b.splits`) with the same cost model the agent plans with (`b.cost`: the
run's profiles and energy model, the reference power table unless --power-table is given).

* A trace replay: the start-up bandwidth is what the slice delivers over its first second; the
  nominal bandwidth --peer-nominal-mbps, else the whole trace's long-run mean. A rule's split
  was already run fixed over the same slice in the same replay (every measured split is), so its
  row reuses that run (`reused_from` says which) instead of running the same split twice; a
  split the replay did not run (too slow on the wire: `skipped`) is not run for the rule either.
* A condition: the link is a constant rate, so the start-up measurement is that rate; the
  nominal bandwidth --peer-nominal-mbps, else the rate. The figures are the fixed runs' medians.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from splitpoint.bench import peers
from splitpoint.bench.trace_results import PeerPickResult, TraceResult, TraceRunResult
from splitpoint.errors import ConfigError
from splitpoint.traces import BandwidthTrace

if TYPE_CHECKING:
    from scheduler.cost import CostModel
    from splitpoint.bench.conditions import Sweep
    from splitpoint.bench.harness import Bench

#: the deadline of the deadline rule at a condition when --deadline-ms is not given (a condition
#: has no camera rate to take one frame interval from)
CONDITION_DEADLINE_MS = 100.0


def pick(cost: CostModel, splits: list[int], startup_bps: float, nominal_bps: float, rtt_ms: float,
         deadline_ms: float) -> list[PeerPickResult]:
    """Both rules' picks among `splits`, in PEER_RULES order; a rule that cannot pick says why."""
    rules: list[tuple[str, Callable[[], peers.PeerPick]]] = [
        (peers.RULE_STARTUP, lambda: peers.fixed_from_startup(cost, startup_bps, rtt_ms, splits=splits)),
        (peers.RULE_DEADLINE, lambda: peers.deadline_at_nominal(cost, nominal_bps, rtt_ms, deadline_ms,
                                                                splits=splits)),
    ]
    out = []
    for rule, choose in rules:
        try:
            p = choose()
        except ConfigError as exc:
            out.append(PeerPickResult(rule=rule, error=str(exc)))
            continue
        out.append(PeerPickResult(**p.to_dict()))  # type: ignore[arg-type]
    return out


def trace_picks(b: Bench, slice_trace: BandwidthTrace, whole: BandwidthTrace, rtt_ms: float,
                deadline_ms: float) -> list[PeerPickResult]:
    """The picks for one replay of `slice_trace` (the trace rotated to the slice's start: t = 0 is
    the first frame's time, as in every run of the replay)."""
    assert b.cost is not None
    startup = peers.startup_bandwidth_bps(slice_trace, start_s=0.0)
    nominal = b.opts.peer_nominal_mbps * 1e6 if b.opts.peer_nominal_mbps else whole.mean_bps
    return pick(b.cost, b.splits, startup, nominal, rtt_ms, deadline_ms)


def rule_runs(entry: TraceResult, run_fixed: Callable[[str, int], TraceRunResult]) -> None:
    """File each rule's row in `entry.runs` under the rule's name: the replay's fixed run of the
    picked split when there is one (reused, not run again), else a run of it made now."""
    for p in entry.peers:
        if p.split is None:
            entry.runs[p.rule] = TraceRunResult(skipped=f"the rule picked no split: {p.error}")
            continue
        label = f"k={p.split}"
        fixed = entry.runs.get(label)
        if fixed is not None:
            entry.runs[p.rule] = dataclasses.replace(fixed, reused_from=label)
            p.run = label
        else:
            entry.runs[p.rule] = run_fixed(p.rule, p.split)


def condition_picks(b: Bench, sweep: Sweep) -> list[PeerPickResult]:
    """The picks at one condition, with the medians of their splits' fixed runs (no extra runs)."""
    assert b.cost is not None
    bw = sweep.bandwidth_mbps * 1e6
    nominal = b.opts.peer_nominal_mbps * 1e6 if b.opts.peer_nominal_mbps else bw
    out = pick(b.cost, b.splits, bw, nominal, sweep.rtt_ms, b.opts.deadline_ms or CONDITION_DEADLINE_MS)
    for p in out:
        run = sweep.fixed.get(p.split) if p.split is not None else None
        if run is not None:
            p.run, p.median_ms, p.p95_ms = f"k={p.split}", run.median_ms, run.p95_ms
    return out
