"""`splitpoint bench`: real end-to-end measurements of every split, the scheduler, traces.

One process (this one) runs the real server (`CloudServer`, TensorFlow) and a
`LinkEmulator` in front of it on 127.0.0.1; the agent is the real `splitpoint edge`
run by `python -m splitpoint.bench.edge_worker` in a separate process pinned to one
CPU (where allowed) with one LiteRT thread. The harness sets the link (rate, delay,
trace) before each run and reads the agent's per-frame results log afterwards.

Stages (each written into the JSON as soon as it is done):

    profiles     `splitpoint profile edge` (in the pinned worker) and `profile cloud`, once per bundle
    conditions   per (bandwidth, RTT): every split fixed -> oracle; the adaptive agent -> settled split
    step         50 -> 2 -> 50 Mbps while the adaptive agent runs: frames/seconds to settle, switches
    traces       real cellular uplink traces, frames paced like a camera: adaptive vs every fixed split
    throughput   throughput mode against the stage bound 1/max(head, transfer, tail); goodput at 10 Mbps
    overhead     what splitpoint adds per frame beyond compute and wire time (splitpoint.bench.overhead)

Every wait is bounded: runs have a timeout computed from the profiles (the worker is
killed and restarted when one is exceeded), polls sleep, counts are fixed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import splitpoint
from splitpoint.errors import ConfigError, SplitpointError

log = logging.getLogger("splitpoint.bench")

DEFAULT_BANDWIDTHS_MBPS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
DEFAULT_RTTS_MS = (10.0, 50.0, 150.0)
SMOKE_CONDITIONS = ((50.0, 50.0), (2.0, 50.0))  # (Mbps, RTT ms): also the step change's two rates
DEFAULT_TRACES = ("Verizon-LTE-short.up", "ATT-LTE-driving-2016.up")
STAGES = ("conditions", "step", "traces", "throughput", "overhead")
#: protobuf + gRPC framing per frame, as the cost model counts it
FRAME_OVERHEAD_BYTES = 96


def default_traces_dir() -> Path:
    """../shared/data/traces beside the repository."""
    return Path(splitpoint.__file__).resolve().parents[2] / "shared" / "data" / "traces"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitpoint" / "bench"


@dataclass
class BenchOptions:
    bundle: Path | None = None
    bandwidths_mbps: list[float] = field(default_factory=lambda: list(DEFAULT_BANDWIDTHS_MBPS))
    rtts_ms: list[float] = field(default_factory=lambda: list(DEFAULT_RTTS_MS))
    conditions: list[tuple[float, float]] | None = None  # explicit (Mbps, RTT ms) pairs; else the grid
    frames: int = 30  # measured frames per fixed-split run (after warm-up)
    warmup: int = 3
    adaptive_frames: int = 40
    splits: list[int] | None = None  # subset of the bundle's splits to measure (0 and K always)
    smoke: bool = False
    json_path: Path | None = None
    markdown_path: Path | None = None
    plots_dir: Path | None = None
    traces_dir: Path | None = None
    traces: list[str] = field(default_factory=lambda: list(DEFAULT_TRACES))
    trace_seconds: float = 20.0
    trace_fps: float = 10.0
    trace_rtt_ms: float = 50.0
    deadline_ms: float | None = None  # default: one frame interval of the trace's camera
    skip: set[str] = field(default_factory=set)
    step_rates_mbps: tuple[float, float] = (50.0, 2.0)
    step_rtt_ms: float = 50.0
    step_fps: float = 10.0
    step_phase_frames: int = 30
    tp_bandwidth_mbps: float = 10.0
    tp_frames: int = 60
    tp_window: int = 4
    overhead_frames: int = 300
    power_table: Path | None = None
    radio_link: str = "wifi"
    edge_cpu: int | None = None  # None: the last allowed CPU
    #: emulate an edge device this many times slower than the worker's core (1: native); see edge_worker
    edge_slowdown: float = 1.0
    profile_runs: int = 20
    reprofile: bool = False
    max_frame_s: float = 8.0  # a split whose wire time alone exceeds this is not run (lower bound reported)
    warm_tails: int = 0  # the server's warm_tails (0: every tail loaded at start)
    cache_dir: Path = field(default_factory=default_cache_dir)
    keep_runs: Path | None = None
    argv: list[str] = field(default_factory=list)

    @classmethod
    def smoke_defaults(cls, **overrides: Any) -> BenchOptions:
        opts = cls(conditions=list(SMOKE_CONDITIONS), frames=6, warmup=2, adaptive_frames=12, trace_seconds=1.5,
                   traces=[DEFAULT_TRACES[0]], step_phase_frames=8, step_fps=20.0, tp_frames=40, overhead_frames=100,
                   profile_runs=10, smoke=True)
        for k, v in overrides.items():
            setattr(opts, k, v)
        return opts

    def condition_list(self) -> list[tuple[float, float]]:
        if self.conditions is not None:
            return list(self.conditions)
        return [(bw, rtt) for bw in self.bandwidths_mbps for rtt in self.rtts_ms]


class BenchError(SplitpointError):
    pass


# --------------------------------------------------------------------------- the edge worker


@dataclass
class RunOutcome:
    records: list[dict[str, Any]]
    rc: int | None
    seconds: float
    error: str | None
    started_unix_ns: int | None
    results: Path


class EdgeWorker:
    """The pinned edge process; runs `splitpoint` command lines one at a time."""

    def __init__(self, cpu: int | None, log_path: Path, slowdown: float = 1.0):
        self.cpu = cpu
        self.slowdown = slowdown
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._started: dict[str, Any] = {}
        self.ready: dict[str, Any] = {}
        self._next_id = 0
        self.restarts = 0

    def start(self, timeout_s: float = 120.0) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "splitpoint.bench.edge_worker"]
        if self.cpu is not None:
            cmd += ["--cpu", str(self.cpu)]
        if self.slowdown != 1.0:
            cmd += ["--slowdown", repr(self.slowdown)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        root = str(Path(splitpoint.__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, text=True,
                                     env=env, bufsize=1)
        logf.close()
        self._events = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self._events), daemon=True, name="edge-worker-reader").start()
        ev = self._wait("ready", None, timeout_s)
        if ev is None or ev.get("event") != "ready":
            self.kill()
            raise BenchError(f"the edge worker did not start within {timeout_s:.0f} s; log: {self.log_path}")
        self.ready = ev
        return ev

    @staticmethod
    def _read(proc: subprocess.Popen, events: queue.Queue) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                events.put(json.loads(line))
            except json.JSONDecodeError:
                log.debug("edge worker: %s", line.rstrip())
        events.put({"event": "eof"})

    def _wait(self, event: str, run_id: int | None, timeout_s: float,
              on_poll: Callable[[], None] | None = None, poll_s: float = 0.05) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ev = self._events.get(timeout=min(poll_s, left))
            except queue.Empty:
                if on_poll is not None:
                    on_poll()
                continue
            if ev.get("event") == "eof":
                return {"event": "eof"}
            if ev.get("event") == event and (run_id is None or ev.get("id") == run_id):
                return ev
            if ev.get("event") == "start" and ev.get("id") == run_id:
                self._started = ev
            if on_poll is not None:
                on_poll()

    def run(self, argv: list[str], timeout_s: float,
            on_poll: Callable[[], None] | None = None) -> tuple[int | None, float, str | None, int | None]:
        """(rc, seconds, error, start time) of one command; kills the worker on a timeout (restarted on the next run)."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.restarts += 1
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        run_id = self._next_id
        self._started = {}
        t0 = time.perf_counter()
        self.proc.stdin.write(json.dumps({"id": run_id, "argv": argv}) + "\n")
        self.proc.stdin.flush()
        ev = self._wait("done", run_id, timeout_s, on_poll)
        seconds = time.perf_counter() - t0
        start_ns = self._started.get("t_unix_ns")
        if ev is None:
            self.kill()
            return None, seconds, f"timed out after {timeout_s:.0f} s (worker killed)", start_ns
        if ev.get("event") == "eof":
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            return None, seconds, f"the edge worker exited (code {self.proc.returncode}); log: {self.log_path}", start_ns
        return ev.get("rc"), seconds, ev.get("error"), start_ns

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # our own child, by its handle
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.kill()
        self.proc = None


