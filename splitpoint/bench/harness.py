"""`splitpoint bench`: real end-to-end measurements of every split, the scheduler, traces.

One process (this one) runs the real server (`CloudServer`, TensorFlow) and a
`LinkEmulator` in front of it on 127.0.0.1; the agent is the real `splitpoint edge`
run by `python -m splitpoint.bench.edge_worker` in a separate process pinned to one
CPU (where allowed) with one LiteRT thread. The harness sets the link (rate, delay,
trace) before each run and reads the agent's per-frame results log afterwards.

Stages (each written into the JSON as soon as it is done), one module each:

    profiles     `splitpoint profile edge` (in the pinned worker) and `profile cloud`, once per bundle (profiling.py)
    conditions   per (bandwidth, RTT): every split fixed -> oracle; the adaptive agent -> settled split
    step         50 -> 2 -> 50 Mbps while the adaptive agent runs: frames/seconds to settle, switches
    traces       real cellular uplink traces, frames paced like a camera: adaptive vs every fixed split
    throughput   throughput mode against the stage bound 1/max(head, transfer, tail); goodput at 10 Mbps
    overhead     what splitpoint adds per frame beyond compute and wire time (splitpoint.bench.overhead)

Predictions (run timeouts, which splits are too slow to run, the peers' picks) and energy figures
come from the planner's own cost model (scheduler.cost), so the bench and the agent cannot
disagree; energy is modelled from --power-table, by default the shipped reference table. The
edge device is the worker's core, or emulated from --edge-device FILE or --edge-slowdown F.
Every wait is bounded: runs have a timeout computed from the profiles (the worker is
killed and restarted when one is exceeded), polls sleep, counts are fixed.
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import splitpoint
from scheduler.cost import CostModel, EnergyModel, transfer_ms, wire_bytes
from scheduler.link import LinkState
from splitpoint.bench import conditions, emulation, profiling, step, throughput, traces_stage
from splitpoint.bench.machine import EdgeCpuClaim, machine_description, pin_harness
from splitpoint.bench.options import STAGES, BenchOptions
from splitpoint.bench.report_tables import REPORT, is_report
from splitpoint.bench.results import RESULT, BenchResult, BundleInfo, SplitInfo, is_result
from splitpoint.bench.worker_client import EdgeWorker, RunOutcome
from splitpoint.errors import ConfigError, SplitpointError
from splitpoint.files import write_replacing

log = logging.getLogger("splitpoint.bench")

#: each stage's entry point, in the order they run
STAGE_RUNNERS: dict[str, Callable[[Bench], None]] = {
    "conditions": conditions.run, "step": step.run, "traces": traces_stage.run,
    "throughput": throughput.run, "overhead": throughput.run_overhead,
}
assert tuple(STAGE_RUNNERS) == STAGES


class Bench:
    """The run's shared state: options, the worker, link and server, the bundle's splits, the result."""

    def __init__(self, opts: BenchOptions, argv: list[str] | None = None):
        self.opts = opts
        self.t0 = time.monotonic()
        self.result = BenchResult(created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  splitpoint=splitpoint.__version__, command=["splitpoint", "bench", *(argv or [])],
                                  smoke=opts.smoke)
        self.server: Any = None
        self.link: Any = None
        self.worker: EdgeWorker | None = None
        self.energy: EnergyModel | None = None
        self.cost: CostModel | None = None
        self.K = 0
        self.wire: dict[int, int] = {}
        self.splits: list[int] = []
        self.edge_ms: dict[int, float] = {}
        self.cloud_ms: dict[int, float] = {}
        self.fixed_cache: dict[tuple[float, float], Any] = {}
        self.device_path: Path | None = None   # --edge-device, resolved
        self.power_table = Path()               # the energy figures' power table and radio link
        self.radio_link = "lte"
        self.frame_deadline_ms = 0
        self.runs_dir = Path(".")
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.cpu_claim: EdgeCpuClaim | None = None  # held from run() to the end of run_bench
        self._run_no = 0
        # an earlier result at --json (check_inputs: a bench result or nothing): replaced only by
        # this run's figures, and kept beside them (earlier_path) while they are partial
        self.earlier_json = opts.json is not None and Path(opts.json).exists()
        self.earlier_kept: Path | None = None

    # ------------------------------------------------------------------ output

    def say(self, msg: str) -> None:
        print(f"[bench {time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)

    def error(self, msg: str) -> None:
        self.result.errors.append(msg)

    def save(self) -> bool:
        """Write the JSON (if asked for); False when it could not be. An earlier result there stays
        until this run has measured something (an interrupted profiling replaced a complete result
        by `traces: null`), and a partial result over it keeps it beside, in earlier_path()."""
        self.result.wall_time_s = round(time.monotonic() - self.t0, 2)
        if self.opts.json is None:
            return True
        if self.earlier_json and not self.result.complete:
            if not self.result.measured():
                return True
            if self.earlier_kept is None:
                earlier, kept = Path(self.opts.json), earlier_path(self.opts.json)
                if not self.write_output("json", str(kept), lambda path: write_replacing(
                        path, earlier.read_text(), "json", RESULT, is_result)):
                    return False  # no copy of the earlier result: it is not replaced
                self.earlier_kept = kept
        return self.write_output("json", self.opts.json, lambda path: write_replacing(
            path, self.result.to_json(), "json", RESULT, is_result))

    def say_what_was_kept(self) -> None:
        """At the end: where an earlier result at --json went; the copy kept beside a partial one
        is removed once the run is complete (its result replaces the earlier one, as asked)."""
        out = self.opts.json
        if out is None or not self.earlier_json:
            return
        if self.result.complete:
            if self.earlier_kept is not None:
                self.earlier_kept.unlink(missing_ok=True)
        elif self.earlier_kept is None and not self.result.measured():
            md = f" (and {self.opts.markdown})" if self.opts.markdown and Path(self.opts.markdown).exists() else ""
            self.say(f"stopped before anything was measured: {out}{md} left as it was")
        elif self.earlier_kept is not None:
            self.say(f"{out} holds this run's partial result (complete: false); the earlier result it replaced "
                     f"is kept in {self.earlier_kept}")

    def write_output(self, key: str, path: str, write: Callable[[str], object]) -> bool:
        """write(path) (atomic), failing alone: named in one line among the run's errors (exit 1),
        while the stage goes on and the other outputs are written (a full disk failed the stage
        being measured, its figures dropped, and the markdown was never written)."""
        try:
            write(path)
        except (OSError, ConfigError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            msg = f"{key} = {path}: could not be written ({why}); what was there is left as it was"
            if msg not in self.result.errors:  # the JSON is written after every run: said once
                print(f"splitpoint bench: error: {msg}", file=sys.stderr, flush=True)
                self.error(msg)
            return False
        return True

    # ------------------------------------------------------------------ the cost model

    def predict_ms(self, k: int, bw_mbps: float | None, rtt_ms: float) -> float:
        """The planner's latency prediction for split k (no rate: no wire time)."""
        assert self.cost is not None
        return self.cost.predict(k, LinkState(bw_mbps * 1e6 if bw_mbps else math.inf, rtt_ms)).latency_ms

    def wire_ms(self, k: int, bw_mbps: float) -> float:
        """Time split k's frame (cut tensor + framing) takes on an uplink of bw_mbps; 0 for all-edge."""
        return 0.0 if k == self.K else transfer_ms(wire_bytes(self.wire[k]), bw_mbps * 1e6)

    # ------------------------------------------------------------------ runs

    def _timeout(self, frames: int, per_frame_ms: float) -> float:
        return min(3600.0, 120.0 + frames * (3 * per_frame_ms / 1000 + 0.5))

    def run_agent(self, name: str, frames: int, extra: list[str], per_frame_ms: float,
                  on_poll: Callable[[], None] | None = None, events: Path | None = None) -> RunOutcome:
        """One `splitpoint edge` run in the worker; its records (read back from its results log)."""
        from edge_node.results import read_results

        assert self.worker is not None and self.link is not None
        self._run_no += 1
        results = self.runs_dir / f"{self._run_no:04d}-{name}.jsonl"
        argv = ["edge", "--bundle", str(self.bundle_path), "--cloud", self.link.address, "--threads", "1", "--insecure",
                "--no-resume", "--results", str(results), "--log-level", "info", "--source", f"synthetic:{frames}",
                "--max-frames", str(frames), "--frame-deadline-ms", str(self.frame_deadline_ms),
                "--splits", ",".join(map(str, self.splits)), *extra]
        if events is not None:
            argv += ["--events", str(events)]
        rc, seconds, err, start_ns = self.worker.run(argv, self._timeout(frames, per_frame_ms), on_poll)
        emulation.note_too_slow(self, name, self.worker.last_emulation)
        records = read_results(results) if results.exists() else []
        if rc != 0 or err:
            msg = f"run {name}: exit {rc}" + (f": {err}" if err else "") + f" ({len(records)} records)"
            log.warning("%s", msg)
            self.error(msg)
        return RunOutcome(records, rc, seconds, err, start_ns, results)

    def results_path(self, name: str) -> Path:
        """The results log of the run in progress called `name` (run_agent numbers them)."""
        return self.runs_dir / f"{self._run_no:04d}-{name}.jsonl"

    def set_link(self, bw_mbps: float | None, rtt_ms: float, trace: Any = None) -> None:
        self.link.set_delay_ms(rtt_ms / 2)
        self.link.set_uplink(trace if trace is not None else (bw_mbps * 1e6 if bw_mbps else None))

    def adaptive_flags(self, objective: str = "min-latency") -> list[str]:
        flags = ["--policy-name", objective, "--policy-edge-profile", str(self.edge_profile),
                 "--policy-cloud-profile", str(self.cloud_profile)]
        if objective != "min-latency":
            flags += ["--policy-power-table", str(self.power_table), "--policy-link", self.radio_link]
        return flags

    # ------------------------------------------------------------------ setup

    def _bundle(self) -> Path:
        if self.opts.bundle is not None:
            return Path(self.opts.bundle)
        from splitpoint.demo import ensure_bundle

        path = self.opts.cache_path() / "digits"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"no --bundle: the digits bundle in {path}")
        return ensure_bundle(path)

    def _energy_model(self) -> EnergyModel:
        """The planner's energy model: --power-table (default: the shipped reference table, whose radio
        part is the LTE model) and the radio model of --radio-link. Modelled, never metered."""
        from scheduler.power import PowerTable, RadioModel

        path, link, reference = self.opts.power_table_path()
        table, radio = PowerTable.load(path), RadioModel()
        self.power_table, self.radio_link = path, link
        self.result.power = {"table": str(path), "reference": reference, "device": table.device,
                             "source": table.source, "radio_link": link, "metered": False}
        return EnergyModel(table.head_power, table.idle_w, lambda bps: radio.tx_watts(bps, link=link),
                           f"power table {path}")

    # ------------------------------------------------------------------ driver

    def run(self) -> BenchResult:
        opts = self.opts
        pinning = pin_harness(self.opts.edge_cpu)
        if pinning.get("edge_cpu") is not None:  # before the JSON is first written: another bench's is kept
            self.cpu_claim = EdgeCpuClaim(pinning["edge_cpu"]).take()
        self.result.machine = machine_description(pinning)
        self.say(pinning["note"])
        if opts.keep_runs is not None:
            self.runs_dir = Path(opts.keep_runs)
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="splitpoint-bench-")
            self.runs_dir = Path(self._tmp.name)
        self.frame_deadline_ms = int(max(2000, 2.5 * opts.max_frame_s * 1000))
        self.save()
        try:
            self._setup(pinning)
            self._run_stages()
            self.result.complete = True
        finally:
            self._shutdown()
            self.save()
            self.say_what_was_kept()
        return self.result

    def _setup(self, pinning: dict[str, Any]) -> None:
        from cloud_server.config import CloudConfig
        from cloud_server.server import CloudServer
        from scheduler.profiles import load_profile
        from splitpoint.bundle import load_bundle, split_ranges
        from splitpoint.linkemu import LinkEmulator

        opts = self.opts
        t = time.monotonic()
        self.bundle_path = self._bundle()
        m = load_bundle(self.bundle_path, verify=False).manifest
        self.K = m.num_layers
        self.wire = {s.split: s.wire_bytes for s in m.splits}
        subset = opts.split_list()
        if subset:
            bad = [k for k in subset if k not in m.split_ids]
            if bad:
                raise ConfigError("--splits", bad, f"not splits of {m.model_name}: {split_ranges(m.split_ids)}")
            self.splits = sorted(set(subset) | {0, self.K})
        else:
            self.splits = list(m.split_ids)
        self.result.bundle = BundleInfo(
            path=str(self.bundle_path), model=m.model_name, digest=m.model_digest, num_layers=self.K,
            source=m.source, measured_splits=self.splits,
            splits=[SplitInfo(s.split, s.after_layer, s.wire_bytes, list(s.cut[0].shape) if s.cut else None)
                    for s in m.splits])
        self.say(f"bundle {m.model_name} ({self.bundle_path}): K = {self.K}, measuring splits {self.splits}")
        self.device_path = opts.device_path()
        if self.device_path is not None:  # before the worker starts: a mismatch is the options' error
            emulation.check_device(self.device_path, m.model_name, self.splits)
        self.worker = EdgeWorker(pinning.get("edge_cpu"), self.runs_dir / "edge-worker.log", opts.edge_slowdown,
                                 self.device_path, plan_log=opts.plan_log)
        ready = self.worker.start()
        self.result.machine["emulation"] = ready.get("emulation") or {"mode": "native"}
        if self.device_path is not None:
            self.say(f"edge worker emulates the device of {self.device_path}: every head run lasts its split's time "
                     "in the file")
        pinning["edge_worker"] = ready.get("pinning")
        pinning["edge_worker_thread_env"] = ready.get("thread_env")
        self.say(f"edge worker pid {ready.get('pid')}: {ready.get('pinning', {}).get('reason')}")
        if ready.get("slowdown", 1.0) != 1.0:
            pinning["edge_slowdown"] = ready["slowdown"]
            self.say(f"edge worker emulates a device {ready['slowdown']:g}x slower than its core: every head "
                     "invocation lasts the factor x that head's median native time")
        self.edge_profile, self.cloud_profile = profiling.profiles(self, self.bundle_path, m.model_digest)
        ep, cp = load_profile(self.edge_profile), load_profile(self.cloud_profile)
        self.energy = self._energy_model()
        self.cost = CostModel(ep, cp, self.energy)
        self.edge_ms = {k: ep.latency_ms(k) for k in ep.splits}
        self.cloud_ms = {k: cp.latency_ms(k) for k in cp.splits}
        self.result.profiles = {"edge": str(self.edge_profile), "cloud": str(self.cloud_profile),
                                "edge_device": ep.device, "edge_median_ms": {str(k): v for k, v in self.edge_ms.items()},
                                "cloud_median_ms": {str(k): v for k, v in self.cloud_ms.items()}}
        if subset:
            self.edge_profile, self.cloud_profile = profiling.restricted_profiles(
                self, self.edge_profile, self.cloud_profile, self.splits)
        self.say("starting the server (in this process) and the link emulator ...")
        self.server = CloudServer(CloudConfig(bundle=str(self.bundle_path), listen="127.0.0.1:0", insecure=True,
                                              log_level="warning", grace_s=5.0, warm_tails=opts.warm_tails,
                                              splits=self.splits if subset else [])).start()
        _quiet_logging()
        host, port = self.server.address.rsplit(":", 1)
        # The emulator serializes at the rate with no burst credit (docs/link-emulation.md), so
        # "1 Mbps" is the same link for small cut tensors as for large ones.
        self.link = LinkEmulator((host, int(port)), uplink=None, downlink=None, delay_ms=0).start()
        self.result.link = {"emulator": "splitpoint.linkemu.LinkEmulator (userspace TCP proxy on 127.0.0.1)",
                            "uplink": "the condition's rate or trace (serialized at the rate, no burst credit)",
                            "downlink": "unlimited",
                            "delay": "RTT/2 each way", "server": self.server.address, "proxy": self.link.address,
                            "frame_deadline_ms": self.frame_deadline_ms}
        self.result.stage_seconds["setup"] = round(time.monotonic() - t, 2)
        self.result.settings = asdict(opts)
        self.save()

    def _run_stages(self) -> None:
        from splitpoint.bench.report import evaluate_targets

        for stage, runner in STAGE_RUNNERS.items():
            if stage in self.opts.skip:
                self.say(f"{stage}: skipped (--skip)")
                continue
            t = time.monotonic()
            try:
                runner(self)
            except (SplitpointError, OSError, RuntimeError, ValueError, KeyError) as exc:
                log.exception("stage %s failed", stage)
                self.error(f"{stage}: {type(exc).__name__}: {exc}")
                self.say(f"{stage} FAILED: {exc}")
            self.result.stage_seconds[stage] = round(time.monotonic() - t, 2)
            self.save()
        self.result.targets = evaluate_targets(self.result)

    def _shutdown(self) -> None:
        if self.worker is not None:
            self.result.machine.setdefault("pinning", {})["edge_worker_restarts"] = self.worker.restarts
            self.worker.stop()
        if self.link is not None:
            self.result.link["stats_at_end"] = self.link.stats()
            self.link.stop()
        if self.server is not None:
            self.server.stop(grace=2.0)
        if self._tmp is not None:
            self._tmp.cleanup()


