"""Targets of a bench result: PASS, MISS or N/A (not tested), each with its shortfall.

Works on the typed result the harness writes (splitpoint.bench.results), so `python -m
splitpoint.bench.report RESULT.json [--markdown FILE] [--plots DIR]` re-renders an earlier run.
The markdown tables are in report_tables.py, the plots in report_plots.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from splitpoint.bench import hindsight
from splitpoint.bench.report_plots import render_plots
from splitpoint.bench.report_tables import REPORT, is_report, render_markdown
from splitpoint.bench.results import BenchResult, ConditionResult, StepChange, StepResult, Target
from splitpoint.bench.stats import KEEP_UP_FRAMES
from splitpoint.bench.trace_results import TraceResult
from splitpoint.errors import ConfigError
from splitpoint.files import check_can_create, write_replacing

__all__ = ["evaluate_targets", "render_markdown", "render_plots"]

#: the issue's targets (figures the report shows; nothing here is tuned to meet them)
CHOSEN_OVER_ORACLE_MAX = 1.05
SETTLE_FRAMES_MAX = 5
SWITCHES_PER_STEP_MAX = 1
#: traces (issue 10): the adaptive agent's mean and p95 are at most the best fixed split's in
#: hindsight, within TRACE_SPREAD (the run-to-run spread of one split), its deadline misses no more;
#: and where the clairvoyant bound is at most TRACE_ROOM x the best fixed split, its mean is at most
#: TRACE_GAIN x the best fixed split's
TRACE_SPREAD = 1.02
TRACE_ROOM = 0.85
TRACE_GAIN = 0.9
#: an edge too slow for the camera alone (head(K) over the frame interval): the adaptive agent keeps
#: up by mixing paths - the median of its last KEEP_UP_FRAMES frames at most KEEP_UP_DRIFT x that of
#: its first, and its mean below every fixed split's (issue 10)
KEEP_UP_DRIFT = 1.5
THROUGHPUT_MIN = 0.9
GOODPUT_MIN = 0.9
ADDED_COST_MAX_MS = 1.0


def _or_q(x: float | None) -> str:
    return "?" if x is None else str(x)


def _t(name: str, target: str, measured: str, ok: bool | None, shortfall: str = "", detail: str = "") -> Target:
    return Target(name, target, measured, "N/A" if ok is None else "PASS" if ok else "MISS", shortfall, detail)


def _pts(excess: float) -> str:
    """A ratio's excess over its target in percentage points: one decimal, two under 0.1 point,
    "under 0.01" below that (a p95 of 1.0200x-and-a-bit against 1.02x read "0.0 pts over", which
    says nothing was missed)."""
    pts = excess * 100
    return "under 0.01" if abs(pts) < 0.01 else f"{pts:.2f}" if abs(pts) < 0.1 else f"{pts:.1f}"


def _at_least(name: str, of_what: str, measured: str, fraction: float | None, minimum: float) -> Target:
    """A target met when `fraction` (measured / its bound) reaches `minimum`."""
    if fraction is None:
        return _t(name, f">= {minimum:.0%} {of_what}", "not measured", None)
    return _t(name, f">= {minimum:.0%} {of_what}", f"{measured} = {fraction:.1%}", fraction >= minimum,
              "" if fraction >= minimum else f"{(minimum - fraction) * 100:.1f} pts short")


def _step_ratio(step: StepResult, rate: float, k: int | None, best: int | None) -> float | None:
    """Measured median latency of split k over the best split's, at `rate` Mbps (None: not measured)."""
    oracle = step.oracles.get(str(rate))
    med = oracle.median_ms if oracle is not None else {}
    a, b = med.get(str(k)), med.get(str(best))
    return a / b if a and b else None


def _cond_label(c: ConditionResult) -> str:
    return f"{c.bandwidth_mbps:g} Mbps/{c.rtt_ms:g} ms"


