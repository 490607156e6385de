"""The bench's results as typed records: what each stage produces, the JSON, what the report reads.

Every stage fills one of these dataclasses; `BenchResult.to_json()` writes them (field names
are the JSON keys) and `BenchResult.from_json()` reads them back for `splitpoint.bench.report`
and scripts/bench_docs.py, so a stage and the report cannot disagree about a key without a
type checker or an AttributeError saying so. Every field has a default: a JSON written by an
older version (or by a run that stopped early) still loads, its missing figures None.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitpoint.bench.trace_results import PeerPickResult, TraceResult
from splitpoint.bench.typed_json import from_dict, jsonable
from splitpoint.files import json_format_is

FORMAT = "splitpoint-bench"
SCHEMA_VERSION = 2
RESULT = "a splitpoint bench result (JSON)"
#: an earlier result, which `--json` may replace (and nothing else: splitpoint/files.py)
is_result = json_format_is(FORMAT)


@dataclass
class Target:
    name: str = ""
    target: str = ""
    measured: str = ""
    status: str = "N/A"   # PASS, MISS or N/A (the run could not test it)
    shortfall: str = ""
    detail: str = ""


@dataclass
class FixedRun:
    """One split run fixed at one condition (or not run: `skipped` and its lower bound)."""

    split: int = 0
    frames: int = 0
    median_ms: float | None = None
    p95_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    fallbacks: int = 0
    failed: int = 0
    stages_median_ms: dict[str, float | None] = field(default_factory=dict)
    energy_median_mj: float | None = None
    error: str | None = None
    skipped: str | None = None
    lower_bound_ms: float | None = None

    def fell_back(self) -> bool:
        """Half or more of its counted frames fell back to the edge: its median is the edge's,
        not this split's (at an RTT no frame could cross, k=0 measured 0.16 ms as "all-cloud")."""
        return self.fallbacks > 0 and 2 * self.fallbacks >= self.frames


@dataclass
class AdaptiveRun:
    objective: str = "min-latency"
    frames: int = 0
    splits: list[int] = field(default_factory=list)
    settled_split: int | None = None
    switches: int = 0
    fallbacks: int = 0
    own_median_ms: float | None = None
    own_p95_ms: float | None = None
    own_mean_ms: float | None = None
    own_min_ms: float | None = None
    own_max_ms: float | None = None
    error: str | None = None


@dataclass
class EnergyResult:
    adaptive: AdaptiveRun = field(default_factory=AdaptiveRun)
    oracle_split: int | None = None
    oracle_mj: float | None = None
    chosen_split: int | None = None
    chosen_mj: float | None = None
    all_edge_mj: float | None = None
    all_cloud_mj: float | None = None
    chosen_over_oracle: float | None = None
    saving_vs_all_edge: float | None = None
    saving_vs_all_cloud: float | None = None


@dataclass
class ConditionResult:
    bandwidth_mbps: float = 0.0
    rtt_ms: float = 0.0
    fixed: dict[str, FixedRun] = field(default_factory=dict)   # by split, as text (JSON keys)
    oracle_split: int | None = None
    oracle_caveat: str | None = None
    adaptive: AdaptiveRun = field(default_factory=AdaptiveRun)
    chosen_split: int | None = None
    chosen_note: str | None = None
    oracle_median_ms: float | None = None
    oracle_p95_ms: float | None = None
    chosen_median_ms: float | None = None
    chosen_p95_ms: float | None = None
    all_edge_median_ms: float | None = None
    all_cloud_median_ms: float | None = None
    chosen_over_oracle: float | None = None
    speedup_vs_all_edge: float | None = None
    speedup_vs_all_cloud: float | None = None
    oracle_speedup_vs_all_edge: float | None = None
    oracle_speedup_vs_all_cloud: float | None = None
    better_of_edge_cloud_ms: float | None = None
    chosen_over_better_of_edge_cloud: float | None = None
    energy: EnergyResult | None = None
    peers: list[PeerPickResult] = field(default_factory=list)   # picked among the fixed runs: no extra runs

    def median(self, k: int | None) -> float | None:
        run = self.fixed.get(str(k)) if k is not None else None
        return run.median_ms if run is not None else None


@dataclass
class StepOracle:
    split: int | None = None
    median_ms: dict[str, float | None] = field(default_factory=dict)


@dataclass
class StepFrame:
    frame_id: int = 0
    split: int = 0
    where: str = ""
    t_s: float | None = None
    end_to_end_ms: float = 0.0


@dataclass
class StepChange:
    to_mbps: float = 0.0
    t_s: float | None = None
    frames_after: int = 0
    best_split: int | None = None
    final_split: int | None = None
    settled_on_best: bool = False
    frames_to_settle: int | None = None
    seconds_to_settle: float | None = None
    switches: int = 0
    final_over_best_latency: float | None = None
    note: str | None = None