class _TraceSync:
    """Restart the trace at t = 0 when the agent opens its frame source (after loading its heads).

    The agent logs `frame source: ...` right before its first frame (only a Describe call
    comes between), so every run, fixed or adaptive, meets the trace from its start
    whatever its start-up took. Without that line the trace runs from the command.
    """

    MARK = b"frame source: "

    def __init__(self, link: Any, trace: Any, log_path: Path):
        self.link, self.trace, self.log_path = link, trace, log_path
        self.offset = log_path.stat().st_size if log_path.exists() else 0
        self.t_set_ns = time.time_ns()
        self.synced = False

    def poll(self) -> None:
        if self.synced:
            return
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.offset)
                new = f.read()
        except OSError:
            return
        if self.MARK in new:
            self.link.set_uplink(self.trace)  # a trace given now starts at its own t = 0
            self.t_set_ns = time.time_ns()
            self.synced = True


# --------------------------------------------------------------------------- statistics


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def latency_stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"frames": 0, "median_ms": None, "p95_ms": None, "mean_ms": None}
    a = np.asarray(values, dtype=np.float64)
    return {"frames": len(values), "median_ms": _round(float(np.median(a))), "p95_ms": _round(float(np.percentile(a, 95))),
            "mean_ms": _round(float(a.mean())), "min_ms": _round(float(a.min())), "max_ms": _round(float(a.max()))}


def _median(values: list[float]) -> float | None:
    return _round(statistics.median(values)) if values else None


def ok_records(records: list[dict[str, Any]], warmup: int = 0) -> list[dict[str, Any]]:
    return sorted((r for r in records if r.get("status") == "ok" and r["frame_id"] >= warmup), key=lambda r: r["frame_id"])


def completion_ns(r: dict[str, Any]) -> float:
    return r["capture_time_unix_ns"] + r["timings_ms"]["end_to_end"] * 1e6