def _trace_target(tr: TraceResult) -> Target:
    name = f"trace {tr.trace}" + ("" if tr.error else f" ({tr.slice_label}, RTT {tr.rtt_ms:g} ms)")
    target = (f"mean, p95 <= {TRACE_SPREAD} x best fixed in hindsight, misses no more; mean <= {TRACE_GAIN} x "
              f"where the bound <= {TRACE_ROOM} x")
    a, best = tr.runs.get("adaptive"), tr.runs.get(tr.best_fixed or "")
    if a is None or best is None or not a.mean_ms or not best.mean_ms:
        return _t(name, target, tr.error or "not measured", None)
    mean_x = a.mean_ms / best.mean_ms
    cv = tr.clairvoyant
    bound_x = cv.mean_ms / best.mean_ms if cv is not None and cv.mean_ms else None
    room = bound_x is not None and bound_x <= TRACE_ROOM
    mean_max = TRACE_GAIN if room else TRACE_SPREAD
    measured = [f"mean {a.mean_ms:.1f} vs {tr.best_fixed} {best.mean_ms:.1f} ms = {mean_x:.3f}x"]
    short = []
    if mean_x > mean_max:
        short.append(f"mean {_pts(mean_x - mean_max)} pts over {mean_max}x"
                     + (f" (the bound is {bound_x:.2f}x)" if room else ""))
    if a.p95_ms and best.p95_ms:
        p95_x = a.p95_ms / best.p95_ms
        measured.append(f"p95 {a.p95_ms:.1f} vs {best.p95_ms:.1f} ms = {p95_x:.3f}x")
        if p95_x > TRACE_SPREAD:
            short.append(f"p95 {_pts(p95_x - TRACE_SPREAD)} pts over {TRACE_SPREAD}x")
    if a.deadline_misses is not None and best.deadline_misses is not None:
        measured.append(f"misses {a.deadline_misses} vs {best.deadline_misses}")
        if a.deadline_misses > best.deadline_misses:
            short.append(f"{a.deadline_misses - best.deadline_misses} more deadline misses")
    if cv is not None and bound_x is not None:
        text = f"bound {bound_x:.2f}x"
        if cv.mean_with_overhead_ms and cv.offload_overhead_ms is not None:
            text += (f" ({cv.mean_with_overhead_ms / best.mean_ms:.2f}x with the {cv.offload_overhead_ms:.1f} ms "
                     "per offload the fixed runs show over its model)")
        measured.append(text)
    switched = _switched_text(tr, best.mean_ms)
    if switched:
        measured.append(switched)
    if a.splits and set(a.splits) == {best.split}:
        # Two runs of one split: whatever separates them is run-to-run spread, not adaptation.
        measured.append(f"the agent ran k={best.split} on every frame")
    return _t(name, target, "; ".join(measured), not short, "; ".join(short))


def _switched_text(tr: TraceResult, best_mean_ms: float) -> str:
    """The fixed runs switched by window (bench/hindsight.py) against the best fixed split; ""
    when the runs' frames were not recorded (JSON before 2026-12-06)."""
    figures = hindsight.by_window({lbl: r.counted_ms for lbl, r in tr.fixed_runs().items() if r.counted_ms})
    if not figures:
        return ""

    def every(frames: int) -> str:
        return "frame" if frames == 1 else (f"{frames / tr.fps:g} s" if tr.fps else f"{frames} frames")

    def ratio(ms: float | None) -> str:
        return "-" if ms is None else f"{ms / best_mean_ms:.2f}x"

    windows = " / ".join(every(w) for w, _, _ in figures)
    return (f"the fixed runs switched every {windows} to the quickest over the window (hindsight): "
            + " / ".join(ratio(s) for _, s, _ in figures) + "; to the quickest over the window before: "
            + " / ".join(ratio(f) for _, _, f in figures))


def _keep_up_target(tr: TraceResult) -> Target | None:
    """Only for a replay whose edge cannot keep up with the camera alone (None otherwise)."""
    if not tr.edge_alone_ms or not tr.fps or tr.edge_alone_ms <= 1000 / tr.fps or tr.error:
        return None
    name = f"keeps up on {tr.trace} ({tr.slice_label}, RTT {tr.rtt_ms:g} ms; head(K) {tr.edge_alone_ms:.0f} ms)"
    target = (f"median of the last {KEEP_UP_FRAMES} frames <= {KEEP_UP_DRIFT} x the first {KEEP_UP_FRAMES}'s; "
              "mean below every fixed split's")
    a = tr.runs.get("adaptive")
    fixed = tr.fixed_runs()
    if a is None or a.mean_ms is None or not fixed:
        return _t(name, target, "not measured", None)
    if a.last_over_first_median is None:
        return _t(name, target, f"fewer than {2 * KEEP_UP_FRAMES} frames counted", None)
    lowest = min(fixed, key=lambda lbl: fixed[lbl].mean_ms or 0.0)
    low_ms = fixed[lowest].mean_ms or 0.0
    measured = (f"last/first {KEEP_UP_FRAMES} median {a.last_over_first_median:.2f}x"
                + (f" (the clairvoyant schedule's own: {cv_x:.2f}x, what the link alone moves it)"
                   if tr.clairvoyant and (cv_x := tr.clairvoyant.last_over_first_median) else "")
                + f"; mean {a.mean_ms:.1f} ms vs the lowest fixed {lowest} {low_ms:.1f} ms ({len(fixed)} fixed runs)")
    short = []
    if a.last_over_first_median > KEEP_UP_DRIFT:
        short.append(f"median drift {(a.last_over_first_median - KEEP_UP_DRIFT) * 100:.0f} pts over {KEEP_UP_DRIFT}x")
    if a.mean_ms >= low_ms:
        short.append(f"mean {a.mean_ms - low_ms:.1f} ms above {lowest}'s")
    return _t(name, target, measured, not short, "; ".join(short))


