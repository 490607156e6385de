"""Split policies: given what the agent knows now, which split should the next frame use?

The agent asks `choose()` once per frame and reports every finished frame to
`observe()`. A policy only picks among `candidates` (splits whose heads are
loaded and warm on the agent).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.cost import CostModel, Prediction
from scheduler.link import LinkEstimator, LinkState
from splitpoint.config import option
from splitpoint.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class FrameOutcome:
    """What the agent learned from one finished frame."""

    frame_id: int
    split: int
    where: str  # "cloud" or "local"
    ok: bool
    head_ms: float = 0.0
    wire_bytes: int = 0
    rpc_ms: float | None = None  # send -> response, as the agent saw it
    server_queue_ms: float | None = None
    server_compute_ms: float | None = None
    server_total_ms: float | None = None
    server_queued: int | None = None
    extra: dict = field(default_factory=dict)


class SplitPolicy(Protocol):
    name: str

    def choose(self, candidates: list[int]) -> int: ...

    def observe(self, outcome: FrameOutcome) -> None: ...


class FixedPolicy:
    """Always the same split."""

    name = "fixed"

    def __init__(self, split: int):
        self.split = split

    def choose(self, candidates: list[int]) -> int:
        return self.split

    def observe(self, outcome: FrameOutcome) -> None:
        pass

    def describe(self) -> str:
        return f"fixed split {self.split}"


# --------------------------------------------------------------------------- configurable policies

POLICIES = ("fixed", "min-latency", "min-energy", "weighted")


@dataclass
class PolicyConfig:
    """The agent TOML's [policy] table (flags: --policy-name, --policy-deadline-ms, ...)."""

    name: str = option("fixed", "fixed, min-latency, min-energy or weighted", choices=POLICIES)
    split: int | None = option(None, "the split of the fixed policy (default: the agent's --split, else K)")
    deadline_ms: float | None = option(None, "latency bound: min-energy picks the least energy among splits under it")
    energy_budget_mj: float | None = option(None, "edge energy bound per frame: min-latency picks the fastest split under it")
    latency_weight: float = option(1.0, "weighted: cost = latency_weight * ms + energy_weight * mJ")
    energy_weight: float = option(1.0, "weighted: see latency_weight")
    margin: float = option(0.1, "switch only for a predicted gain above this fraction (hysteresis)")
    min_dwell_frames: int = option(3, "frames to stay on a split before switching again")
    stat: str = option("median", "profile statistic to plan with", choices=("median", "p95"))
    edge_profile: str = option("", "edge profile JSON (splitpoint profile edge)")
    cloud_profile: str = option("", "cloud profile JSON (splitpoint profile cloud)")
    power_table: str = option("", "power table (TOML/JSON) for energy when no meter was profiled")
    radio: str = option("", "radio power model file; default: built-in figures for `link`")
    link: str = option("wifi", "uplink type for the radio power model", choices=("wifi", "lte"))
    battery_file: str = option("", "battery level file (percent); default: /sys/class/power_supply/*/capacity")
    battery_low_pct: float | None = option(None, "below this battery level switch to min-energy (with deadline_ms if set)")
    probe_idle_s: float = option(2.0, "probe the link after this long without offloaded traffic")

    def validate(self) -> None:
        if self.deadline_ms is not None and self.deadline_ms <= 0:
            raise ConfigError("policy.deadline_ms", self.deadline_ms, "must be > 0")
        if self.energy_budget_mj is not None and self.energy_budget_mj <= 0:
            raise ConfigError("policy.energy_budget_mj", self.energy_budget_mj, "must be > 0")
        for key in ("latency_weight", "energy_weight", "margin"):
            if getattr(self, key) < 0:
                raise ConfigError(f"policy.{key}", getattr(self, key), "must be >= 0")
        if self.min_dwell_frames < 0:
            raise ConfigError("policy.min_dwell_frames", self.min_dwell_frames, "must be >= 0")
        if self.battery_low_pct is not None and not 0 <= self.battery_low_pct <= 100:
            raise ConfigError("policy.battery_low_pct", self.battery_low_pct, "must be between 0 and 100")
        if self.name != "fixed" and not (self.edge_profile and self.cloud_profile):
            raise ConfigError("policy.name", self.name, "needs policy.edge_profile and policy.cloud_profile (measure them with `splitpoint profile`)")

    @property
    def needs_energy(self) -> bool:
        return self.name in ("min-energy", "weighted") or self.energy_budget_mj is not None or self.battery_low_pct is not None


@dataclass(frozen=True)
class Decision:
    split: int
    objective: str
    value: float
    feasible: bool  # False: no split met the constraint; `reason` says what was done instead
    reason: str


def objective_of(name: str, cfg: PolicyConfig) -> Callable[[Prediction], float]:
    if name == "min-latency":
        return lambda p: p.latency_ms
    if name == "min-energy":
        return lambda p: _energy(p)
    if name == "weighted":
        return lambda p: cfg.latency_weight * p.latency_ms + cfg.energy_weight * _energy(p)
    raise ConfigError("policy.name", name, f"has no objective; one of {', '.join(POLICIES[1:])}")


def _energy(p: Prediction) -> float:
    if p.energy_mj is None:
        raise ConfigError("policy.power_table", "", "energy objectives need power figures: a metered edge profile or policy.power_table")
    return p.energy_mj