def settled_split(splits: list[int]) -> int | None:
    """The mode of the last half (ties: the later one wins)."""
    if not splits:
        return None
    half = splits[len(splits) // 2:]
    counts = Counter(half)
    best = max(counts.values())
    return next(k for k in reversed(half) if counts[k] == best)


def count_switches(splits: list[int], before: int | None = None) -> int:
    seq = ([before] if before is not None else []) + list(splits)
    return sum(1 for a, b in zip(seq, seq[1:], strict=False) if a != b)


# --------------------------------------------------------------------------- machine


def machine_description(pinning: dict[str, Any]) -> dict[str, Any]:
    from scheduler.profiles import device_identity

    ident = device_identity()
    try:
        ident["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        meminfo = Path("/proc/meminfo").read_text().split("\n")[0]
        ident["memory"] = meminfo.split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    for path in ("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpuset.cpus.effective"):
        try:
            ident[Path(path).name] = Path(path).read_text().strip()
        except OSError:
            pass
    try:  # the profile's "cpu" can be the CPU's model number; keep the model name as well
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                ident["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ident["platform"] = platform.platform()
    ident["pinning"] = pinning
    try:
        import grpc

        ident.setdefault("runtimes", {})["grpcio"] = grpc.__version__
    except ImportError:
        pass
    return ident


def plan_pinning(edge_cpu: int | None) -> dict[str, Any]:
    """Which CPU the edge worker gets and which the harness (server, link) keeps."""
    get = getattr(os, "sched_getaffinity", None)
    if get is None or not hasattr(os, "sched_setaffinity"):
        return {"supported": False, "edge_cpu": None, "server_cpus": None,
                "note": f"CPU affinity is not available on {sys.platform}: the edge worker runs with one LiteRT "
                        "thread but may share cores with the server"}
    allowed = sorted(get(0))
    if edge_cpu is None:
        edge_cpu = allowed[-1]
    if edge_cpu not in allowed:
        raise ConfigError("--edge-cpu", edge_cpu, f"not one of the CPUs this process may use: {allowed}")
    others = [c for c in allowed if c != edge_cpu]
    note = (f"edge worker on CPU {edge_cpu}; server, link emulator and harness on CPUs {others}"
            if others else f"only CPU {edge_cpu} is available: edge and server share it")
    return {"supported": True, "allowed": allowed, "edge_cpu": edge_cpu, "server_cpus": others or allowed, "note": note}


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, opts: BenchOptions):
        self.opts = opts
        self.t0 = time.monotonic()
        self.result: dict[str, Any] = {
            "format": "splitpoint-bench",
            "schema_version": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "splitpoint": splitpoint.__version__,
            "command": ["splitpoint", "bench", *opts.argv],
            "smoke": opts.smoke,
            "complete": False,
            "errors": [],
            "stage_seconds": {},
        }
        self.server: Any = None
        self.link: Any = None
        self.worker: EdgeWorker | None = None
        self.power: Any = None
        self.fixed_cache: dict[tuple[float, float], dict[str, Any]] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._run_no = 0

    # ------------------------------------------------------------------ output

    def say(self, msg: str) -> None:
        print(f"[bench {time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)

    def save(self) -> None:
        self.result["wall_time_s"] = round(time.monotonic() - self.t0, 2)
        if self.opts.json_path is not None:
            p = Path(self.opts.json_path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(p.suffix + ".tmp")
            tmp.write_text(json.dumps(self.result, indent=2, default=_jsonable) + "\n")
            tmp.replace(p)

    # ------------------------------------------------------------------ setup

    def _pin_harness(self) -> dict[str, Any]:
        pinning = plan_pinning(self.opts.edge_cpu)
        if pinning.get("supported") and pinning.get("server_cpus"):
            try:  # before TensorFlow and the server start their threads: they inherit it
                os.sched_setaffinity(0, set(pinning["server_cpus"]))
                pinning["server_applied"] = True
            except OSError as exc:
                pinning["server_applied"] = False
                pinning["note"] += f" (harness pinning refused: {exc})"
        return pinning

    def _bundle(self) -> Path:
        if self.opts.bundle is not None:
            return Path(self.opts.bundle)
        from splitpoint.demo import ensure_bundle

        path = Path(self.opts.cache_dir) / "digits"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"no --bundle: the digits bundle in {path}")
        return ensure_bundle(path)

    def _profiles(self, bundle_path: Path, digest: str) -> tuple[Path, Path]:
        from scheduler.profiles import load_profile

        pin = self.result["machine"]["pinning"]
        key = f"{digest.split(':')[-1][:16]}-{platform.node()}-cpu{pin.get('edge_cpu')}-r{self.opts.profile_runs}"
        pdir = Path(self.opts.cache_dir) / "profiles" / key
        # An emulated edge device has an edge profile of its own; the server's tails are the same.
        edge_dir = pdir.with_name(f"{key}-x{self.opts.edge_slowdown:g}") if self.opts.edge_slowdown != 1.0 else pdir
        edge_dir.mkdir(parents=True, exist_ok=True)
        pdir.mkdir(parents=True, exist_ok=True)
        edge, cloud = edge_dir / "edge-profile.json", pdir / "cloud-profile.json"
        for p, side in ((edge, "edge"), (cloud, "cloud")):
            if p.exists() and not self.opts.reprofile:
                try:
                    load_profile(p, side, digest)
                    self.say(f"{side} profile: cached {p}")
                    continue
                except ConfigError:
                    pass
            t = time.monotonic()
            if side == "edge":
                self.say(f"profiling the heads in the pinned edge worker ({self.opts.profile_runs} runs per split) ...")
                assert self.worker is not None
                rc, _, err, _ = self.worker.run(["profile", "edge", "--bundle", str(bundle_path), "--threads", "1",
                                                 "--runs", str(self.opts.profile_runs), "-o", str(p)], timeout_s=3600)
                if rc != 0:
                    raise BenchError(f"splitpoint profile edge failed ({err or rc}); log: {self.worker.log_path}")
            else:
                self.say(f"profiling the tails ({self.opts.profile_runs} runs per split) ...")
                # its own process (on the server's CPUs): the tails it loads are freed when it exits
                cmd = [sys.executable, "-m", "splitpoint", "profile", "cloud", "--bundle", str(bundle_path),
                       "--runs", str(self.opts.profile_runs), "-o", str(p)]
                plog = self.runs_dir / "profile-cloud.log"
                with open(plog, "w") as logf:
                    try:
                        rc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=3600,
                                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")).returncode
                    except subprocess.TimeoutExpired:
                        rc = -1
                if rc != 0:
                    raise BenchError(f"splitpoint profile cloud failed (exit {rc}); log: {plog}")
            self.say(f"{side} profile written to {p} ({time.monotonic() - t:.1f}s)")
        return edge, cloud

    def _restricted_profiles(self, edge: Path, cloud: Path, splits: list[int]) -> tuple[Path, Path]:
        """Profiles covering only the measured splits: the adaptive agent chooses among the same set."""
        out = []
        for p in (edge, cloud):
            data = json.loads(p.read_text())
            data["splits"] = [s for s in data["splits"] if s["split"] in splits]
            q = self.runs_dir / f"{p.stem}-subset.json"
            q.write_text(json.dumps(data, indent=2))
            out.append(q)
        return out[0], out[1]

    # ------------------------------------------------------------------ runs

    def _predict_ms(self, k: int, bw_mbps: float | None, rtt_ms: float) -> float:
        head = self.edge_ms.get(k, 0.0)
        if k == self.K:
            return head
        wire = (self.wire[k] + FRAME_OVERHEAD_BYTES) * 8 / (bw_mbps * 1e6) * 1000 if bw_mbps else 0.0
        return head + wire + rtt_ms + self.cloud_ms.get(k, 0.0)

    def _timeout(self, frames: int, per_frame_ms: float) -> float:
        return min(3600.0, 120.0 + frames * (3 * per_frame_ms / 1000 + 0.5))

    def run_agent(self, name: str, frames: int, extra: list[str], per_frame_ms: float,
                  on_poll: Callable[[], None] | None = None) -> RunOutcome:
        from edge_node.results import read_results

        assert self.worker is not None and self.link is not None
        self._run_no += 1
        results = self.runs_dir / f"{self._run_no:04d}-{name}.jsonl"
        argv = ["edge", "--bundle", str(self.bundle_path), "--cloud", self.link.address, "--threads", "1", "--insecure",
                "--no-resume", "--results", str(results), "--log-level", "info", "--source", f"synthetic:{frames}",
                "--max-frames", str(frames), "--frame-deadline-ms", str(self.frame_deadline_ms), *extra]
        rc, seconds, err, start_ns = self.worker.run(argv, self._timeout(frames, per_frame_ms), on_poll)
        records = read_results(results) if results.exists() else []
        if rc != 0 or err:
            msg = f"run {name}: exit {rc}" + (f": {err}" if err else "") + f" ({len(records)} records)"
            log.warning(msg)
            self.result["errors"].append(msg)
        return RunOutcome(records, rc, seconds, err, start_ns, results)

    def _set_link(self, bw_mbps: float | None, rtt_ms: float, trace: Any = None) -> None:
        self.link.set_delay_ms(rtt_ms / 2)
        self.link.set_uplink(trace if trace is not None else (bw_mbps * 1e6 if bw_mbps else None))

    def _adaptive_flags(self, objective: str = "min-latency") -> list[str]:
        flags = ["--policy-name", objective, "--policy-edge-profile", str(self.edge_profile),
                 "--policy-cloud-profile", str(self.cloud_profile)]
        if objective != "min-latency" and self.opts.power_table is not None:
            flags += ["--policy-power-table", str(self.opts.power_table), "--policy-link", self.opts.radio_link]
        return flags

    # ------------------------------------------------------------------ energy

    def _energy_mj(self, r: dict[str, Any], bw_mbps: float) -> float | None:
        if self.power is None:
            return None
        t = r["timings_ms"]
        k = r["split"]
        if r["where"] == "local":
            return self.power.head_power(self.K) * t.get("local", 0.0) + (
                self.power.head_power(k) * t.get("head", 0.0) if r.get("fallback_reason") else 0.0)
        wire_ms = (self.wire[k] + FRAME_OVERHEAD_BYTES) * 8 / (bw_mbps * 1e6) * 1000
        head = t.get("head", 0.0)
        rest = max(0.0, t["end_to_end"] - head - wire_ms)
        return (self.power.head_power(k) * head + self.radio.tx_watts(bw_mbps * 1e6, link=self.opts.radio_link) * wire_ms
                + self.power.idle_w * rest)

    # ------------------------------------------------------------------ stage: conditions

    def fixed_sweep(self, bw: float, rtt: float) -> dict[str, Any]:
        key = (bw, rtt)
        if key in self.fixed_cache:
            return self.fixed_cache[key]
        self._set_link(bw, rtt)
        n = self.opts.warmup + self.opts.frames
        fixed: dict[int, dict[str, Any]] = {}
        for k in self.splits:
            wire_s = 0.0 if k == self.K else (self.wire[k] + FRAME_OVERHEAD_BYTES) * 8 / (bw * 1e6)
            if wire_s > self.opts.max_frame_s:
                fixed[k] = {"split": k, "skipped": f"wire time alone {wire_s:.1f} s per frame > --max-frame-s "
                                                   f"{self.opts.max_frame_s:g}", "lower_bound_ms": _round(wire_s * 1000 + rtt),
                            "median_ms": None, "p95_ms": None}
                continue
            out = self.run_agent(f"fixed-k{k}-{bw:g}M-{rtt:g}ms", n, ["--split", str(k), "--mode", "latency"],
                                 self._predict_ms(k, bw, rtt))
            fixed[k] = self._fixed_stats(k, out, bw)
        measured = {k: v for k, v in fixed.items() if v.get("median_ms") is not None}
        oracle = min(measured, key=lambda k: (measured[k]["median_ms"], k)) if measured else None
        sweep: dict[str, Any] = {"bandwidth_mbps": bw, "rtt_ms": rtt, "fixed": fixed, "oracle_split": oracle}
        if oracle is not None:
            unsure = [k for k, v in fixed.items() if v.get("lower_bound_ms") is not None
                      and v["lower_bound_ms"] < measured[oracle]["median_ms"]]
            if unsure:
                sweep["oracle_caveat"] = f"splits {unsure} were not run and their lower bound is below the oracle's latency"
        if self.power is not None and measured:
            e = {k: v["energy_median_mj"] for k, v in measured.items() if v.get("energy_median_mj") is not None}
            sweep["energy_oracle_split"] = min(e, key=lambda k: (e[k], k)) if e else None
        self.fixed_cache[key] = sweep
        return sweep

    def _fixed_stats(self, k: int, out: RunOutcome, bw: float | None) -> dict[str, Any]:
        recs = ok_records(out.records, self.opts.warmup)
        e2e = [r["timings_ms"]["end_to_end"] for r in recs]
        s: dict[str, Any] = {"split": k, **latency_stats(e2e)}
        s["fallbacks"] = sum(1 for r in recs if r.get("fallback_reason"))
        s["failed"] = sum(1 for r in out.records if r.get("status") != "ok")
        s["stages_median_ms"] = {
            stage: _median([r["timings_ms"][stage] for r in recs if stage in r["timings_ms"]])
            for stage in ("head", "local", "transfer", "server_queue", "server_compute", "rpc")
        }
        if out.error or out.rc:
            s["error"] = out.error or f"exit {out.rc}"
        if self.power is not None and bw:
            es = [e for r in recs if (e := self._energy_mj(r, bw)) is not None]
            s["energy_median_mj"] = _round(statistics.median(es)) if es else None
        return s

    def adaptive_run(self, bw: float, rtt: float, objective: str = "min-latency") -> dict[str, Any]:
        self._set_link(bw, rtt)
        n = self.opts.adaptive_frames
        worst = max(self._predict_ms(k, bw, rtt) for k in self.splits)
        out = self.run_agent(f"adaptive-{objective}-{bw:g}M-{rtt:g}ms", n, ["--mode", "latency", *self._adaptive_flags(objective)],
                             min(worst, self.opts.max_frame_s * 1000))
        recs = ok_records(out.records)
        splits = [r["split"] for r in recs]
        e2e = [r["timings_ms"]["end_to_end"] for r in recs if r["frame_id"] >= self.opts.warmup]
        res: dict[str, Any] = {"objective": objective, "frames": len(recs), "splits": splits,
                               "settled_split": settled_split(splits), "switches": count_switches(splits),
                               "fallbacks": sum(1 for r in recs if r.get("fallback_reason")),
                               **{f"own_{k}": v for k, v in latency_stats(e2e).items() if k != "frames"}}
        if out.error or out.rc:
            res["error"] = out.error or f"exit {out.rc}"
        return res

    def stage_conditions(self) -> None:
        conds = self.opts.condition_list()
        self.result["conditions"] = []
        for i, (bw, rtt) in enumerate(conds, 1):
            t = time.monotonic()
            self.say(f"condition {i}/{len(conds)}: {bw:g} Mbps, RTT {rtt:g} ms: {len(self.splits)} fixed splits ...")
            sweep = self.fixed_sweep(bw, rtt)
            cond = self._condition_result(sweep, self.adaptive_run(bw, rtt))
            if self.power is not None:
                cond["energy"] = self._energy_result(sweep, self.adaptive_run(bw, rtt, "min-energy"))
            self.result["conditions"].append(cond)
            self.save()
            o, c = cond.get("oracle_split"), cond.get("chosen_split")
            self.say(f"  oracle k={o} {cond.get('oracle_median_ms')} ms; agent settled on k={c} "
                     f"{cond.get('chosen_median_ms')} ms; chosen/oracle {cond.get('chosen_over_oracle')} "
                     f"({time.monotonic() - t:.1f}s)")

    def _condition_result(self, sweep: dict[str, Any], adaptive: dict[str, Any]) -> dict[str, Any]:
        fixed = sweep["fixed"]
        oracle = sweep["oracle_split"]
        chosen = adaptive["settled_split"]
        cond: dict[str, Any] = {"bandwidth_mbps": sweep["bandwidth_mbps"], "rtt_ms": sweep["rtt_ms"],
                                "fixed": {str(k): v for k, v in fixed.items()}, "oracle_split": oracle,
                                "adaptive": adaptive, "chosen_split": chosen}
        if "oracle_caveat" in sweep:
            cond["oracle_caveat"] = sweep["oracle_caveat"]

        def med(k: int | None) -> float | None:
            return fixed.get(k, {}).get("median_ms") if k is not None else None

        def p95(k: int | None) -> float | None:
            return fixed.get(k, {}).get("p95_ms") if k is not None else None

        cond["oracle_median_ms"], cond["oracle_p95_ms"] = med(oracle), p95(oracle)
        if chosen is not None and chosen not in fixed:
            cond["chosen_note"] = f"k={chosen} was not among the measured splits"
        cond["chosen_median_ms"], cond["chosen_p95_ms"] = med(chosen), p95(chosen)
        edge, cloud = med(self.K), med(0)
        cond["all_edge_median_ms"], cond["all_cloud_median_ms"] = edge, cloud
        c, o = cond["chosen_median_ms"], cond["oracle_median_ms"]
        cond["chosen_over_oracle"] = _round(c / o, 4) if c and o else None
        cond["speedup_vs_all_edge"] = _round(edge / c, 3) if c and edge else None
        cond["speedup_vs_all_cloud"] = _round(cloud / c, 3) if c and cloud else None
        cond["oracle_speedup_vs_all_edge"] = _round(edge / o, 3) if o and edge else None
        cond["oracle_speedup_vs_all_cloud"] = _round(cloud / o, 3) if o and cloud else None
        better = [x for x in (edge, cloud) if x is not None]
        if c and better:
            cond["better_of_edge_cloud_ms"] = min(better)
            cond["chosen_over_better_of_edge_cloud"] = _round(c / min(better), 4)
        return cond

    def _energy_result(self, sweep: dict[str, Any], adaptive: dict[str, Any]) -> dict[str, Any]:
        fixed = sweep["fixed"]

        def e(k: int | None) -> float | None:
            return fixed.get(k, {}).get("energy_median_mj") if k is not None else None

        oracle, chosen = sweep.get("energy_oracle_split"), adaptive["settled_split"]
        res: dict[str, Any] = {"adaptive": adaptive, "oracle_split": oracle, "oracle_mj": e(oracle), "chosen_split": chosen,
                               "chosen_mj": e(chosen), "all_edge_mj": e(self.K), "all_cloud_mj": e(0)}
        c, o = res["chosen_mj"], res["oracle_mj"]
        res["chosen_over_oracle"] = _round(c / o, 4) if c and o else None
        res["saving_vs_all_edge"] = _round(res["all_edge_mj"] / c, 3) if c and res["all_edge_mj"] else None
        res["saving_vs_all_cloud"] = _round(res["all_cloud_mj"] / c, 3) if c and res["all_cloud_mj"] else None
        return res

    # ------------------------------------------------------------------ stage: step change

    def stage_step(self) -> None:
        hi, lo = self.opts.step_rates_mbps
        rtt = self.opts.step_rtt_ms
        phase = self.opts.step_phase_frames
        oracles = {}
        for bw in (hi, lo):
            if (bw, rtt) not in self.fixed_cache:
                self.say(f"step change: measuring every fixed split at {bw:g} Mbps, RTT {rtt:g} ms for the oracle ...")
            sw = self.fixed_sweep(bw, rtt)
            oracles[bw] = {"split": sw["oracle_split"],
                           "median_ms": {str(k): v.get("median_ms") for k, v in sw["fixed"].items()}}
        self.say(f"step change {hi:g} -> {lo:g} -> {hi:g} Mbps (RTT {rtt:g} ms, {self.opts.step_fps:g} fps, "
                 f"{phase} frames per phase) ...")
        self._set_link(hi, rtt)
        changes: list[tuple[float, int]] = []  # (rate Mbps, unix ns)
        n = 3 * phase
        plan = [(phase, lo), (2 * phase, hi)]

        def on_poll() -> None:
            if len(changes) >= len(plan):
                return
            # run_agent numbers the results file with self._run_no (incremented before the run)
            path = self.runs_dir / f"{self._run_no:04d}-step.jsonl"
            try:
                count = path.read_bytes().count(b"\n")
            except OSError:
                return
            at, rate = plan[len(changes)]
            if count >= at:
                self.link.set_uplink(rate * 1e6)
                changes.append((rate, time.time_ns()))
                self.say(f"  link set to {rate:g} Mbps after {count} frames")

        worst = self._predict_ms(0, lo, rtt)
        out = self.run_agent("step", n, ["--mode", "latency", "--fps", str(self.opts.step_fps), *self._adaptive_flags()],
                             min(max(worst, 1000 / self.opts.step_fps), self.opts.max_frame_s * 1000), on_poll=on_poll)
        recs = ok_records(out.records)
        res: dict[str, Any] = {"rates_mbps": [hi, lo, hi], "rtt_ms": rtt, "fps": self.opts.step_fps, "phase_frames": phase,
                               "deadline_ms": self.opts.deadline_ms or 1000.0 / self.opts.step_fps,
                               "oracles": {str(k): v for k, v in oracles.items()}, "changes": [], "frames": []}
        t_start = out.started_unix_ns or (recs[0]["capture_time_unix_ns"] if recs else time.time_ns())
        for r in recs:
            res["frames"].append({"frame_id": r["frame_id"], "split": r["split"], "where": r["where"],
                                  "t_s": _round((r["capture_time_unix_ns"] - t_start) / 1e9, 4),
                                  "end_to_end_ms": r["timings_ms"]["end_to_end"]})
        bounds = [ns for _, ns in changes] + [math.inf]
        for i, (rate, ns) in enumerate(changes):
            before = [r for r in recs if r["capture_time_unix_ns"] < ns]
            during = [r for r in recs if ns <= r["capture_time_unix_ns"] < bounds[i + 1]]
            splits = [r["split"] for r in during]
            best = oracles[rate]["split"]
            final = splits[-1] if splits else None
            j = len(splits)
            while j > 0 and splits[j - 1] == final:
                j -= 1
            ch: dict[str, Any] = {"to_mbps": rate, "t_s": _round((ns - t_start) / 1e9, 4), "frames_after": len(splits),
                                  "best_split": best, "final_split": final, "settled_on_best": final == best,
                                  "frames_to_settle": j if splits else None,
                                  "seconds_to_settle": (_round((during[j]["capture_time_unix_ns"] - ns) / 1e9, 3)
                                                        if splits and j > 0 else 0.0 if splits else None),
                                  "switches": count_switches(splits, before[-1]["split"] if before else None)}
            med = oracles[rate]["median_ms"]
            if final is not None and med.get(str(final)) and med.get(str(best)):
                ch["final_over_best_latency"] = _round(med[str(final)] / med[str(best)], 4)
            if splits and final != best:
                ch["note"] = "the agent did not end the phase on the measured best split"
            res["changes"].append(ch)
        if len(changes) < len(plan):
            res["error"] = f"only {len(changes)} of {len(plan)} link changes happened (run ended early?)"
            self.result["errors"].append("step: " + res["error"])
        self.result["step"] = res
        for ch in res["changes"]:
            self.say(f"  -> {ch['to_mbps']:g} Mbps: best k={ch['best_split']}, agent ended on k={ch['final_split']} "
                     f"after {ch['frames_to_settle']} frames ({ch['seconds_to_settle']} s), {ch['switches']} switches")

    # ------------------------------------------------------------------ stage: traces

    def stage_traces(self) -> None:
        from splitpoint.traces import load_trace

        tdir = Path(self.opts.traces_dir) if self.opts.traces_dir else default_traces_dir()
        fps = self.opts.trace_fps
        deadline = self.opts.deadline_ms or 1000.0 / fps
        rtt = self.opts.trace_rtt_ms
        n = max(2, int(round(self.opts.trace_seconds * fps)))
        warm = min(self.opts.warmup, n // 4)
        self.result["traces"] = []
        for name in self.opts.traces:
            path = tdir / name
            if not path.exists():
                msg = f"trace {path} not found (--traces-dir)"
                self.say("  " + msg)
                self.result["errors"].append(msg)
                self.result["traces"].append({"trace": name, "error": msg})
                continue
            trace = load_trace(path)
            mean_mbps = trace.mean_bps / 1e6
            slice_rate = trace.bits_between(0, self.opts.trace_seconds) / self.opts.trace_seconds / 1e6
            self.say(f"trace {name}: first {self.opts.trace_seconds:g} s (mean {slice_rate:.2f} Mbps; whole trace "
                     f"{mean_mbps:.2f}), {fps:g} fps, RTT {rtt:g} ms, deadline {deadline:g} ms: adaptive + "
                     f"{len(self.trace_splits)} fixed splits ...")
            entry: dict[str, Any] = {"trace": name, "path": str(path), "seconds": self.opts.trace_seconds, "fps": fps,
                                     "frames": n, "warmup": warm, "rtt_ms": rtt, "deadline_ms": deadline,
                                     "trace_mean_mbps": _round(mean_mbps), "slice_mean_mbps": _round(slice_rate),
                                     "slice_rates_mbps": [_round(trace.bits_between(t, t + 0.5) / 0.5 / 1e6)
                                                          for t in np.arange(0, self.opts.trace_seconds, 0.5)],
                                     "runs": {}}
            runs = [("adaptive", None)] + [(f"k={k}", k) for k in self.trace_splits]
            for label, k in runs:
                if k is not None and k != self.K:
                    wire_s = (self.wire[k] + FRAME_OVERHEAD_BYTES) * 8 / max(slice_rate * 1e6, 1.0)
                    if wire_s > self.opts.max_frame_s:
                        entry["runs"][label] = {"split": k, "skipped": f"wire time at the slice's mean rate {wire_s:.1f} s "
                                                                       f"> --max-frame-s {self.opts.max_frame_s:g}"}
                        continue
                extra = ["--mode", "latency", "--fps", str(fps)]
                extra += self._adaptive_flags() if k is None else ["--split", str(k)]
                per = self._predict_ms(k if k is not None else 0, max(slice_rate, 0.2), rtt)
                self._set_link(None, rtt, trace)
                assert self.worker is not None
                sync = _TraceSync(self.link, trace, self.worker.log_path)  # restarts the trace at the first frame
                out = self.run_agent(f"trace-{Path(name).stem}-{label.replace('=', '')}", n, extra,
                                     min(max(per, 1000 / fps), self.opts.max_frame_s * 1000), on_poll=sync.poll)
                entry["runs"][label] = self._trace_stats(out, k, warm, deadline, sync.t_set_ns)
                entry["runs"][label]["trace_synced_to_source_open"] = sync.synced
                self.save()
            self._trace_summary(entry)
            entry["clairvoyant"] = self._clairvoyant(trace, entry)
            self.result["traces"].append(entry)
            self.save()
            a = entry["runs"].get("adaptive", {})
            cv = entry["clairvoyant"]
            self.say(f"  adaptive mean {a.get('mean_ms')} ms p95 {a.get('p95_ms')} ms misses {a.get('deadline_misses')}; "
                     f"best fixed {entry.get('best_fixed')} mean {entry.get('best_fixed_mean_ms')} ms; "
                     f"ratio {entry.get('adaptive_over_best_fixed')}; clairvoyant ({cv.get('kind', cv.get('error'))}) "
                     f"mean {cv.get('mean_ms')} ms, adaptive/clairvoyant {cv.get('adaptive_over_clairvoyant')}")

    def _trace_stats(self, out: RunOutcome, k: int | None, warm: int, deadline: float, t_set: int) -> dict[str, Any]:
        recs_all = sorted(out.records, key=lambda r: r["frame_id"])
        recs = ok_records(out.records, warm)
        e2e = [r["timings_ms"]["end_to_end"] for r in recs]
        counted = [r for r in recs_all if r["frame_id"] >= warm]
        misses = sum(1 for r in counted if r.get("status") != "ok" or r["timings_ms"]["end_to_end"] > deadline)
        s: dict[str, Any] = {"split": k, **latency_stats(e2e), "deadline_misses": misses, "counted_frames": len(counted),
                             "fallbacks": sum(1 for r in recs if r.get("fallback_reason"))}
        if recs_all and recs_all[0].get("capture_time_unix_ns"):
            s["first_frame_after_trace_start_s"] = _round((recs_all[0]["capture_time_unix_ns"] - t_set) / 1e9)
            last = max(completion_ns(r) for r in recs_all if r.get("status") == "ok") if recs else t_set
            s["duration_s"] = _round((last - recs_all[0]["capture_time_unix_ns"]) / 1e9)
        if k is None:
            ok_all = ok_records(out.records)
            s["splits"] = [r["split"] for r in ok_all]
            s["t_s"] = [_round((r["capture_time_unix_ns"] - t_set) / 1e9, 3) for r in ok_all]
            s["end_to_end_ms"] = [r["timings_ms"]["end_to_end"] for r in ok_all]
            s["switches"] = count_switches(s["splits"])
            s["split_counts"] = {str(a): b for a, b in sorted(Counter(s["splits"]).items())}
        if out.error or out.rc:
            s["error"] = out.error or f"exit {out.rc}"
        return s

    def _clairvoyant(self, trace: Any, entry: dict[str, Any]) -> dict[str, Any]:
        """The best mean any scheduler knowing this trace could reach (splitpoint/bench/clairvoyant.py)."""
        from splitpoint.bench import clairvoyant as cv

        head, tail, queue = cv.measured_stage_times(self.result.get("conditions") or [], self.K, self.edge_ms,
                                                    self.cloud_ms)
        paths = cv.paths_from_profiles(self.splits, self.K, head, tail, self.wire, FRAME_OVERHEAD_BYTES, queue)
        try:
            return cv.trace_bound(trace, paths, entry["fps"], entry["frames"], entry["rtt_ms"], entry["warmup"],
                                  entry["deadline_ms"], entry["runs"].get("adaptive", {}).get("mean_ms"))
        except ValueError as exc:
            return {"error": str(exc)}

    @staticmethod
    def _trace_summary(entry: dict[str, Any]) -> None:
        fixed = {lbl: r for lbl, r in entry["runs"].items() if lbl != "adaptive" and r.get("mean_ms") is not None}
        if fixed:
            best = min(fixed, key=lambda lbl: fixed[lbl]["mean_ms"])
            entry["best_fixed"] = best
            entry["best_fixed_mean_ms"] = fixed[best]["mean_ms"]
            entry["best_fixed_p95_ms"] = fixed[best]["p95_ms"]
            entry["best_fixed_misses"] = fixed[best]["deadline_misses"]
            a = entry["runs"].get("adaptive", {})
            if a.get("mean_ms"):
                entry["adaptive_over_best_fixed"] = _round(a["mean_ms"] / fixed[best]["mean_ms"], 4)

    # ------------------------------------------------------------------ stage: throughput

    def stage_throughput(self) -> None:
        bw = self.opts.tp_bandwidth_mbps
        cloud_splits = [k for k in self.splits if k != self.K]
        largest = max(cloud_splits, key=lambda k: (self.wire[k], k))
        heaviest = max(cloud_splits, key=lambda k: (max(self.edge_ms.get(k, 0), self.cloud_ms.get(k, 0)), k))
        tp_splits = sorted({largest, heaviest})
        n = self.opts.tp_frames
        warm = max(self.opts.warmup, self.opts.tp_window)
        self._set_link(bw, 0.0)
        self.result["throughput"] = {"bandwidth_mbps": bw, "rtt_added_ms": 0.0, "window": self.opts.tp_window,
                                     "frames": n, "warmup": warm, "runs": []}
        for k in tp_splits:
            self.say(f"throughput mode: k={k} ({self.wire[k]} bytes on the wire) at {bw:g} Mbps, window "
                     f"{self.opts.tp_window}, {n} frames ...")
            out = self.run_agent(f"throughput-k{k}-{bw:g}M", n, ["--split", str(k), "--mode", "throughput",
                                                                   "--window", str(self.opts.tp_window)],
                                 self._predict_ms(k, bw, 0.0))
            recs = ok_records(out.records, warm)
            stages = {"head": self.edge_ms.get(k, 0.0),
                      "transfer": (self.wire[k] + FRAME_OVERHEAD_BYTES) * 8 / (bw * 1e6) * 1000,
                      "tail": self.cloud_ms.get(k, 0.0)}
            limit = max(stages, key=lambda s: stages[s])
            bound = 1000.0 / stages[limit] if stages[limit] > 0 else None
            run: dict[str, Any] = {"split": k, "wire_bytes": self.wire[k],
                                   "stage_ms": {s: _round(v, 4) for s, v in stages.items()}, "limiting_stage": limit,
                                   "bound_fps": _round(bound), "frames_counted": len(recs),
                                   "fallbacks": sum(1 for r in recs if r.get("fallback_reason")),
                                   "measured_stage_median_ms": {
                                       s: _median([r["timings_ms"][s] for r in recs if s in r["timings_ms"]])
                                       for s in ("head", "transfer", "server_queue", "server_compute", "end_to_end")}}
            if len(recs) >= 3:
                done = sorted(completion_ns(r) for r in recs)
                span = (done[-1] - done[0]) / 1e9
                fps = (len(done) - 1) / span if span > 0 else None
                run["fps"] = _round(fps)
                run["fps_over_bound"] = _round(fps / bound, 4) if fps and bound else None
                gp = self.wire[k] * 8 * (len(done) - 1) / span if span > 0 else None
                run["goodput_mbps"] = _round(gp / 1e6 if gp else None, 4)
                run["goodput_over_rate"] = _round(gp / (bw * 1e6), 4) if gp else None
            if out.error or out.rc:
                run["error"] = out.error or f"exit {out.rc}"
            self.result["throughput"]["runs"].append(run)
            if k == largest:
                self.result["goodput"] = {"split": k, "wire_bytes": self.wire[k], "shaped_mbps": bw,
                                          "goodput_mbps": run.get("goodput_mbps"),
                                          "goodput_over_rate": run.get("goodput_over_rate"),
                                          "what": "cut-tensor bytes of answered frames per second between the first and "
                                                  "the last answer (warm-up excluded), throughput mode, largest split"}
            self.save()
            self.say(f"  {run.get('fps')} fps vs bound {run.get('bound_fps')} ({limit}-bound): {run.get('fps_over_bound')}; "
                     f"goodput {run.get('goodput_mbps')} Mbps of {bw:g}")

    # ------------------------------------------------------------------ stage: overhead

    def stage_overhead(self) -> None:
        from splitpoint.bench.overhead import measure_overhead

        self.say(f"added cost per frame: 200 KB int8 tensor, splitpoint vs raw gRPC, {self.opts.overhead_frames} frames each ...")
        res = measure_overhead(frames=self.opts.overhead_frames, warmup=20, block=min(50, self.opts.overhead_frames))
        # the same from the real runs: end-to-end minus head, wire time, RTT and server compute
        resid = []
        for cond in self.result.get("conditions", []):
            bw, rtt = cond["bandwidth_mbps"], cond["rtt_ms"]
            for k, f in cond["fixed"].items():
                st = f.get("stages_median_ms") or {}
                if int(k) == self.K or f.get("median_ms") is None or st.get("head") is None:
                    continue
                wire_ms = (self.wire[int(k)] + FRAME_OVERHEAD_BYTES) * 8 / (bw * 1e6) * 1000
                resid.append(f["median_ms"] - st["head"] - (st.get("server_queue") or 0) - (st.get("server_compute") or 0)
                             - wire_ms - rtt)
        if resid:
            res["end_to_end_residual_ms"] = {"median": _round(statistics.median(resid)), "runs": len(resid),
                                             "what": "median over fixed-split runs of: median end-to-end - head - server "
                                                     "queue - server compute - wire time at the set rate - set RTT "
                                                     "(includes the link emulator's own delays)"}
        self.result["overhead"] = res
        self.say(f"  splitpoint {res['splitpoint']['median_ms']} ms, raw gRPC {res['raw_grpc']['median_ms']} ms: "
                 f"added {res['added_ms']} ms per frame")

    # ------------------------------------------------------------------ driver

    def run(self) -> dict[str, Any]:
        opts = self.opts
        pinning = self._pin_harness()
        self.result["machine"] = machine_description(pinning)
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
            self._run_stages(pinning)
            self.result["complete"] = True
        finally:
            self._shutdown()
            self.save()
        return self.result

    def _run_stages(self, pinning: dict[str, Any]) -> None:
        from cloud_server.config import CloudConfig
        from cloud_server.server import CloudServer
        from scheduler.profiles import load_profile
        from splitpoint.bundle import load_bundle
        from splitpoint.linkemu import LinkEmulator

        opts = self.opts
        t = time.monotonic()
        self.bundle_path = self._bundle()
        bundle = load_bundle(self.bundle_path, verify=False)
        m = bundle.manifest
        self.K = m.num_layers
        self.wire = {s.split: s.wire_bytes for s in m.splits}
        all_splits = m.split_ids
        if opts.splits:
            bad = [k for k in opts.splits if k not in all_splits]
            if bad:
                raise ConfigError("--splits", bad, f"not splits of {m.model_name}: {all_splits}")
            self.splits = sorted(set(opts.splits) | {0, self.K})
        else:
            self.splits = list(all_splits)
        self.trace_splits = list(self.splits)
        self.result["bundle"] = {"path": str(self.bundle_path), "model": m.model_name, "digest": m.model_digest,
                                 "num_layers": self.K, "source": m.source, "measured_splits": self.splits,
                                 "splits": [{"split": s.split, "after_layer": s.after_layer, "wire_bytes": s.wire_bytes,
                                             "cut_shape": list(s.cut[0].shape) if s.cut else None} for s in m.splits]}
        self.say(f"bundle {m.model_name} ({self.bundle_path}): K = {self.K}, measuring splits {self.splits}")
        self.worker = EdgeWorker(pinning.get("edge_cpu"), self.runs_dir / "edge-worker.log", self.opts.edge_slowdown)
        ready = self.worker.start()
        pinning["edge_worker"] = ready.get("pinning")
        pinning["edge_worker_thread_env"] = ready.get("thread_env")
        self.say(f"edge worker pid {ready.get('pid')}: {ready.get('pinning', {}).get('reason')}")
        if ready.get("slowdown", 1.0) != 1.0:
            pinning["edge_slowdown"] = ready["slowdown"]
            self.say(f"edge worker emulates a device {ready['slowdown']:g}x slower than its core: every head "
                     "invocation is followed by a sleep of (factor - 1) x its measured time")
        self.edge_profile, self.cloud_profile = self._profiles(self.bundle_path, m.model_digest)
        ep, cp = load_profile(self.edge_profile), load_profile(self.cloud_profile)
        self.edge_ms = {k: ep.latency_ms(k) for k in ep.splits}
        self.cloud_ms = {k: cp.latency_ms(k) for k in cp.splits}
        self.result["profiles"] = {"edge": str(self.edge_profile), "cloud": str(self.cloud_profile),
                                   "edge_device": ep.device, "edge_median_ms": {str(k): v for k, v in self.edge_ms.items()},
                                   "cloud_median_ms": {str(k): v for k, v in self.cloud_ms.items()}}
        if opts.splits:
            self.edge_profile, self.cloud_profile = self._restricted_profiles(self.edge_profile, self.cloud_profile, self.splits)
        if opts.power_table is not None:
            from scheduler.power import PowerTable, RadioModel

            self.power = PowerTable.load(opts.power_table)
            self.radio = RadioModel()
            self.result["power"] = {"table": str(opts.power_table), "radio_link": opts.radio_link}
        self.say("starting the server (in this process) and the link emulator ...")
        self.server = CloudServer(CloudConfig(bundle=str(self.bundle_path), listen="127.0.0.1:0", insecure=True,
                                              log_level="warning", grace_s=5.0, warm_tails=opts.warm_tails,
                                              splits=self.splits if opts.splits else [])).start()
        _quiet_logging()
        host, port = self.server.address.rsplit(":", 1)
        # The emulator serializes at the rate with no burst credit (docs/link-emulation.md), so
        # "1 Mbps" is the same link for small cut tensors as for large ones.
        self.link = LinkEmulator((host, int(port)), uplink=None, downlink=None, delay_ms=0).start()
        self.result["link"] = {"emulator": "splitpoint.linkemu.LinkEmulator (userspace TCP proxy on 127.0.0.1)",
                               "uplink": "the condition's rate or trace (serialized at the rate, no burst credit)",
                               "downlink": "unlimited",
                               "delay": "RTT/2 each way", "server": self.server.address, "proxy": self.link.address,
                               "frame_deadline_ms": self.frame_deadline_ms}
        self.result["stage_seconds"]["setup"] = round(time.monotonic() - t, 2)
        self.result["settings"] = _settings(opts)
        self.save()
        for stage in STAGES:
            if stage in opts.skip:
                self.say(f"{stage}: skipped (--skip)")
                continue
            t = time.monotonic()
            try:
                getattr(self, f"stage_{stage}")()
            except (SplitpointError, OSError, RuntimeError, ValueError, KeyError) as exc:
                log.exception("stage %s failed", stage)
                self.result["errors"].append(f"{stage}: {type(exc).__name__}: {exc}")
                self.say(f"{stage} FAILED: {exc}")
            self.result["stage_seconds"][stage] = round(time.monotonic() - t, 2)
            self.save()
        from splitpoint.bench.report import evaluate_targets

        self.result["targets"] = evaluate_targets(self.result)

    def _shutdown(self) -> None:
        if self.worker is not None:
            self.result.setdefault("machine", {}).setdefault("pinning", {})["edge_worker_restarts"] = self.worker.restarts
            self.worker.stop()
        if self.link is not None:
            self.result.setdefault("link", {})["stats_at_end"] = self.link.stats()
            self.link.stop()
        if self.server is not None:
            self.server.stop(grace=2.0)
        if self._tmp is not None:
            self._tmp.cleanup()


def _settings(opts: BenchOptions) -> dict[str, Any]:
    d = asdict(opts)
    for k, v in list(d.items()):
        if isinstance(v, Path):
            d[k] = str(v)
        elif isinstance(v, set):
            d[k] = sorted(v)
    d.pop("argv", None)
    return d


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set):
        return sorted(o)
    return str(o)


def _quiet_logging() -> None:
    """The server logs at info; the bench prints its own progress."""
    for name in ("cloud_server", "splitpoint", "scheduler", "edge_node"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("splitpoint.bench").setLevel(logging.INFO)


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Run everything `opts` asks for; write JSON, markdown and plots; return the result."""
    from splitpoint.bench.report import render_markdown, render_plots

    bench = Bench(opts)
    result = bench.run()
    if opts.plots_dir is not None:
        result["plots"] = render_plots(result, Path(opts.plots_dir))
        bench.save()
    if opts.json_path is not None:
        bench.say(f"JSON: {opts.json_path}")
    md = render_markdown(result)
    if opts.markdown_path is not None:
        Path(opts.markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.markdown_path).write_text(md)
        bench.say(f"markdown: {opts.markdown_path}")
    print(md, flush=True)
    bench.say(f"done in {result.get('wall_time_s')} s")
    return result


# --------------------------------------------------------------------------- command line


def _float_list(key: str, text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(key, text, "expected a comma-separated list of numbers, e.g. 1,2,5") from None
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ConfigError(key, text, "expected positive numbers")
    return values


def options_from_args(args: Any, argv: list[str] | None = None) -> BenchOptions:
    """BenchOptions from `splitpoint bench` flags; --smoke sets small defaults that explicit flags override."""
    opts = BenchOptions.smoke_defaults() if args.smoke else BenchOptions()
    opts.argv = list(argv or [])
    if args.bundle:
        opts.bundle = Path(args.bundle)
    if args.bandwidths or args.rtts:
        opts.conditions = None
        if args.bandwidths:
            opts.bandwidths_mbps = _float_list("--bandwidths", args.bandwidths)
        if args.rtts:
            opts.rtts_ms = _float_list("--rtts", args.rtts)
        if args.smoke:  # the other axis keeps the smoke conditions' values
            if not args.bandwidths:
                opts.bandwidths_mbps = sorted({bw for bw, _ in SMOKE_CONDITIONS})
            if not args.rtts:
                opts.rtts_ms = sorted({rtt for _, rtt in SMOKE_CONDITIONS})
    for flag, attr in (("frames", "frames"), ("warmup", "warmup"), ("adaptive_frames", "adaptive_frames"),
                       ("trace_seconds", "trace_seconds"), ("trace_fps", "trace_fps"), ("trace_rtt", "trace_rtt_ms"),
                       ("deadline_ms", "deadline_ms"), ("step_fps", "step_fps"), ("step_frames", "step_phase_frames"),
                       ("tp_frames", "tp_frames"), ("profile_runs", "profile_runs"), ("max_frame_s", "max_frame_s"),
                       ("edge_cpu", "edge_cpu"), ("overhead_frames", "overhead_frames"), ("warm_tails", "warm_tails"),
                       ("edge_slowdown", "edge_slowdown")):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(opts, attr, value)
    if args.splits:
        from splitpoint.partition import parse_splits

        opts.splits = parse_splits(args.splits)
    if args.traces:
        opts.traces = [t.strip() for t in args.traces.split(",") if t.strip()]
    if args.traces_dir:
        opts.traces_dir = Path(args.traces_dir)
    if args.skip:
        opts.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
        bad = opts.skip - set(STAGES)
        if bad:
            raise ConfigError("--skip", args.skip, f"unknown stage(s) {sorted(bad)}; stages: {', '.join(STAGES)}")
    for flag, attr in (("json", "json_path"), ("markdown", "markdown_path"), ("plots", "plots_dir"),
                       ("power_table", "power_table"), ("keep_runs", "keep_runs"), ("cache_dir", "cache_dir")):
        value = getattr(args, flag, None)
        if value:
            setattr(opts, attr, Path(value))
    if getattr(args, "radio_link", None):
        opts.radio_link = args.radio_link
    opts.reprofile = bool(getattr(args, "reprofile", False))
    if not (math.isfinite(opts.edge_slowdown) and 1.0 <= opts.edge_slowdown <= 10_000):
        raise ConfigError("--edge-slowdown", opts.edge_slowdown, "expected a factor from 1 (native) to 10000")
    if opts.frames < 1 or opts.adaptive_frames < 2 or opts.warmup < 0:
        raise ConfigError("--frames", opts.frames, "need --frames >= 1, --adaptive-frames >= 2, --warmup >= 0")
    if opts.traces_dir is None and "traces" not in opts.skip and not default_traces_dir().is_dir():
        raise ConfigError("--traces-dir", str(default_traces_dir()), "no traces there; give --traces-dir DIR or --skip traces")
    return opts
