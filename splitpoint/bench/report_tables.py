"""The markdown report of a bench result: header, targets, and one table per stage."""

from __future__ import annotations

import re
from typing import Any

from splitpoint.bench import clairvoyant
from splitpoint.bench.emulation import header_lines
from splitpoint.bench.results import BenchResult, ConditionResult, FixedRun
from splitpoint.bench.trace_results import PEER_RULES, ClairvoyantBound, TraceResult, TraceRunResult


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


REPORT = "a splitpoint bench report (markdown)"
#: how every report begins (_header): "## `model`: splitpoint bench ...", a blank line, "- bundle: `..."
_REPORT_START = re.compile(rb"## `[^`\n]*`: [^\n]*\n\n- bundle: `")


def is_report(data: bytes) -> bool:
    """An earlier report, which `--markdown` may replace (and nothing else: splitpoint/files.py)."""
    return _REPORT_START.match(data) is not None


def render_markdown(r: BenchResult) -> str:
    lines = _header(r)
    if r.targets:
        lines += ["### Targets", "", "| target | goal | measured | status | shortfall |", "| --- | --- | --- | --- | --- |"]
        for t in r.targets:
            lines.append(f"| {t.name} | {t.target} | {t.measured} | **{t.status}** | {t.shortfall or '-'} |")
        lines.append("")
    if r.conditions:
        lines += _conditions(r.conditions, r.power)
    lines += _step(r)
    if r.traces:
        lines += _trace_summary(r.traces)
    for tr in r.traces or []:
        lines += _trace(tr)
    lines += _throughput(r)
    lines += _overhead(r)
    if r.plots:
        lines.append("plots: " + ", ".join(f"`{p}`" for p in r.plots))
        lines.append("")
    return "\n".join(lines)


def _header(r: BenchResult) -> list[str]:
    b, mach = r.bundle, r.machine
    pin = mach.get("pinning", {})
    lines = [f"## `{b.model}`: {' '.join(r.command)}", ""]
    lines.append(f"- bundle: `{b.path}` ({b.model}, K = {b.num_layers}, digest `{b.digest[:23]}...`), "
                 f"splits measured: {b.measured_splits}")
    lines.append(f"- machine: {mach.get('cpu_model') or mach.get('cpu')}, {mach.get('cores')} cores, {mach.get('os')}, "
                 f"Python {mach.get('python')}; {pin.get('note', '')}; edge worker: "
                 f"{(pin.get('edge_worker') or {}).get('reason', '-')}")
    if pin.get("edge_slowdown"):
        lines.append(f"- **emulated edge device: {pin['edge_slowdown']:g}x slower than the worker's core** (each head run "
                     "lasts the factor x its median native time; the link, the server and the agent are real)")
    lines += header_lines(mach.get("emulation"))
    if r.power:
        lines.append(f"- energy figures: {energy_source(r.power)}; radio model `{r.power.get('radio_link')}`")
    lines.append(f"- wall time {r.wall_time_s} s; stages (s): "
                 + ", ".join(f"{k} {v}" for k, v in r.stage_seconds.items())
                 + ("" if r.complete else " (**incomplete run**)"))
    if r.errors:
        lines.append(f"- errors: {len(r.errors)}: " + "; ".join(r.errors[:5]))
    lines.append("")
    return lines


def energy_source(power: dict[str, Any] | None) -> str:
    """What every energy figure of the report is: modelled from a power table, never metered."""
    if not power:
        return "no energy figures"
    name = str(power.get("table", "?")).rsplit("/", 1)[-1]
    ref = ", the shipped reference table" if power.get("reference") else ""
    return f"energy modelled from {power.get('device') or 'the edge device'} (`{name}`{ref}), not metered"


def _fixed_cell(f: FixedRun | None) -> str:
    if f is None:
        return "-"
    if f.median_ms is not None:  # fallbacks shown: the frames were the edge's, not this split's
        return _f(f.median_ms, 2) + (f" ({f.fallbacks}/{f.frames} fell back)" if f.fallbacks else "")
    return f">{f.lower_bound_ms:.0f} (not run)" if f.lower_bound_ms else "-"


