"""What a configurable policy optimises: its config (the agent TOML's [policy] table), its
objectives, and `decide`, the one choice among a set of predictions that honours the deadline
and the energy budget when it can. `AdaptivePolicy` (scheduler/policy.py) adds the live link,
hysteresis and per-frame planning; `splitpoint policy explain` uses `decide` directly
(scheduler/planner.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scheduler.cost import Prediction
from splitpoint.config import option
from splitpoint.errors import ConfigError

POLICIES = ("fixed", "min-latency", "min-energy", "weighted")
#: the longest deadline, ms: an hour, as a profile's stage times are bounded (profiles.MAX_STAGE_MS).
#: No frame's split is planned to take longer, so a longer deadline only looked meaningful; up to
#: 24.8 days (every time key's cap) was taken silently.
MAX_DEADLINE_MS = 3_600_000.0
#: the largest energy budget of a frame, mJ: 1 kWh, the most any edge board draws (power_models.MAX_WATTS,
#: 1 kW) for that hour. No board spends as much on a frame, so a larger budget only looked meaningful;
#: 1e308 was taken silently.
MAX_ENERGY_BUDGET_MJ = 3_600_000_000.0


@dataclass
class PolicyConfig:
    """The agent TOML's [policy] table (flags: --policy-name, --policy-deadline-ms, ...)."""

    name: str = option("fixed", "fixed, min-latency, min-energy or weighted", choices=POLICIES)
    split: int | None = option(None, "the split of the fixed policy (default: the agent's --split, else K)")
    deadline_ms: float | None = option(None, "latency bound: min-energy picks the least energy among splits under it "
                                             "(above 0, at most 3600000: an hour)")
    energy_budget_mj: float | None = option(None, "edge energy bound per frame: min-latency picks the fastest split under "
                                                  "it (above 0, at most 3600000000: 1 kWh)")
    latency_weight: float = option(1.0, "weighted: cost = latency_weight * ms + energy_weight * mJ")
    energy_weight: float = option(1.0, "weighted: see latency_weight")
    margin: float = option(0.1, "switch only for a predicted gain above this fraction (hysteresis)")
    min_dwell_frames: int = option(3, "frames to stay on a split before switching again")
    race: bool = option(True, "min-latency without energy_budget_mj: run a frame here and send it as k = 0 at once "
                              "when that finishes it sooner on a risky or untried link (docs/scheduler.md)")
    stat: str = option("median", "profile statistic to plan with", choices=("median", "p95"))
    edge_profile: str = option("", "edge profile JSON (splitpoint profile edge)")
    cloud_profile: str = option("", "cloud profile JSON (splitpoint profile cloud)")
    power_table: str = option("", "power table (TOML/JSON) for energy when no meter was profiled")
    radio: str = option("", "radio power model file; default: built-in figures for `link`")
    link: str = option("wifi", "uplink type for the radio power model: wifi, lte, or one the radio file adds")
    battery_file: str = option("", "battery level file (percent); default: /sys/class/power_supply/*/capacity")
    battery_low_pct: float | None = option(None, "below this battery level switch to min-energy (with deadline_ms if set)")
    probe_idle_s: float = option(2.0, "probe the link after this long without offloaded traffic (the longest gap)")
    probe_first_s: float = option(0.5, "the first probe of an idle spell after this long; while frames keep coming "
                                       "(run on the edge) every probe waits this long, else each further probe "
                                       "waits twice as long, up to probe_idle_s")

    def validate(self) -> None:
        if self.deadline_ms is not None and self.deadline_ms <= 0:
            raise ConfigError("policy.deadline_ms", self.deadline_ms, "must be > 0")
        if self.deadline_ms is not None and self.deadline_ms > MAX_DEADLINE_MS:
            raise ConfigError("policy.deadline_ms", self.deadline_ms,
                              f"must be at most {MAX_DEADLINE_MS:.0f} ms (an hour, the longest time a profile plans with)")
        if self.energy_budget_mj is not None and self.energy_budget_mj <= 0:
            raise ConfigError("policy.energy_budget_mj", self.energy_budget_mj, "must be > 0")
        if self.energy_budget_mj is not None and self.energy_budget_mj > MAX_ENERGY_BUDGET_MJ:
            raise ConfigError("policy.energy_budget_mj", self.energy_budget_mj,
                              f"must be at most {MAX_ENERGY_BUDGET_MJ:.0f} mJ (1 kWh: 1 kW, more than any edge "
                              f"board draws, for an hour, the longest a frame is planned to take)")
        for key in ("latency_weight", "energy_weight", "margin"):
            if getattr(self, key) < 0:
                raise ConfigError(f"policy.{key}", getattr(self, key), "must be >= 0")
        for key in ("probe_idle_s", "probe_first_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"policy.{key}", getattr(self, key), "must be > 0")
        if self.split is not None and self.split < 0:  # `--print-config` passed it; the agent refused it later
            raise ConfigError("policy.split", self.split, "must be a split number >= 0")
        if self.min_dwell_frames < 0:
            raise ConfigError("policy.min_dwell_frames", self.min_dwell_frames, "must be >= 0")
        if self.battery_low_pct is not None and not 0 <= self.battery_low_pct <= 100:
            raise ConfigError("policy.battery_low_pct", self.battery_low_pct, "must be between 0 and 100")
        if self.split is not None and self.name != "fixed":  # it was ignored without a word
            raise ConfigError("policy.split", self.split, f"is the fixed policy's split, and policy.name is "
                                                          f"{self.name}: set policy.name = \"fixed\", or leave policy.split out")
        if self.name == "weighted" and self.latency_weight == 0 and self.energy_weight == 0:
            raise ConfigError("policy.latency_weight", 0, "with policy.energy_weight = 0 too, every split costs the "
                                                          "same (the choice was k = 0): give one of them > 0")
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


def active_objective(cfg: PolicyConfig, battery_pct: float | None) -> str:
    """The objective a policy decides with: min-energy while the battery is below
    battery_low_pct (a level that cannot be read switches nothing), else its own."""
    if cfg.battery_low_pct is not None and battery_pct is not None and battery_pct < cfg.battery_low_pct:
        return "min-energy"
    return cfg.name


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


def decide(preds: list[Prediction], name: str, cfg: PolicyConfig,
           tie: Callable[[Prediction], tuple] = lambda p: (p.split,)) -> Decision:
    """The split the policy wants for these predictions, honouring deadline and budget when it can.
    Equal objectives go to the least `tie` (default: the lower split)."""
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
        best = min(feasible, key=lambda p: (obj(p), *tie(p)))
        why = f"{name}: lowest {'latency' if name == 'min-latency' else 'energy' if name == 'min-energy' else 'weighted cost'}"
        if notes:
            why += f" among {len(feasible)} of {len(preds)} splits with {' and '.join(notes)}"
        return Decision(best.split, name, obj(best), True, why)
    # Nothing meets the constraints: get as close as possible to the one that binds.
    if cfg.deadline_ms is not None:
        best = min(preds, key=lambda p: (p.latency_ms, *tie(p)))
        why = (f"no split meets {' and '.join(notes)}; taking the fastest (k={best.split}, "
               f"{best.latency_ms:.1f} ms) to miss the deadline by the least")
    else:
        best = min(preds, key=lambda p: (_energy(p), *tie(p)))
        why = (f"no split meets {' and '.join(notes)}; taking the least energy (k={best.split}, "
               f"{_energy(best):.1f} mJ) to overrun the budget by the least")
    return Decision(best.split, name, obj(best), False, why)