@dataclass
class StepResult:
    rates_mbps: list[float] = field(default_factory=list)
    rtt_ms: float = 0.0
    fps: float = 0.0
    phase_frames: int = 0
    deadline_ms: float = 0.0
    oracles: dict[str, StepOracle] = field(default_factory=dict)   # by rate in Mbps, as text
    changes: list[StepChange] = field(default_factory=list)
    frames: list[StepFrame] = field(default_factory=list)
    error: str | None = None


@dataclass
class ThroughputRun:
    split: int = 0
    wire_bytes: int = 0
    stage_ms: dict[str, float | None] = field(default_factory=dict)
    limiting_stage: str = ""
    bound_fps: float | None = None
    frames_counted: int = 0
    fallbacks: int = 0
    measured_stage_median_ms: dict[str, float | None] = field(default_factory=dict)
    fps: float | None = None
    fps_over_bound: float | None = None
    goodput_mbps: float | None = None
    goodput_over_rate: float | None = None
    error: str | None = None


@dataclass
class ThroughputResult:
    bandwidth_mbps: float = 0.0
    rtt_added_ms: float = 0.0
    window: int = 0
    frames: int = 0
    warmup: int = 0
    runs: list[ThroughputRun] = field(default_factory=list)


@dataclass
class Goodput:
    split: int = 0
    wire_bytes: int = 0
    shaped_mbps: float = 0.0
    goodput_mbps: float | None = None
    goodput_over_rate: float | None = None
    what: str = ""


@dataclass
class PathTimes:
    """One path's per-frame times in the overhead measurement."""

    frames: int = 0
    median_ms: float = 0.0
    p90_ms: float = 0.0
    mean_ms: float = 0.0
    min_ms: float = 0.0


@dataclass
class Residual:
    median: float | None = None
    runs: int = 0
    what: str = ""


@dataclass
class OverheadResult:
    """What splitpoint adds per frame over a raw gRPC stream (splitpoint.bench.overhead)."""

    tensor_shape: list[int] = field(default_factory=list)
    tensor_bytes: int = 0
    answer_bytes: int = 0
    splitpoint: PathTimes = field(default_factory=PathTimes)
    raw_grpc: PathTimes = field(default_factory=PathTimes)
    added_ms: float = 0.0
    pieces: dict[str, float] = field(default_factory=dict)   # each piece alone, median us
    method: str = ""
    end_to_end_residual_ms: Residual | None = None            # the same, read from the conditions' runs


@dataclass
class SplitInfo:
    split: int = 0
    after_layer: str | None = None
    wire_bytes: int = 0
    cut_shape: list[int | None] | None = None


@dataclass
class BundleInfo:
    """The measured bundle, as its manifest describes it."""

    path: str = ""
    model: str = "?"
    digest: str = ""
    num_layers: int = 0
    source: str | None = None
    measured_splits: list[int] = field(default_factory=list)
    splits: list[SplitInfo] = field(default_factory=list)


@dataclass
class BenchResult:
    format: str = FORMAT
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    splitpoint: str = ""
    command: list[str] = field(default_factory=list)
    smoke: bool = False
    complete: bool = False
    errors: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_time_s: float | None = None
    # descriptions of the set-up, as measured (free-form: what the platform offers varies)
    machine: dict[str, Any] = field(default_factory=dict)
    bundle: BundleInfo = field(default_factory=BundleInfo)
    profiles: dict[str, Any] = field(default_factory=dict)
    power: dict[str, Any] | None = None
    link: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    # the stages (None: not run, or dropped from the report)
    conditions: list[ConditionResult] | None = None
    step: StepResult | None = None
    traces: list[TraceResult] | None = None
    throughput: ThroughputResult | None = None
    goodput: Goodput | None = None
    overhead: OverheadResult | None = None
    targets: list[Target] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=jsonable) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BenchResult:
        try:
            data = json.loads(text)
        except RecursionError:  # [[[[...: a traceback
            raise ValueError("not JSON this reader takes: nested too deeply") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} result (format {data.get('format') if isinstance(data, dict) else '?'!r})")
        return from_dict(cls, data)

    @classmethod
    def load(cls, path: str | Path) -> BenchResult:
        """Read a result JSON, gzipped when its name ends in .gz (as docs/bench-data/ keeps them)."""
        path = Path(path)
        if path.suffix == ".gz":
            return cls.from_json(gzip.decompress(path.read_bytes()).decode())
        return cls.from_json(path.read_text())

    def measured(self) -> bool:
        """Whether a stage has put a figure (or a run's error) in: a stage's empty start does not count."""
        return bool(self.conditions or self.step or self.traces or (self.throughput and self.throughput.runs)
                    or self.goodput or self.overhead)

    def drop(self, stage: str) -> None:
        """Leave a stage out of the report (bench_docs' `drop`)."""
        if not hasattr(self, stage) or stage in ("format", "schema_version"):
            raise ValueError(f"no stage {stage!r} in a bench result")
        setattr(self, stage, None)