def _conditions(conds: list[ConditionResult], power: dict[str, Any] | None = None) -> list[str]:
    lines = ["### Conditions: oracle vs the adaptive agent (median end-to-end ms)", "",
             "| uplink | RTT | oracle k | oracle median / p95 | agent settled k | its median / p95 | chosen/oracle "
             "| speed-up vs all-edge | vs all-cloud | all-edge | all-cloud | agent's own median | switches |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in conds:
        a = c.adaptive
        lines.append(
            f"| {c.bandwidth_mbps:g} Mbps | {c.rtt_ms:g} ms | {_f(c.oracle_split)} | "
            f"{_f(c.oracle_median_ms, 2)} / {_f(c.oracle_p95_ms, 2)} | {_f(c.chosen_split)} | "
            f"{_f(c.chosen_median_ms, 2)} / {_f(c.chosen_p95_ms, 2)} | {_f(c.chosen_over_oracle, 3)} | "
            f"{_f(c.speedup_vs_all_edge, 2)}x | {_f(c.speedup_vs_all_cloud, 2)}x | "
            f"{_f(c.all_edge_median_ms, 2)} | {_f(c.all_cloud_median_ms, 2)} | "
            f"{_f(a.own_median_ms, 2)} | {_f(a.switches)}"
            + (f" ({a.fallbacks}/{a.frames} fell back)" if a.fallbacks else "") + " |")
    notes = [f"- {c.bandwidth_mbps:g} Mbps / {c.rtt_ms:g} ms: {note}"
             for c in conds for note in (c.oracle_caveat, c.chosen_note) if note]
    lines += ["", *notes] if notes else []
    lines.append("")
    splits = sorted({int(k) for c in conds for k in c.fixed})
    lines += ["Median end-to-end latency (ms) of every fixed split; **bold** = oracle, _italic_ = the agent's "
              "settled split:", "",
              "| uplink / RTT | " + " | ".join(f"k={k}" for k in splits) + " |",
              "| --- | " + " | ".join("---:" for _ in splits) + " |"]
    for c in conds:
        cells = []
        for k in splits:
            cell = _fixed_cell(c.fixed.get(str(k)))
            if k == c.chosen_split:
                cell = f"_{cell}_"
            if k == c.oracle_split:
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {c.bandwidth_mbps:g} Mbps / {c.rtt_ms:g} ms | " + " | ".join(cells) + " |")
    lines.append("")
    energy = [(c, c.energy) for c in conds if c.energy is not None]
    if energy:
        lines += [f"Edge energy (median mJ per frame, power table + radio model; {energy_source(power)}):", "",
                  "| uplink | RTT | oracle k | oracle mJ | agent k | its mJ | chosen/oracle | saving vs all-edge | "
                  "vs all-cloud |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c, e in energy:
            lines.append(f"| {c.bandwidth_mbps:g} Mbps | {c.rtt_ms:g} ms | {_f(e.oracle_split)} | "
                         f"{_f(e.oracle_mj, 1)} | {_f(e.chosen_split)} | {_f(e.chosen_mj, 1)} | "
                         f"{_f(e.chosen_over_oracle, 3)} | {_f(e.saving_vs_all_edge, 2)}x | "
                         f"{_f(e.saving_vs_all_cloud, 2)}x |")
        lines.append("")
    lines += _condition_peers(conds)
    return lines


def _condition_peers(conds: list[ConditionResult]) -> list[str]:
    """Each peer rule's split at each condition, on the fixed runs' medians (no extra runs)."""
    if not any(c.peers for c in conds):
        return []
    rules = list(PEER_RULES)
    lines = ["Peers' rules at each condition (their split's fixed run: median / p95 ms, over the oracle's median):",
             "", "| uplink / RTT | oracle | " + " | ".join(rules) + " |", "| --- | ---: |" + " ---: |" * len(rules)]
    for c in conds:
        by_rule = {p.rule: p for p in c.peers}
        cells = []
        for rule in rules:
            p = by_rule.get(rule)
            if p is None or p.split is None:
                cells.append("-" if p is None else f"no pick: {p.error}")
                continue
            ratio = f", x{p.median_ms / c.oracle_median_ms:.3f}" if p.median_ms and c.oracle_median_ms else ""
            cells.append(f"k={p.split}: {_f(p.median_ms, 2)} / {_f(p.p95_ms, 2)}{ratio}"
                         + ("" if p.feasible else " (none met the deadline: fastest)"))
        lines.append(f"| {c.bandwidth_mbps:g} Mbps / {c.rtt_ms:g} ms | k={_f(c.oracle_split)}: "
                     f"{_f(c.oracle_median_ms, 2)} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _step(r: BenchResult) -> list[str]:
    step = r.step
    if not step:
        return []
    lines = [f"### Step change {' -> '.join(f'{x:g}' for x in step.rates_mbps)} Mbps "
             f"(RTT {step.rtt_ms:g} ms, {step.fps:g} fps, {step.phase_frames} frames per phase)", "",
             "| change | at s | best split | agent ended on | frames to settle | seconds to settle | switches "
             "| latency of its split / best |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in step.changes:
        lines.append(f"| -> {c.to_mbps:g} Mbps | {_f(c.t_s, 2)} | {c.best_split} | {c.final_split} | "
                     f"{_f(c.frames_to_settle)} | {_f(c.seconds_to_settle, 3)} | {c.switches} | "
                     f"{_f(c.final_over_best_latency, 3)} |")
    if step.error:
        lines.append(f"\n{step.error}")
    lines.append("")
    return lines


def _mpm(mean: float | None, p95: float | None, misses: int | None, counted: int | None) -> str:
    """mean / p95 ms, misses/frames: one cell of the trace summary."""
    if mean is None:
        return "-"
    return f"{_f(mean, 1)} / {_f(p95, 1)}, {_f(misses)}/{_f(counted)}"


def _run_cell(run: TraceRunResult | None) -> str:
    return "-" if run is None or run.skipped else _mpm(run.mean_ms, run.p95_ms, run.deadline_misses, run.counted_frames)


def _rule_cell(tr: TraceResult, rule: str) -> str:
    """A peer rule's cell of the summary: its split, then its run's figures."""
    run = tr.runs.get(rule)
    if run is None:
        return "-"
    if run.skipped:
        return f"k={_f(run.split)}: not run" if run.split is not None else "no pick"
    return f"k={run.split}: {_run_cell(run)}"


def _rule_name(tr: TraceResult, label: str, run: TraceRunResult) -> str:
    """A peer rule's row name: the rule, its split, whose run it is, and an infeasible pick said."""
    pick = next((p for p in tr.peers if p.rule == label), None)
    name = f"{label} (k={_f(run.split)}" + (f"; the {run.reused_from} run above" if run.reused_from else "") + ")"
    if pick is not None and not pick.feasible:
        name += " (no split met the deadline at nominal: fastest taken)"
    return name


def _trace_summary(traces: list[TraceResult]) -> list[str]:
    """Every trace run in one table: adaptive, best fixed, the peers' rules, the clairvoyant bound."""
    peers = list(PEER_RULES)
    lines = ["### Traces: summary (mean / p95 ms, deadline misses / frames)", "",
             "| trace | slice | RTT | adaptive | best fixed | " + " | ".join(peers)
             + " | clairvoyant | adaptive / best fixed | adaptive / clairvoyant |",
             "| --- | --- | ---: |" + " ---: |" * (len(peers) + 5)]
    for tr in traces:
        if tr.error:
            lines.append(f"| {tr.trace} | - | - | {tr.error} |" + " |" * (len(peers) + 4))
            continue
        best = tr.runs.get(tr.best_fixed or "")
        cv = tr.clairvoyant or ClairvoyantBound(error="not computed")
        lines.append(f"| {tr.trace} | {tr.slice_label} | {tr.rtt_ms:g} ms | {_run_cell(tr.runs.get('adaptive'))} | "
                     + (f"{tr.best_fixed}: {_run_cell(best)}" if best is not None else "-") + " | "
                     + " | ".join(_rule_cell(tr, p) for p in peers) + " | "
                     + ("-" if cv.error else _mpm(cv.mean_ms, cv.p95_ms, cv.deadline_misses, cv.frames))
                     + f" | {_f(tr.adaptive_over_best_fixed, 3)} | {_f(cv.adaptive_over_clairvoyant, 3)} |")
    lines += ["", "Peers' rules: " + "; ".join(f"**{k}**: {v}" for k, v in PEER_RULES.items())
              + " (- where the run did not include them).", ""]
    return lines


def _trace(tr: TraceResult) -> list[str]:
    if tr.error:
        return [f"### Trace {tr.trace}: {tr.error}", ""]
    lines = [f"### Trace {tr.trace}: {tr.slice_label} (mean {tr.slice_mean_mbps} Mbps), "
             f"{tr.fps:g} fps, RTT {tr.rtt_ms:g} ms, deadline {tr.deadline_ms:g} ms", "",
             "| run | frames | mean ms | median ms | p95 ms | deadline misses | fallbacks | run time s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, run in tr.runs.items():
        name = label + (" (best fixed)" if label == tr.best_fixed else "")
        if label in PEER_RULES:
            name = _rule_name(tr, label, run)
        if run.skipped:
            lines.append(f"| {name} | - | not run: {run.skipped} | | | | | |")
            continue
        if label == "adaptive":
            name = "**adaptive** (" + ", ".join(f"k={k}: {n}" for k, n in run.split_counts.items()) + ")"
        lines.append(f"| {name} | {run.frames} | {_f(run.mean_ms, 2)} | {_f(run.median_ms, 2)} | "
                     f"{_f(run.p95_ms, 2)} | {run.deadline_misses}/{run.counted_frames} | "
                     f"{run.fallbacks} | {_f(run.duration_s, 1)} |")
    lines += clairvoyant.markdown_row(tr)
    ratios = f"\nadaptive / best fixed in hindsight ({tr.best_fixed}): **{_f(tr.adaptive_over_best_fixed, 3)}**"
    cv = tr.clairvoyant
    if cv is not None and cv.adaptive_over_clairvoyant is not None:
        ratios += f"; adaptive / clairvoyant ({cv.kind}), the regret: **{_f(cv.adaptive_over_clairvoyant, 3)}**"
    lines.append(ratios + "\n")
    return lines


def _throughput(r: BenchResult) -> list[str]:
    tp = r.throughput
    if not tp:
        return []
    lines = [f"### Throughput mode ({tp.bandwidth_mbps:g} Mbps, no added delay, window {tp.window}, "
             f"{tp.frames} frames)", "",
             "| split | wire bytes | head ms | transfer ms | tail ms | bound fps | measured fps | of bound | goodput Mbps |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in tp.runs:
        st = run.stage_ms
        lines.append(f"| {run.split} | {run.wire_bytes} | {_f(st.get('head'), 2)} | {_f(st.get('transfer'), 2)} | "
                     f"{_f(st.get('tail'), 2)} | {_f(run.bound_fps, 1)} ({run.limiting_stage}) | "
                     f"{_f(run.fps, 1)} | {_f((run.fps_over_bound or 0) * 100, 1)}% | "
                     f"{_f(run.goodput_mbps, 2)} |")
    lines.append("")
    return lines


def _overhead(r: BenchResult) -> list[str]:
    ov = r.overhead
    if not ov:
        return []
    sp, raw = ov.splitpoint, ov.raw_grpc
    lines = [f"### Added cost per frame ({ov.tensor_bytes} B int8 cut tensor, {sp.frames} frames each)", "",
             "| path | median ms | p90 ms | mean ms |", "| --- | ---: | ---: | ---: |",
             f"| splitpoint Infer stream, zero-cost tail | {sp.median_ms:.3f} | {sp.p90_ms:.3f} | {sp.mean_ms:.3f} |",
             f"| raw gRPC bytes stream, same sizes | {raw.median_ms:.3f} | {raw.p90_ms:.3f} | {raw.mean_ms:.3f} |",
             f"| **added** | **{ov.added_ms:.3f}** | | |", "",
             "pieces alone (median us): " + ", ".join(f"{k.removesuffix('_us').replace('_', ' ')} {v}"
                                                      for k, v in ov.pieces.items())]
    res = ov.end_to_end_residual_ms
    if res is not None:
        lines.append(f"\nin the real runs, end-to-end minus head, server, wire time and RTT: median {res.median} ms "
                     f"over {res.runs} runs (includes the link emulator's own scheduling)")
    lines.append("")
    return lines