def earlier_path(path: str | Path) -> Path:
    """Where an earlier result at `path` is kept while this run's partial one replaces it:
    r.json -> r.earlier.json."""
    p = Path(path)
    return p.with_name(f"{p.stem}.earlier{p.suffix}")


def _quiet_logging() -> None:
    """The server logs at info; the bench prints its own progress."""
    for name in ("cloud_server", "splitpoint", "scheduler", "edge_node"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("splitpoint.bench").setLevel(logging.INFO)


def run_bench(opts: BenchOptions, argv: list[str] | None = None) -> BenchResult:
    """Run everything `opts` asks for; write JSON, markdown and plots; return the result."""
    from splitpoint.bench.report import render_markdown, render_plots

    bench = Bench(opts, argv)
    try:  # the edge CPU stays claimed until the outputs are written: a next bench writes after them
        result = bench.run()
        if opts.plots is not None:
            result.plots = render_plots(result, Path(opts.plots))
        if bench.save() and opts.json is not None:
            bench.say(f"JSON: {opts.json}")
        md = render_markdown(result)
        if opts.markdown is not None and bench.write_output(
                "markdown", opts.markdown, lambda path: write_replacing(path, md, "markdown", REPORT, is_report)):
            bench.say(f"markdown: {opts.markdown}")
    finally:
        if bench.cpu_claim is not None:
            bench.cpu_claim.release()
    print(md, flush=True)
    bench.say(f"done in {result.wall_time_s} s")
    return result
