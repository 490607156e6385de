"""What `splitpoint bench` runs: every option declared once.

BenchOptions uses the same `option()` mechanism as the agent's and the server's configs
(splitpoint/config.py), so each field is at once a flag (`--trace-fps`), a key of the
`--config` TOML file (`trace_fps = 10.0`) and a line of `--print-config`. Values come from
the defaults, then the smoke profile (`--smoke`, or `smoke = true` in the file), then the
TOML file, then the flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import splitpoint
from splitpoint import config as cfg
from splitpoint.config import option
from splitpoint.errors import ConfigError

DEFAULT_BANDWIDTHS_MBPS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
DEFAULT_RTTS_MS = (10.0, 50.0, 150.0)
#: the smoke run's conditions (Mbps x RTT ms): 50 and 2 Mbps at 50 ms, also the step change's two rates
SMOKE_BANDWIDTHS_MBPS = (50.0, 2.0)
SMOKE_RTTS_MS = (50.0,)
#: the smoke run's trace; by default every *.up file of the traces directory is replayed
SMOKE_TRACE = "Verizon-LTE-short.up"
DEFAULT_TRACE_RTTS_MS = (10.0, 50.0)
STAGES = ("conditions", "step", "traces", "throughput", "overhead")

#: what --smoke changes (explicit flags and TOML keys still win): small and quick, for CI
SMOKE_VALUES: dict[str, Any] = {
    "bandwidths": list(SMOKE_BANDWIDTHS_MBPS), "rtts": list(SMOKE_RTTS_MS), "frames": 6, "warmup": 2,
    "adaptive_frames": 12, "trace_seconds": 1.5, "traces": [SMOKE_TRACE], "trace_rtt": [50.0], "step_frames": 8,
    "step_fps": 20.0, "tp_frames": 40, "overhead_frames": 100, "profile_runs": 10,
}

#: the longest RTT of a condition, the step change or a trace run: a minute, 60 times a
#: geostationary satellite hop's; 1e9 ms was accepted, a run no frame of which could end
MAX_RTT_MS = 60_000.0
#: the fastest uplink rate, Mbps: 10 Gbps, beyond what the userspace link emulator on 127.0.0.1 can
#: shape; 1e308 Mbps was accepted and became an infinite rate the emulator refused mid-stage
MAX_RATE_MBPS = 10_000.0
#: the slowest camera of the trace and step runs, fps (a frame every 10 s), and the fewest frames a
#: trace slice must hold (a run has 2 at least): at 0.0001 fps the bench waited 10,000 s a frame
MIN_FPS = 0.1
MIN_SLICE_FRAMES = 2
#: the most frames of one run (and profiling runs of one split), as `splitpoint demo --frames` and
#: `profile --runs`: each is repeated for every split and condition, and --frames 10**12 was accepted
MAX_RUN_FRAMES = 100_000


def _upper_bounds() -> tuple[tuple[str, float, str], ...]:
    """(key, most, why) of the options that set how long the bench runs or how much it holds: a
    trace slice of 1e9 s was accepted (a list of its 0.5 s rates alone would not fit in memory), and
    frame counts of 10**12 (a run that never ends)."""
    from edge_node.config import MAX_FRAMES_HELD
    from splitpoint.traces import MAX_TRACE_S  # numpy: not for --help

    return (("tp_window", MAX_FRAMES_HELD, "frames in flight (it is the agent's --window)"),
            ("trace_seconds", MAX_TRACE_S, "s, the longest trace read (6 h)"),
            ("trace_long_s", MAX_TRACE_S, "s, the longest trace read (6 h)"),
            ("trace_slices", 100, "slices (each is replayed by every split)"),
            ("trace_fps", 1000, "frames per second, one a millisecond"),
            ("step_fps", 1000, "frames per second, one a millisecond"),
            ("frames", MAX_RUN_FRAMES, "frames (a run of every split at every condition)"),
            ("warmup", MAX_RUN_FRAMES, "frames (before every run)"),
            ("adaptive_frames", MAX_RUN_FRAMES, "frames (a run at every condition)"),
            ("step_frames", MAX_RUN_FRAMES, "frames (each phase of the step change)"),
            ("tp_frames", MAX_RUN_FRAMES, "frames (a throughput run of every split)"),
            ("overhead_frames", MAX_RUN_FRAMES, "frames (each path of the overhead measurement)"),
            ("profile_runs", MAX_RUN_FRAMES, "runs (of every split), as `splitpoint profile --runs`"))


W, L, T, E, OUT = "what to measure", "link conditions", "uplink traces", "edge device and energy", "output"


def default_traces_dir() -> Path:
    """../shared/data/traces beside the repository."""
    return Path(splitpoint.__file__).resolve().parents[2] / "shared" / "data" / "traces"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitpoint" / "bench"


@dataclass
class BenchOptions:
    bundle: str | None = option(None, "bundle to measure (default: the digits bundle, built once into the cache)",
                                group=W)
    smoke: bool = option(False, "CI smoke run: digits bundle, two conditions, few frames, a short trace slice "
                                "(explicit flags and keys still win)", group=W)
    splits: list[str] = option(help="measure only these splits, e.g. 0,4,8-10 (0 and K always; the adaptive agent "
                                    "then chooses among the same set)", default_factory=list, group=W)
    skip: list[str] = option(help="stages to skip: " + ",".join(STAGES), default_factory=list, group=W)
    frames: int = option(30, "measured frames per fixed-split run (at most 100000, as every frame count)", group=W)
    warmup: int = option(3, "warm-up frames excluded from each run", group=W)
    adaptive_frames: int = option(40, "frames of each adaptive run", group=W)
    max_frame_s: float = option(8.0, "do not run splits whose wire time alone exceeds this many seconds", group=W)
    bandwidths: list[float] = option(help="uplink rates in Mbps (default 1,2,5,10,20,50,100)",
                                     default_factory=lambda: list(DEFAULT_BANDWIDTHS_MBPS), group=L)
    rtts: list[float] = option(help="round-trip times in ms (default 10,50,150)",
                               default_factory=lambda: list(DEFAULT_RTTS_MS), group=L)
    step_rates: list[float] = option(help="the step change's two uplink rates in Mbps: high, low (default 50,2)",
                                     default_factory=lambda: [50.0, 2.0], group=L)
    step_rtt: float = option(50.0, "RTT of the step change in ms", group=L)
    step_fps: float = option(10.0, "camera rate of the step-change run", group=L)
    step_frames: int = option(30, "frames per phase of the step change", group=L)
    tp_bandwidth: float = option(10.0, "uplink rate of the throughput-mode runs and the goodput figure, Mbps", group=L)
    tp_frames: int = option(60, "frames per throughput-mode run", group=L)
    tp_window: int = option(4, "frames in flight in throughput mode", group=L)
    overhead_frames: int = option(300, "frames per path of the overhead measurement", group=L)
    traces_dir: str | None = option(None, "directory of Mahimahi traces (default ../shared/data/traces beside the "
                                          "repository)", group=T)
    traces: list[str] = option(help="trace files to replay (default: every *.up file in the traces directory)",
                               default_factory=list, group=T)
    trace_seconds: float = option(20.0, "replay this many seconds of each trace (each slice)", group=T)
    trace_long_s: float = option(300.0, "a trace longer than this many seconds is replayed in several slices",
                                 group=T)
    trace_slices: int = option(3, "slices of a long trace, at offsets spread from its start to its end", group=T)
    trace_fps: float = option(10.0, "camera rate of the trace runs", group=T)
    trace_rtt: list[float] = option(help="RTTs of the trace runs in ms, each trace (slice) at each (default 10,50)",
                                    default_factory=lambda: list(DEFAULT_TRACE_RTTS_MS), group=T)
    deadline_ms: float | None = option(None, "deadline of a trace frame, ms, at most an hour (default one frame "
                                             "interval)", group=T)
    edge_cpu: int | None = option(None, "CPU the edge worker is pinned to (default: the last allowed one)", group=E)
    edge_device: str = option("", "emulate the edge device of this file: each split's head lasts its time in it (a "
                                  "path, or a shipped name: mobilenetv2-96-documented.json, mobilenetv2-96-slow125.toml"
                                  "); excludes --edge-slowdown", group=E)
    edge_slowdown: float = option(1.0, "factor mode, calibrated in-run: each head lasts F x its median native time "
                                       "over its first 20 runs in the worker (1: native; calibrate with nothing else "
                                       "running; see docs/benchmarks.md)", group=E)
    power_table: str | None = option(None, "edge power table of the energy figures and the min-energy agent (default: "
                                           "the shipped reference table, modelled, not metered: docs/power.md)", group=E)
    radio_link: str | None = option(None, "radio power model for energy, as the agent's (default: lte with the "
                                          "reference table, wifi with --power-table)", choices=("wifi", "lte"), group=E)
    peer_nominal_mbps: float | None = option(None, "nominal bandwidth of the 'deadline at nominal bandwidth' rule, "
                                                   "Mbps (default: the trace's long-run mean; a condition: its rate)",
                                             group=E)
    profile_runs: int = option(20, "runs per split when profiling", group=E)
    reprofile: bool = option(False, "measure the profiles again instead of using the cached ones", group=E)
    warm_tails: int = option(0, "the server's warm_tails (0: load every measured tail at start)", group=E)
    json: str | None = option(None, "write every figure and the machine description here (updated after each "
                                    "stage)", group=OUT)
    markdown: str | None = option(None, "write the markdown report here", group=OUT)
    plots: str | None = option(None, "write PNG plots here (needs matplotlib: the bench extra)", group=OUT)
    cache_dir: str | None = option(None, "digits bundle and profiles (default ~/.cache/splitpoint/bench)", group=OUT)
    keep_runs: str | None = option(None, "keep every run's results log and the edge worker's log here", group=OUT)
    plan_log: bool = option(False, "log every plan of the adaptive agent (its path, reason and the figures it weighed, "
                                   "as `splitpoint -v edge` does) into the edge worker's log; needs --keep-runs",
                            group=OUT)

    def validate(self) -> None:
        for key, values in (("bandwidths", self.bandwidths), ("step_rates", self.step_rates)):
            if not values or any(not 0 < v <= MAX_RATE_MBPS for v in values):
                raise ConfigError(key, values, f"expected rates above 0 and at most {MAX_RATE_MBPS:g} Mbps, e.g. 1,2,5")
        if not self.rtts or any(not (0 < v <= MAX_RTT_MS) for v in self.rtts):  # a condition's RTT: never 0
            raise ConfigError("rtts", self.rtts, f"expected RTTs above 0 and at most {MAX_RTT_MS:g} ms, e.g. 10,50")
        if not self.trace_rtt or any(not (0 <= v <= MAX_RTT_MS) for v in self.trace_rtt):
            raise ConfigError("trace_rtt", self.trace_rtt, f"expected RTTs from 0 to {MAX_RTT_MS:g} ms, e.g. 10,50")
        if not 0 <= self.step_rtt <= MAX_RTT_MS:
            raise ConfigError("step_rtt", self.step_rtt, f"expected an RTT from 0 to {MAX_RTT_MS:g} ms")
        if len(self.step_rates) != 2:
            raise ConfigError("step_rates", self.step_rates, "expected two rates: high, low")
        bad = sorted(set(self.skip) - set(STAGES))
        if bad:
            raise ConfigError("skip", ",".join(self.skip), f"unknown stage(s) {', '.join(bad)}; stages: {', '.join(STAGES)}")
        self.split_list()  # a bad list is an error now, not after the set-up
        if not (math.isfinite(self.edge_slowdown) and 1.0 <= self.edge_slowdown <= 10_000):
            raise ConfigError("edge_slowdown", self.edge_slowdown, "expected a factor from 1 (native) to 10000")
        if self.edge_device and self.edge_slowdown != 1.0:
            raise ConfigError("edge_device", self.edge_device,
                              f"--edge-device and --edge-slowdown {self.edge_slowdown:g} exclude each other: "
                              "give one way to emulate the edge device")
        for key in ("tp_bandwidth", "peer_nominal_mbps"):
            rate = getattr(self, key)
            if rate is not None and not 0 < rate <= MAX_RATE_MBPS:
                raise ConfigError(key, rate, f"expected a rate above 0 and at most {MAX_RATE_MBPS:g} Mbps")
        for key, least in (("frames", 1), ("adaptive_frames", 2), ("warmup", 0), ("warm_tails", 0)):
            if getattr(self, key) < least:
                raise ConfigError(key, getattr(self, key), f"expected an integer >= {least}")
        for key in ("step_frames", "tp_frames", "tp_window", "overhead_frames", "profile_runs", "trace_slices"):
            if getattr(self, key) < 1:
                raise ConfigError(key, getattr(self, key), "expected a positive integer")
        for key in ("max_frame_s", "trace_seconds", "trace_long_s", "trace_fps", "step_fps"):
            v = getattr(self, key)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(key, v, "expected a positive number")
        for key in ("trace_fps", "step_fps"):
            if getattr(self, key) < MIN_FPS:
                raise ConfigError(key, getattr(self, key), f"must be at least {MIN_FPS:g} frames per second "
                                                           f"(a frame every {1 / MIN_FPS:g} s)")
        if self.trace_fps * self.trace_seconds < MIN_SLICE_FRAMES:
            raise ConfigError("trace_fps", self.trace_fps, f"gives {self.trace_fps * self.trace_seconds:g} frames in "
                              f"--trace-seconds {self.trace_seconds:g}: a slice must hold {MIN_SLICE_FRAMES} at least")
        for key, most, why in _upper_bounds():
            if getattr(self, key) > most:
                raise ConfigError(key, getattr(self, key), f"must be at most {most:g} {why}")
        from scheduler.objectives import MAX_DEADLINE_MS  # numpy: not for --help

        if self.deadline_ms is not None and not 0 < self.deadline_ms <= MAX_DEADLINE_MS:
            # the step stage hands it to the policy, which takes an hour at most: refused now, not there
            raise ConfigError("deadline_ms", self.deadline_ms,
                              f"expected a positive number of ms, at most {MAX_DEADLINE_MS:.0f} (an hour)")
        if self.plan_log and self.keep_runs is None:
            raise ConfigError("plan_log", True, "the plans are logged into the edge worker's log, which is kept only "
                                                "with --keep-runs DIR: give one")

    # ------------------------------------------------------------------ derived values

    def split_list(self) -> list[int] | None:
        """The --splits subset as numbers (None: every split)."""
        if not self.splits:
            return None
        from splitpoint.errors import PartitionError
        from splitpoint.partition import parse_splits

        try:
            return parse_splits(",".join(self.splits))
        except PartitionError as exc:
            raise ConfigError("splits", ",".join(self.splits), str(exc).removeprefix("--splits: ")) from None

    def condition_list(self) -> list[tuple[float, float]]:
        return [(bw, rtt) for bw in self.bandwidths for rtt in self.rtts]

    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def traces_path(self) -> Path:
        return Path(self.traces_dir) if self.traces_dir else default_traces_dir()

    def trace_names(self) -> list[str]:
        """The traces to replay: --traces, or every *.up file of the traces directory (sorted)."""
        if self.traces:
            return list(self.traces)
        return sorted(p.name for p in self.traces_path().glob("*.up"))

    def device_path(self) -> Path | None:
        """The --edge-device file: a path, else a shipped device file's name (None: no device file)."""
        if not self.edge_device:
            return None
        p = Path(self.edge_device)
        if p.is_file():
            return p
        from splitpoint.bench.device import DEVICES_DIR

        q = DEVICES_DIR / self.edge_device
        if q.is_file():
            return q
        shipped = ", ".join(sorted(x.name for x in DEVICES_DIR.glob("*") if x.is_file()))
        raise ConfigError("--edge-device", self.edge_device, f"neither a file nor a shipped device; shipped: {shipped}")

    def power_table_path(self) -> tuple[Path, str, bool]:
        """(power table, radio link, is it the shipped reference table) of the energy figures."""
        from splitpoint.bench.device import REFERENCE_POWER_TABLE

        if self.power_table is None:  # the reference table's radio part is the built-in LTE model
            return REFERENCE_POWER_TABLE, self.radio_link or "lte", True
        return Path(self.power_table), self.radio_link or "wifi", False

    def check_inputs(self) -> None:
        """What the file system must offer before a run starts (not checked by --print-config)."""
        from splitpoint.bench.report_tables import REPORT, is_report
        from splitpoint.bench.results import RESULT, is_result
        from splitpoint.files import check_can_create, check_distinct, check_replaceable, read_file

        outputs = ("json", "markdown", "keep_runs", "plots")
        # the cache too: `--markdown o.md --cache-dir o.md` made o.md the cache and lost the markdown at the end
        check_distinct([(key, getattr(self, key)) for key in ("cache_dir", *outputs) if getattr(self, key)])
        for key in outputs:  # found now, not after minutes of profiling
            value = getattr(self, key)
            if value:
                check_can_create(key, value, is_dir=key in ("keep_runs", "plots"))
        if self.keep_runs and Path(self.keep_runs).is_dir() and any(Path(self.keep_runs).iterdir()):
            # Runs are numbered from 0001 and the worker's log has a fixed name: an earlier run's
            # files would be overwritten one by one, and the ones the new run does not reach
            # would stay, read as its own.
            raise ConfigError("keep_runs", self.keep_runs, "is not empty: give a new or empty directory "
                                                           "(an earlier run's files are left as they are)")
        for key, what, is_ours in (("json", RESULT, is_result), ("markdown", REPORT, is_report)):
            if getattr(self, key):  # an earlier one of its kind, or nothing: not someone's notes.md
                check_replaceable(getattr(self, key), key, what, is_ours)
        if self.edge_device:
            from splitpoint.bench.device import load_device

            path = self.device_path()
            assert path is not None  # edge_device is set
            load_device(path)  # a bad file is an error before anything starts
        if self.power_table is not None:  # not found, a directory, a pipe, empty: each named as what it is
            read_file("--power-table", self.power_table)
        if self.cache_dir is not None:  # a file there: mkdir said "File exists" after the set-up (exit 1)
            check_can_create("cache_dir", self.cache_dir, is_dir=True)
        if self.traces_dir is None and "traces" not in self.skip and not default_traces_dir().is_dir():
            raise ConfigError("--traces-dir", str(default_traces_dir()),
                              "no traces there; give --traces-dir DIR or --skip traces")
        if "traces" not in self.skip:
            self._check_traces()

    def _check_traces(self) -> None:
        """Every trace to replay exists and loads: a misspelt name is an error now, not after the
        minutes of profiling and the stages before the trace stage."""
        from splitpoint.traces import load_trace

        tdir, names = self.traces_path(), self.trace_names()
        if not names:
            raise ConfigError("--traces-dir", str(tdir), "no *.up traces there; give --traces-dir DIR or --skip traces")
        for name in names:
            if os.path.lexists(tdir / name) and not (tdir / name).is_file():  # listed below as if missing
                from splitpoint.files import path_kind

                raise ConfigError("--traces", name, f"is {path_kind(tdir / name)} in {tdir}, not a trace file")
            if not (tdir / name).is_file():
                there = sorted(p.name for p in tdir.glob("*.up")) if tdir.is_dir() else []
                raise ConfigError("--traces", name, f"not found in {tdir}"
                                  + (f"; there: {', '.join(there)}" if there else ""))
            load_trace(tdir / name)  # a malformed file is its own error (ConfigError naming it)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`splitpoint bench`'s flags: --config, --print-config and one per BenchOptions field."""
    parser.add_argument("--config", metavar="FILE", help="TOML file of bench options; flags given here override it")
    parser.add_argument("--print-config", action="store_true", help="print the effective options as TOML and exit")
    cfg.add_arguments(parser, BenchOptions)


def load_options(args: argparse.Namespace) -> BenchOptions:
    """Defaults < the smoke profile < the TOML file < flags given on the command line."""
    config_path = getattr(args, "config", None)
    values = cfg.read_toml(config_path) if config_path else {}
    smoke = getattr(args, "smoke", values.get("smoke", False))
    merged: dict[str, Any] = dict(SMOKE_VALUES) if smoke is True else {}
    merged.update(values)
    flags = {f.name for f in dataclasses.fields(BenchOptions) if hasattr(args, f.name)}
    for name in flags:
        merged[name] = getattr(args, name)
    for name, value in merged.items():
        # `--json "$OUT"` with OUT unset ran the whole bench and saved nothing; `--bundle ""` measured
        # digits, `--traces ""` replayed every trace. edge_device's default is "" (none), as the file says
        if isinstance(value, str) and not value.replace(",", "").strip() and (name != "edge_device" or name in flags):
            key = "--" + name.replace("_", "-") if name in flags else name
            raise ConfigError(key, value, "is empty (an unset variable?): give a value, or leave "
                                          f"{'the flag' if name in flags else 'the key'} out for the default")
    return cfg.build(BenchOptions, merged)

