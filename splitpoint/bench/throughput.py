"""Stages `throughput` and `overhead`.

throughput: throughput mode (`--mode throughput --window W`) at one uplink rate, for the split
with the largest cut tensor (also the goodput figure: cut-tensor bytes of answered frames per
second against the shaped rate) and the split with the heaviest compute stage, each against
its stage bound 1 / max(head, transfer, tail) from the profiles and the cost model's wire time.

overhead: what splitpoint adds per frame beyond compute and wire time (splitpoint.bench.overhead),
and the same residual read from the conditions' real runs.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from scheduler.cost import bits
from splitpoint.bench.results import Goodput, Residual, ThroughputResult, ThroughputRun
from splitpoint.bench.stats import completion_ns, median, ok_records, rnd

if TYPE_CHECKING:
    from splitpoint.bench.harness import Bench


def run(b: Bench) -> None:
    bw = b.opts.tp_bandwidth
    cloud_splits = [k for k in b.splits if k != b.K]
    largest = max(cloud_splits, key=lambda k: (b.wire[k], k))
    heaviest = max(cloud_splits, key=lambda k: (max(b.edge_ms.get(k, 0), b.cloud_ms.get(k, 0)), k))
    n, window = b.opts.tp_frames, b.opts.tp_window
    warm = max(b.opts.warmup, window)
    b.set_link(bw, 0.0)
    b.result.throughput = res = ThroughputResult(bandwidth_mbps=bw, rtt_added_ms=0.0, window=window, frames=n,
                                                 warmup=warm)
    for k in sorted({largest, heaviest}):
        b.say(f"throughput mode: k={k} ({b.wire[k]} bytes on the wire) at {bw:g} Mbps, window {window}, {n} frames ...")
        out = b.run_agent(f"throughput-k{k}-{bw:g}M", n, ["--split", str(k), "--mode", "throughput",
                                                           "--window", str(window)], b.predict_ms(k, bw, 0.0))
        recs = ok_records(out.records, warm)
        stages = {"head": b.edge_ms.get(k, 0.0), "transfer": b.wire_ms(k, bw), "tail": b.cloud_ms.get(k, 0.0)}
        limit = max(stages, key=lambda s: stages[s])
        bound = 1000.0 / stages[limit] if stages[limit] > 0 else None
        tp = ThroughputRun(split=k, wire_bytes=b.wire[k], stage_ms={s: rnd(v, 4) for s, v in stages.items()},
                           limiting_stage=limit, bound_fps=rnd(bound), frames_counted=len(recs),
                           fallbacks=sum(1 for r in recs if r.get("fallback_reason")),
                           measured_stage_median_ms={
                               s: median([r["timings_ms"][s] for r in recs if s in r["timings_ms"]])
                               for s in ("head", "transfer", "server_queue", "server_compute", "end_to_end")})
        if len(recs) >= 3:
            done = sorted(completion_ns(r) for r in recs)
            span = (done[-1] - done[0]) / 1e9
            fps = (len(done) - 1) / span if span > 0 else None
            tp.fps = rnd(fps)
            tp.fps_over_bound = rnd(fps / bound, 4) if fps and bound else None
            # tensor bytes per second: what the application got through, framing excluded
            gp = bits(b.wire[k]) * (len(done) - 1) / span if span > 0 else None
            tp.goodput_mbps = rnd(gp / 1e6 if gp else None, 4)
            tp.goodput_over_rate = rnd(gp / (bw * 1e6), 4) if gp else None
        if out.error or out.rc:
            tp.error = out.error or f"exit {out.rc}"
        res.runs.append(tp)
        if k == largest:
            b.result.goodput = Goodput(split=k, wire_bytes=b.wire[k], shaped_mbps=bw, goodput_mbps=tp.goodput_mbps,
                                       goodput_over_rate=tp.goodput_over_rate,
                                       what="cut-tensor bytes of answered frames per second between the first and "
                                            "the last answer (warm-up excluded), throughput mode, largest split")
        b.save()
        b.say(f"  {tp.fps} fps vs bound {tp.bound_fps} ({limit}-bound): {tp.fps_over_bound}; "
              f"goodput {tp.goodput_mbps} Mbps of {bw:g}")


def run_overhead(b: Bench) -> None:
    from splitpoint.bench.overhead import measure_overhead

    frames = b.opts.overhead_frames
    b.say(f"added cost per frame: 200 KB int8 tensor, splitpoint vs raw gRPC, {frames} frames each ...")
    res = measure_overhead(frames=frames, warmup=20, block=min(50, frames))
    # the same from the real runs: end-to-end minus head, wire time, RTT and server compute
    resid = []
    for cond in b.result.conditions or []:
        for key, f in cond.fixed.items():
            k, st = int(key), f.stages_median_ms
            if k == b.K or f.median_ms is None or st.get("head") is None:
                continue
            resid.append(f.median_ms - (st["head"] or 0.0) - (st.get("server_queue") or 0)
                         - (st.get("server_compute") or 0) - b.wire_ms(k, cond.bandwidth_mbps) - cond.rtt_ms)
    if resid:
        res.end_to_end_residual_ms = Residual(
            median=rnd(statistics.median(resid)), runs=len(resid),
            what="median over fixed-split runs of: median end-to-end - head - server queue - server compute - "
                 "wire time at the set rate - set RTT (includes the link emulator's own delays)")
    b.result.overhead = res
    b.say(f"  splitpoint {res.splitpoint.median_ms} ms, raw gRPC {res.raw_grpc.median_ms} ms: "
          f"added {res.added_ms} ms per frame")
