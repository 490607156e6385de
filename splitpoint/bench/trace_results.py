"""The trace stage's results as typed records: each replay of a trace slice, its runs, the peers'
picks and the clairvoyant bound (splitpoint/bench/results.py holds the other stages' and the
whole result; the same rules apply: field names are the JSON keys, every field has a default)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TraceRunResult:
    """One run over a trace slice: the adaptive agent (split None) or one fixed split."""

    split: int | None = None
    frames: int = 0
    median_ms: float | None = None
    p95_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    deadline_misses: int | None = None
    counted_frames: int = 0
    fallbacks: int = 0
    first_frame_after_trace_start_s: float | None = None
    duration_s: float | None = None
    trace_synced_to_source_open: bool = False
    # the adaptive run's per-frame path (empty for a fixed split)
    splits: list[int] = field(default_factory=list)
    t_s: list[float | None] = field(default_factory=list)
    end_to_end_ms: list[float] = field(default_factory=list)
    #: a fixed split's latency per counted frame, in frame order (None: no answer; the report
    #: switches the fixed runs by window from these: hindsight.py); empty for the adaptive run
    #: (end_to_end_ms) and in JSON written before 2026-12-06
    counted_ms: list[float | None] = field(default_factory=list)
    switches: int | None = None
    split_counts: dict[str, int] = field(default_factory=dict)
    #: median latency of the last KEEP_UP_FRAMES counted frames over that of the first (None: too few)
    last_over_first_median: float | None = None
    error: str | None = None
    skipped: str | None = None
    reused_from: str | None = None   # a peer rule's row: the fixed run of its split in this replay ("k=89")


@dataclass
class BoundPath:
    """One path the clairvoyant bound could use: split k, its head, bytes on the wire, server time."""

    split: int = 0
    head_ms: float = 0.0
    wire_bytes: int = 0
    server_ms: float = 0.0


@dataclass
class ClairvoyantBound:
    """The best mean latency a scheduler knowing the trace's future could reach (clairvoyant.py)."""

    mean_ms: float | None = None
    p95_ms: float | None = None          # of the mean-optimal schedule (exact only)
    deadline_misses: int | None = None   # of the mean-optimal schedule (exact only)
    frames: int = 0                      # frames counted (after the warm-up)
    kind: str = ""                       # "exact optimum" or "lower bound"
    exact: bool = False
    split_counts: dict[str, int] = field(default_factory=dict)
    max_front: int = 0
    paths: list[BoundPath] = field(default_factory=list)
    adaptive_over_clairvoyant: float | None = None   # the regret
    #: the median of the schedule's last KEEP_UP_FRAMES counted frames over its first's (exact
    #: only): how far the link alone moves the keeps-up target's figure (bench/stats.py)
    last_over_first_median: float | None = None
    #: the smallest excess of a fixed cloud run's measured mean over the model's (clairvoyant.py:
    #: offload_overhead_ms), and the bound with it added to every offload; no target reads them
    offload_overhead_ms: float | None = None
    mean_with_overhead_ms: float | None = None
    error: str | None = None             # not computed, and why


#: runs of a trace labelled with a peer's rule (splitpoint/bench/peers.py picks the split; the trace
#: stage runs it fixed), and how the report names them: after the rule, not the project. The keys
#: are peers.RULE_STARTUP and peers.RULE_DEADLINE (tests/unit/test_peers.py checks they agree).
PEER_RULES = {
    "fixed from start-up bandwidth": "one split from latency predictions at the bandwidth measured at start-up, "
                                     "kept (Neurosurgeon's rule)",
    "deadline at nominal bandwidth": "the lowest-energy split whose profiled latency at a nominal bandwidth "
                                     "meets the deadline (SPLINTER's per-request pick)",
}


@dataclass
class PeerPickResult:
    """The split a peer's rule picks for one trace replay or condition, what it assumed, whose run it is."""

    rule: str = ""
    split: int | None = None
    bandwidth_bps: float | None = None    # what the rule planned with: start-up measurement or nominal rate
    rtt_ms: float | None = None
    predicted_latency_ms: float | None = None
    predicted_energy_mj: float | None = None
    feasible: bool = True                 # False: no split met the deadline at nominal (the fastest taken)
    reason: str = ""
    run: str | None = None                # the fixed run its figures come from ("k=89"), when reused
    median_ms: float | None = None        # conditions: that fixed run's median and p95
    p95_ms: float | None = None
    error: str | None = None              # the rule could not pick, and why


@dataclass
class TraceResult:
    """One replay of a trace slice at one RTT: the adaptive agent, every fixed split, the bound."""

    trace: str = ""
    path: str = ""
    offset_s: float = 0.0        # where in the trace the slice starts (long traces are replayed in slices)
    trace_duration_s: float | None = None
    seconds: float = 0.0
    fps: float = 0.0
    frames: int = 0
    warmup: int = 0
    rtt_ms: float = 0.0
    deadline_ms: float = 0.0
    edge_alone_ms: float | None = None  # head(K), the edge device's profile: over 1000 / fps, it cannot keep up alone
    trace_mean_mbps: float | None = None
    slice_mean_mbps: float | None = None
    slice_rates_mbps: list[float | None] = field(default_factory=list)
    longest_outage_s: float | None = None  # set when the slice is dark for longer than --max-frame-s
    runs: dict[str, TraceRunResult] = field(default_factory=dict)   # "adaptive", "k=3", a PEER_RULES key
    peers: list[PeerPickResult] = field(default_factory=list)
    best_fixed: str | None = None
    best_fixed_mean_ms: float | None = None
    best_fixed_p95_ms: float | None = None
    best_fixed_misses: int | None = None
    adaptive_over_best_fixed: float | None = None
    clairvoyant: ClairvoyantBound | None = None
    error: str | None = None

    @property
    def slice_label(self) -> str:
        return f"{self.offset_s:g}-{self.offset_s + self.seconds:g} s"

    def fixed_runs(self) -> dict[str, TraceRunResult]:
        """The fixed splits' runs that measured a mean ("k=3" -> run): not the adaptive run, not a
        peer's row, not a split skipped or failed."""
        return {lbl: r for lbl, r in self.runs.items() if lbl.startswith("k=") and r.mean_ms is not None}