def evaluate_targets(r: BenchResult) -> list[Target]:
    out: list[Target] = []
    conds = [c for c in r.conditions or [] if c.chosen_over_oracle is not None]
    if r.conditions is not None:
        if conds:
            worst = max(conds, key=lambda c: c.chosen_over_oracle or 0.0)
            misses = [c for c in conds if (c.chosen_over_oracle or 0.0) > CHOSEN_OVER_ORACLE_MAX]
            out.append(_t(
                "chosen/oracle latency", f"<= {CHOSEN_OVER_ORACLE_MAX} at every condition",
                f"max {worst.chosen_over_oracle:.3f} ({_cond_label(worst)}); {len(conds) - len(misses)}/{len(conds)} within",
                not misses,
                "; ".join(f"{_cond_label(c)}: {c.chosen_over_oracle:.3f} (+{((c.chosen_over_oracle or 0.0) - CHOSEN_OVER_ORACLE_MAX) * 100:.1f} pts)"
                          for c in misses)))
            if len(conds) < len(r.conditions):
                out[-1].detail = (f"{len(r.conditions) - len(conds)} conditions without a ratio (a run failed, or "
                                 "fell back to the edge)")
            both = [c for c in conds if c.chosen_over_better_of_edge_cloud is not None]
            if both:
                worst = max(both, key=lambda c: c.chosen_over_better_of_edge_cloud or 0.0)
                misses = [c for c in both if (c.chosen_over_better_of_edge_cloud or 0.0) > 1.0]
                out.append(_t(
                    "never worse than the better of all-edge and all-cloud", "chosen <= min(k=0, k=K) at every condition",
                    f"max chosen/better {worst.chosen_over_better_of_edge_cloud:.3f} ({_cond_label(worst)})",
                    not misses,
                    "; ".join(f"{_cond_label(c)}: {((c.chosen_over_better_of_edge_cloud or 1.0) - 1) * 100:.1f}% slower"
                              for c in misses)))
        else:
            none = (f"no ratio at any of the {len(r.conditions)} conditions (a run failed, or fell back to the edge)"
                    if r.conditions else "no condition measured")
            out.append(_t("chosen/oracle latency", f"<= {CHOSEN_OVER_ORACLE_MAX} at every condition", none, None))
        energy = [c.energy.chosen_over_oracle for c in r.conditions
                  if c.energy is not None and c.energy.chosen_over_oracle is not None]
        if energy:
            worst_e = max(e for e in energy if e is not None)
            out.append(_t("chosen/oracle edge energy", f"<= {CHOSEN_OVER_ORACLE_MAX} at every condition",
                          f"max {worst_e:.3f}", worst_e <= CHOSEN_OVER_ORACLE_MAX,
                          "" if worst_e <= CHOSEN_OVER_ORACLE_MAX else f"+{(worst_e - CHOSEN_OVER_ORACLE_MAX) * 100:.1f} pts"))
    step = r.step
    if step is not None:
        chs = step.changes
        rates = step.rates_mbps
        first = step.oracles.get(str(rates[0])) if rates else None
        first_best = first.split if first is not None else None
        prev_best = [first_best] + [c.best_split for c in chs]
        # Splits within the chosen/oracle tolerance of the best count as best: the medians come
        # from separate runs, and a scheduler with hysteresis rightly stays on a near-tie.
        asks = [c for c, prev in zip(chs, prev_best, strict=False)
                if c.best_split != prev and (_step_ratio(step, c.to_mbps, prev, c.best_split) or 99)
                > CHOSEN_OVER_ORACLE_MAX]
        if chs and not asks:
            # Nothing to settle on: a PASS here would claim what was not tested.
            out.append(_t("settle after a step change", f"within {SETTLE_FRAMES_MAX} frames, on the new best split",
                          f"not tested: k={first_best} is the measured best split (or within "
                          f"{CHOSEN_OVER_ORACLE_MAX} of it) at {' and '.join(f'{x:g}' for x in sorted(set(rates)))} Mbps, "
                          f"so the step asks for no move; the agent ended on k={chs[-1].final_split} with "
                          f"{sum(c.switches for c in chs)} switches", None))
        elif chs:
            def on_best(c: StepChange) -> bool:
                ratio = _step_ratio(step, c.to_mbps, c.final_split, c.best_split)
                return c.settled_on_best or (ratio is not None and ratio <= CHOSEN_OVER_ORACLE_MAX)

            bad = [c for c in chs if not on_best(c) or c.frames_to_settle is None
                   or c.frames_to_settle > SETTLE_FRAMES_MAX]
            measured = "; ".join(
                f"-> {c.to_mbps:g} Mbps: {c.frames_to_settle} frames / {c.seconds_to_settle} s"
                + ("" if c.settled_on_best else f" (ended on k={c.final_split}, best k={c.best_split}, "
                   f"x{_or_q(c.final_over_best_latency)})")
                + ("" if c in asks else " (no move needed)")
                for c in chs)
            out.append(_t("settle after a step change",
                          f"within {SETTLE_FRAMES_MAX} frames, on the new best split (or one within {CHOSEN_OVER_ORACLE_MAX}x of it)",
                          measured, not bad,
                          "; ".join(f"-> {c.to_mbps:g} Mbps: "
                                    + (f"{c.frames_to_settle - SETTLE_FRAMES_MAX} frames late"
                                       if c.frames_to_settle is not None and c.frames_to_settle > SETTLE_FRAMES_MAX
                                       else f"did not settle on the best split k={c.best_split} "
                                            f"(latency x{_or_q(c.final_over_best_latency)})")
                                    for c in bad)))
        else:
            out.append(_t("settle after a step change", f"within {SETTLE_FRAMES_MAX} frames", step.error or "no change", None))
        if chs:  # also when no move was needed: switching anyway is flapping
            worst_sw = max(c.switches for c in chs)
            out.append(_t("switches per step", f"<= {SWITCHES_PER_STEP_MAX}",
                          ", ".join(str(c.switches) for c in chs), worst_sw <= SWITCHES_PER_STEP_MAX,
                          "" if worst_sw <= SWITCHES_PER_STEP_MAX else f"{worst_sw - SWITCHES_PER_STEP_MAX} extra"))
    for tr in r.traces or []:
        out.append(_trace_target(tr))
        keep_up = _keep_up_target(tr)
        if keep_up is not None:
            out.append(keep_up)
    if r.throughput is not None:
        for run in r.throughput.runs:
            out.append(_at_least(f"throughput mode k={run.split} ({run.limiting_stage}-bound)",
                                 "of 1/max(head, transfer, tail)", f"{run.fps} fps of {run.bound_fps}",
                                 run.fps_over_bound, THROUGHPUT_MIN))
    gp = r.goodput
    if gp is not None:
        out.append(_at_least(f"goodput at {gp.shaped_mbps:g} Mbps (k={gp.split}, {gp.wire_bytes} B)",
                             "of the shaped rate", f"{gp.goodput_mbps} Mbps", gp.goodput_over_rate, GOODPUT_MIN))
    ov = r.overhead
    if ov is not None:
        v = ov.added_ms
        out.append(_t(f"added cost per frame ({ov.tensor_bytes / 1000:.0f} KB cut tensor)", f"< {ADDED_COST_MAX_MS:g} ms",
                      f"{v:.3f} ms (splitpoint {ov.splitpoint.median_ms:.3f} - raw gRPC {ov.raw_grpc.median_ms:.3f})",
                      v < ADDED_COST_MAX_MS, "" if v < ADDED_COST_MAX_MS else f"{v - ADDED_COST_MAX_MS:.3f} ms over"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m splitpoint.bench.report", description="re-render a bench result")
    ap.add_argument("result", help="the JSON `splitpoint bench --json` wrote")
    ap.add_argument("--markdown", help="write the markdown here (default: print)")
    ap.add_argument("--plots", help="write PNG plots into this directory")
    args = ap.parse_args(argv)
    try:
        r = BenchResult.load(args.result)
    except (OSError, ValueError) as exc:
        ap.error(f"{args.result}: {exc}")
    r.targets = evaluate_targets(r)
    errors_before = len(r.errors)
    if args.plots:
        try:
            check_can_create("--plots", args.plots, is_dir=True)
        except ConfigError as exc:
            ap.error(str(exc))
        r.plots = render_plots(r, Path(args.plots))
    md = render_markdown(r)
    if args.markdown:
        try:  # an earlier report, or nothing: not the notes the name was meant for
            write_replacing(args.markdown, md, "--markdown", REPORT, is_report)
        except ConfigError as exc:
            ap.error(str(exc))
    else:
        print(md)
    return 1 if len(r.errors) > errors_before else 0  # a plot could not be written


if __name__ == "__main__":
    sys.exit(main())
