"""Peers' split rules, run beside the adaptive agent as fixed splits (issue 11, item 4).

Two published ways of picking a split that do not adapt to the link while it runs. Both are
pure functions over the same predictions the agent plans with (`scheduler.cost.CostModel.predict`
with a `scheduler.link.LinkState`): no second formula, so a rule and the agent can disagree only
because of what they assume about the link, never because of how they compute a latency.

* **fixed from start-up bandwidth** (the rule of Neurosurgeon, Kang et al., ASPLOS 2017): the
  bandwidth is measured once when the run starts, every split's latency is predicted at it, the
  fastest split is chosen and kept for the whole run. In the bench the start-up measurement is
  the link's delivery over the first `STARTUP_WINDOW_S` of the run (`startup_bandwidth_bps`): an
  exact measurement, better than any probe, so the rule loses only by keeping its choice.
* **deadline at nominal bandwidth** (SPLINTER's per-request pick): no link measurement at all;
  among the splits whose profiled latency at a nominal bandwidth meets the deadline, the one
  with the lowest edge energy. Without a measurement every request sees the same inputs, so the
  per-request pick is one split for the whole run. When no split meets the deadline at the
  nominal bandwidth the fastest one there is taken (`feasible=False` says so).

Tables name the rules (RULE_STARTUP, RULE_DEADLINE), not the projects; docs/benchmarks.md cites
them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.cost import CostModel, Prediction
from scheduler.link import LinkState
from splitpoint.errors import ConfigError
from splitpoint.traces import BandwidthTrace

RULE_STARTUP = "fixed from start-up bandwidth"
RULE_DEADLINE = "deadline at nominal bandwidth"

#: the start-up measurement: what the link delivers over this first stretch of the run
STARTUP_WINDOW_S = 1.0


@dataclass(frozen=True)
class PeerPick:
    """The split a rule picks, and what the rule believed when it picked it."""

    rule: str
    split: int
    link: LinkState  # the link the rule planned with
    predicted_latency_ms: float
    predicted_energy_mj: float | None
    feasible: bool  # False: the deadline rule found no split within the deadline (fastest taken)
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule, "split": self.split, "bandwidth_bps": self.link.bandwidth_bps,
            "rtt_ms": self.link.rtt_ms, "predicted_latency_ms": self.predicted_latency_ms,
            "predicted_energy_mj": self.predicted_energy_mj, "feasible": self.feasible, "reason": self.reason,
        }


def startup_bandwidth_bps(trace: BandwidthTrace, start_s: float = 0.0, window_s: float = STARTUP_WINDOW_S) -> float:
    """The bandwidth measured once at start-up: bits the trace delivers in [start, start + window) / window.

    `start_s` is where the run's slice starts in the trace (0 when the trace restarts at the first
    frame, as the bench's runs do). A fixed-rate condition is a constant trace: this is its rate.
    """
    if not (math.isfinite(window_s) and window_s > 0):
        raise ConfigError("startup window", window_s, "must be a finite number of seconds > 0")
    if not (math.isfinite(start_s) and start_s >= 0):
        raise ConfigError("startup start", start_s, "must be a finite number of seconds >= 0")
    return trace.bits_between(start_s, start_s + window_s) / window_s


def _candidates(cost: CostModel, splits: list[int] | None) -> list[int]:
    usable = cost.splits
    if splits is None:
        return usable
    missing = sorted(set(splits) - set(usable))
    if missing:
        raise ConfigError("splits", missing, f"have no edge and cloud profile; profiled: {usable}")
    return sorted(set(splits))


def _link(bandwidth_bps: float, rtt_ms: float, what: str) -> LinkState:
    if not (math.isfinite(bandwidth_bps) and bandwidth_bps >= 0):
        raise ConfigError(what, bandwidth_bps, "must be a finite number of bit/s >= 0")
    if not (math.isfinite(rtt_ms) and rtt_ms >= 0):
        raise ConfigError("rtt_ms", rtt_ms, "must be a finite number of ms >= 0")
    return LinkState(bandwidth_bps=float(bandwidth_bps), rtt_ms=float(rtt_ms))


def _fastest(preds: list[Prediction]) -> Prediction:
    return min(preds, key=lambda p: (p.latency_ms, p.split))


def fixed_from_startup(cost: CostModel, startup_bps: float, rtt_ms: float,
                       splits: list[int] | None = None) -> PeerPick:
    """Neurosurgeon's rule: the split with the lowest predicted latency at the start-up bandwidth.

    `splits` restricts the choice to the splits the bench measures (default: every profiled one);
    ties go to the lower split number, as the agent's planner breaks them.
    """
    link = _link(startup_bps, rtt_ms, "startup bandwidth")
    preds = cost.predict_all(_candidates(cost, splits), link)
    if not preds:
        raise ConfigError("splits", splits, "no candidate split to choose from")
    best = _fastest(preds)
    reason = (f"{RULE_STARTUP}: lowest predicted latency at {link.bandwidth_bps / 1e6:.3g} Mbps measured "
              f"at start-up, RTT {link.rtt_ms:g} ms: k={best.split}, {best.latency_ms:.1f} ms; kept for the run")
    return PeerPick(RULE_STARTUP, best.split, link, best.latency_ms, best.energy_mj, True, reason)


def deadline_at_nominal(cost: CostModel, nominal_bps: float, rtt_ms: float, deadline_ms: float,
                        splits: list[int] | None = None) -> PeerPick:
    """SPLINTER's per-request pick without link measurement: the split with the lowest edge
    energy among those whose predicted latency at the nominal bandwidth meets the deadline;
    the fastest at the nominal bandwidth when none does (then `feasible` is False).

    Needs energy figures (a power table or a metered edge profile in `cost.energy`): without
    them the rule is undefined, and that is an error rather than a silent latency pick.
    """
    if not (math.isfinite(deadline_ms) and deadline_ms > 0):
        raise ConfigError("deadline_ms", deadline_ms, "must be a finite number of ms > 0")
    if cost.energy is None:
        raise ConfigError("power table", None,
                          f"the rule '{RULE_DEADLINE}' ranks splits by edge energy: give a power table "
                          "(e.g. the shipped reference table) or a metered edge profile")
    link = _link(nominal_bps, rtt_ms, "nominal bandwidth")
    preds = cost.predict_all(_candidates(cost, splits), link)
    if not preds:
        raise ConfigError("splits", splits, "no candidate split to choose from")
    at = f"{link.bandwidth_bps / 1e6:.3g} Mbps nominal, RTT {link.rtt_ms:g} ms"
    meets = [p for p in preds if p.latency_ms <= deadline_ms]
    if meets:
        best = min(meets, key=lambda p: (p.energy_mj if p.energy_mj is not None else math.inf, p.latency_ms, p.split))
        reason = (f"{RULE_DEADLINE}: lowest edge energy among {len(meets)} of {len(preds)} splits predicted "
                  f"within {deadline_ms:g} ms at {at}: k={best.split}, {best.latency_ms:.1f} ms, "
                  f"{best.energy_mj:.1f} mJ")
        return PeerPick(RULE_DEADLINE, best.split, link, best.latency_ms, best.energy_mj, True, reason)
    best = _fastest(preds)
    reason = (f"{RULE_DEADLINE}: no split is predicted within {deadline_ms:g} ms at {at}; taking the "
              f"fastest there (k={best.split}, {best.latency_ms:.1f} ms)")
    return PeerPick(RULE_DEADLINE, best.split, link, best.latency_ms, best.energy_mj, False, reason)