def decide(preds: list[Prediction], name: str, cfg: PolicyConfig) -> Decision:
    """The split the policy wants for these predictions, honouring deadline and budget when it can."""
    if not preds:
        raise ConfigError("policy", name, "no candidate split has both an edge and a cloud profile")
    obj = objective_of(name, cfg)
    feasible = list(preds)
    notes = []
    if cfg.deadline_ms is not None:
        feasible = [p for p in feasible if p.latency_ms <= cfg.deadline_ms]
        notes.append(f"latency <= {cfg.deadline_ms:g} ms")
    if cfg.energy_budget_mj is not None:
        feasible = [p for p in feasible if _energy(p) <= cfg.energy_budget_mj]
        notes.append(f"energy <= {cfg.energy_budget_mj:g} mJ")
    if feasible:
        best = min(feasible, key=lambda p: (obj(p), p.split))
        why = f"{name}: lowest {'latency' if name == 'min-latency' else 'energy' if name == 'min-energy' else 'weighted cost'}"
        if notes:
            why += f" among {len(feasible)} of {len(preds)} splits with {' and '.join(notes)}"
        return Decision(best.split, name, obj(best), True, why)
    # Nothing meets the constraints: get as close as possible to the one that binds.
    if cfg.deadline_ms is not None:
        best = min(preds, key=lambda p: (p.latency_ms, p.split))
        why = (f"no split meets {' and '.join(notes)}; taking the fastest (k={best.split}, "
               f"{best.latency_ms:.1f} ms) to miss the deadline by the least")
    else:
        best = min(preds, key=lambda p: (_energy(p), p.split))
        why = (f"no split meets {' and '.join(notes)}; taking the least energy (k={best.split}, "
               f"{_energy(best):.1f} mJ) to overrun the budget by the least")
    return Decision(best.split, name, obj(best), False, why)


class AdaptivePolicy:
    """Chooses the split from live link estimates, with hysteresis and a minimum dwell."""

    def __init__(self, cfg: PolicyConfig, cost: CostModel, link: LinkEstimator,
                 battery: Callable[[], float | None] | None = None):
        self.cfg = cfg
        self.cost = cost
        self.link = link
        self.battery = battery
        self.name = cfg.name
        self.current: int | None = None
        self.dwell = 0
        self.switches = 0
        self.last_decision: Decision | None = None
        #: the predictions and objective of the last choose(): what a frame's hedge time is made of
        self._last_preds: dict[int, Prediction] = {}
        self._last_objective = cfg.name
        self._lock = threading.Lock()

    def _active_objective(self) -> str:
        if self.cfg.battery_low_pct is not None and self.battery is not None:
            level = self.battery()
            if level is not None and level < self.cfg.battery_low_pct:
                return "min-energy"
        return self.cfg.name

    def choose(self, candidates: list[int]) -> int:
        with self._lock:
            state = self.link.estimate()
            preds = self.cost.predict_all(candidates, state)
            name = self._active_objective()
            decision = decide(preds, name, self.cfg)
            self.last_decision = decision
            self._last_preds = {p.split: p for p in preds}
            self._last_objective = name
            self.dwell += 1
            if self.current is None or self.current not in candidates:
                self._switch(decision, state, None)
                return decision.split
            if decision.split == self.current:
                return self.current
            by_split = {p.split: p for p in preds}
            obj = objective_of(name, self.cfg)
            now = obj(by_split[self.current]) if self.current in by_split else float("inf")
            gain = (now - decision.value) / now if now > 0 else 0.0
            current_ok = self._meets_constraints(by_split.get(self.current))
            if self.dwell < self.cfg.min_dwell_frames and current_ok:
                return self.current
            if gain <= self.cfg.margin and current_ok:
                return self.current
            self._switch(decision, state, gain)
            return decision.split

    def hedge_prediction(self, k: int) -> tuple[float, bool, float] | None:
        """What the last choose() expected of split `k`: (latency ms, False, server ms), or under
        min-energy with a deadline (deadline_ms, True, server ms) - the split was picked to meet
        it, so the deadline is when to stop waiting. Server ms = queue + tail (what is not the
        link). None when it made no finite prediction for `k`."""
        with self._lock:
            p = self._last_preds.get(k)
            server = 0.0 if p is None else p.queue_ms + p.tail_ms
            if self._last_objective == "min-energy" and self.cfg.deadline_ms is not None:
                return float(self.cfg.deadline_ms), True, server
            if p is None or not math.isfinite(p.latency_ms):
                return None
            return p.latency_ms, False, server

    def _meets_constraints(self, p: Prediction | None) -> bool:
        if p is None:
            return False
        if self.cfg.deadline_ms is not None and p.latency_ms > self.cfg.deadline_ms:
            return False
        if self.cfg.energy_budget_mj is not None and p.energy_mj is not None and p.energy_mj > self.cfg.energy_budget_mj:
            return False
        return True

    def _switch(self, decision: Decision, state: LinkState, gain: float | None) -> None:
        previous = self.current
        self.current = decision.split
        self.dwell = 0
        if previous is not None:
            self.switches += 1
        log.info(
            "split %s -> %d (%s; predicted gain %s) with link %s",
            previous, decision.split, decision.reason, "n/a" if gain is None else f"{gain:.0%}", state,
        )

    def observe(self, outcome: FrameOutcome) -> None:
        if outcome.where == "cloud" and outcome.rpc_ms is not None:
            self.link.observe_transfer(outcome.wire_bytes, outcome.rpc_ms, outcome.server_total_ms or 0.0,
                                       outcome.server_queue_ms)

    def describe(self) -> str:
        return f"{self.name} (margin {self.cfg.margin:.0%}, dwell {self.cfg.min_dwell_frames} frames)"
