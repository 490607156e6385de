"""PNG plots of a bench result: latency against split per condition, the step change, the traces."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

from splitpoint.bench.results import BenchResult, ConditionResult, StepResult
from splitpoint.bench.trace_results import TraceResult
from splitpoint.files import write_atomically


def _plot_tag(r: BenchResult) -> str:
    """File-name stem of a run's plots: the model, and the emulated device or slowdown when there is one
    (so a device run does not overwrite the native run's plots)."""
    tag = r.bundle.model
    device = _device_name(r)
    if device:
        return f"{tag}-{device.rsplit('.', 1)[0]}"
    slowdown = r.machine.get("pinning", {}).get("edge_slowdown")
    return f"{tag}-x{slowdown:g}" if slowdown else tag


def _device_name(r: BenchResult) -> str | None:
    """The --edge-device file's name, when the run emulated one."""
    emu = r.machine.get("emulation") or {}
    return Path(str(emu.get("path", "device"))).name if emu.get("mode") == "device" else None


def render_plots(r: BenchResult, out_dir: Path) -> list[str]:
    """PNG plots; [] (with a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plots skipped: matplotlib is not installed (pip install '.[bench]' from a splitpoint checkout,"
              " or the splitpoint wheel with [bench])", file=sys.stderr)
        return []
    written: list[str] = []
    try:  # after a run of hours the markdown still comes: a plot that cannot be written is named
        _render(plt, r, out_dir, written)
    except OSError as exc:
        # among the run's errors: a full disk exited 0 with the plots missing
        msg = (f"plots = {exc.filename or out_dir}: could not be written ({exc.strerror or exc}); "
               f"{len(written)} written before it")
        print(f"error: {msg}", file=sys.stderr)
        r.errors.append(msg)
    return written


def _render(plt: Any, r: BenchResult, out_dir: Path, written: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = r.bundle.model
    slowdown = r.machine.get("pinning", {}).get("edge_slowdown")
    if slowdown:
        model = f"{model} (edge {slowdown:g}x slower)"
    if _device_name(r):
        model = f"{model} (edge device: {_device_name(r)})"
    tag = _plot_tag(r)
    K = r.bundle.num_layers or 1
    if r.conditions:
        written.append(_latency_vs_split(plt, r.conditions, model, tag, K, out_dir))
    if r.step and r.step.frames:
        written.append(_step_plot(plt, r.step, model, tag, K, out_dir))
    traces = [t for t in r.traces or [] if "adaptive" in t.runs and t.runs["adaptive"].t_s]
    # one figure per trace RTT (a run replays every slice at each): the file names say which
    for rtt in sorted({t.rtt_ms for t in traces}):
        written.append(_traces_plot(plt, [t for t in traces if t.rtt_ms == rtt], model, tag, K, out_dir))


def _latency_vs_split(plt: Any, conds: list[ConditionResult], model: str, tag: str, K: int, out_dir: Path) -> str:
    bws = sorted({c.bandwidth_mbps for c in conds})
    rtts = sorted({c.rtt_ms for c in conds})
    ncols = min(4, len(bws))
    nrows = (len(bws) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, bw in enumerate(bws):
        ax = axes[i // ncols][i % ncols]
        for j, rtt in enumerate(rtts):
            c = next((c for c in conds if c.bandwidth_mbps == bw and c.rtt_ms == rtt), None)
            if c is None:
                continue
            pts = sorted((int(k), f.median_ms) for k, f in c.fixed.items() if f.median_ms is not None)
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            col = colors[j % len(colors)]
            ax.plot(xs, ys, "-", marker=".", color=col, label=f"RTT {rtt:g} ms")
            o = c.oracle_split
            if o is not None and c.median(o) is not None:
                ax.plot([o], [c.median(o)], "*", color=col, markersize=14, markeredgecolor="k",
                        label="oracle" if j == 0 else None)
            ch = c.chosen_split
            if ch is not None and c.median(ch) is not None:
                ax.plot([ch], [c.median(ch)], "o", markersize=13, markerfacecolor="none",
                        markeredgecolor=col, markeredgewidth=2, label="agent's choice" if j == 0 else None)
        ax.set_yscale("log")
        ax.set_xlim(-0.5, K + 0.5)  # the whole split range, also where only some splits were measured
        ax.set_title(f"{bw:g} Mbps uplink")
        ax.set_xlabel("split k (layers on the edge)")
        if i % ncols == 0:
            ax.set_ylabel("median end-to-end ms")
        ax.grid(True, which="both", alpha=0.3)
    for i in range(len(bws), nrows * ncols):
        axes[i // ncols][i % ncols].axis("off")
    axes[0][0].legend(fontsize=7)
    return _save(plt, fig, f"{model}: latency against split (star: oracle, circle: the adaptive agent's settled split)",
                 out_dir / f"bench-{tag}-latency-vs-split.png")


def _step_plot(plt: Any, step: StepResult, model: str, tag: str, K: int, out_dir: Path) -> str:
    fr = step.frames
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(9, 6.5), sharex=True)
    t_end = max(f.t_s or 0.0 for f in fr) + 0.5
    ts, rates = [0.0], [step.rates_mbps[0]]
    for c in step.changes:
        ts += [c.t_s or 0.0, c.t_s or 0.0]
        rates += [rates[-1], c.to_mbps]
    ts.append(t_end)
    rates.append(rates[-1])
    a1.plot(ts, rates, "-", color="tab:blue")
    a1.set_ylabel("uplink Mbps")
    a1.set_yscale("log")
    a2.step([f.t_s for f in fr], [f.split for f in fr], where="post", color="tab:orange", label="agent's split")
    a2.scatter([f.t_s for f in fr], [f.split for f in fr], s=8, color="tab:orange")
    bounds = [0.0] + [c.t_s or 0.0 for c in step.changes] + [t_end]
    first = step.oracles.get(str(step.rates_mbps[0]))
    bests = [first.split if first else None] + [c.best_split for c in step.changes]
    for (t0, t1), best in zip(zip(bounds, bounds[1:], strict=False), bests, strict=False):
        a2.plot([t0, t1], [best, best], "--", color="k", alpha=0.6)
    a2.plot([], [], "--", color="k", alpha=0.6, label="best fixed split (measured)")
    a2.set_ylabel("split k")
    a2.set_ylim(-0.5, K + 0.5)
    a2.legend(fontsize=7, loc="best")
    a3.plot([f.t_s for f in fr], [f.end_to_end_ms for f in fr], ".-", color="tab:green", label="per frame")
    deadline = step.deadline_ms
    if deadline:
        a3.axhline(deadline, color="tab:red", alpha=0.6, linestyle=":", label=f"deadline {deadline:g} ms")
        late = [f for f in fr if f.end_to_end_ms > deadline]
        if late:
            a3.plot([f.t_s for f in late], [f.end_to_end_ms for f in late], "x", color="tab:red",
                    markersize=8, label=f"{len(late)} over the deadline")
    a3.legend(fontsize=7, loc="best")
    a3.set_yscale("log")
    a3.set_ylabel("end-to-end ms")
    a3.set_xlabel("seconds since the run started")
    for ax in (a1, a2, a3):
        for c in step.changes:
            ax.axvline(c.t_s, color="gray", alpha=0.4)
        ax.grid(True, alpha=0.3)
    return _save(plt, fig, f"{model}: step change {' -> '.join(f'{x:g}' for x in step.rates_mbps)} Mbps",
                 out_dir / f"bench-{tag}-step-change.png")


def _traces_plot(plt: Any, traces: list[TraceResult], model: str, tag: str, K: int, out_dir: Path) -> str:
    # Per trace slice (all at one RTT), three panels on one time axis: the uplink, the agent's split
    # against the best fixed split, and each frame's latency against the deadline (misses in red).
    fig, axes = plt.subplots(3 * len(traces), 1, figsize=(9, 5.2 * len(traces)), sharex=False,
                             gridspec_kw={"height_ratios": [1, 1, 1.3] * len(traces)})
    for n, tr in enumerate(traces):
        a1, a2, a3 = axes[3 * n:3 * n + 3]
        a = tr.runs["adaptive"]
        rates = tr.slice_rates_mbps
        t_s = [t or 0.0 for t in a.t_s]
        t_end = max(tr.seconds or 0, (max(t_s) if t_s else 0)) + 0.5
        a1.step([i * 0.5 for i in range(len(rates))], rates, where="post", color="tab:blue")
        a1.set_ylabel("uplink Mbps")
        a1.set_title(f"{tr.trace} {tr.slice_label}: adaptive mean {a.mean_ms or 0:.1f} ms vs best fixed {tr.best_fixed} "
                     f"{tr.best_fixed_mean_ms or 0:.1f} ms ({tr.fps:g} fps, RTT {tr.rtt_ms:g} ms)")
        a2.step(t_s, a.splits, where="post", color="tab:orange", label="agent's split")
        a2.scatter(t_s, a.splits, s=8, color="tab:orange")
        best = tr.best_fixed
        if best:
            kb = int(str(best).split("=")[1])
            a2.plot([0, t_end], [kb, kb], "--", color="k", alpha=0.6, label=f"best fixed split in hindsight ({best})")
        a2.set_ylim(-0.5, K + 0.5)
        a2.set_ylabel("split k")
        a2.legend(fontsize=7, loc="best")
        deadline = tr.deadline_ms
        ms = a.end_to_end_ms
        a3.plot(t_s, ms, ".-", color="tab:green", label="adaptive, per frame")
        a3.axhline(deadline, color="tab:red", alpha=0.6, linestyle=":", label=f"deadline {deadline:g} ms")
        late = [(t, v) for t, v in zip(t_s, ms, strict=False) if v > deadline]
        if late:
            a3.plot([t for t, _ in late], [v for _, v in late], "x", color="tab:red", markersize=8,
                    label=f"{len(late)} over the deadline")
        a3.set_yscale("log")
        a3.set_ylabel("end-to-end ms")
        a3.set_xlabel("seconds into the trace")
        a3.legend(fontsize=7, loc="best")
        for ax in (a1, a2, a3):
            ax.set_xlim(0, t_end)
            ax.grid(True, alpha=0.3)
    return _save(plt, fig, f"{model}: replayed uplink traces, RTT {traces[0].rtt_ms:g} ms",
                 out_dir / f"bench-{tag}-traces-rtt{traces[0].rtt_ms:g}.png")


def _save(plt: Any, fig: Any, title: str, path: Path) -> str:
    png = io.BytesIO()
    try:
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(png, format="png", dpi=90)
    finally:
        plt.close(fig)
    write_atomically(path, png.getvalue())  # savefig straight to the file left a 0-byte PNG on a full disk; names it
    return str(path)
