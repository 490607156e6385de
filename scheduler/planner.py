"""Building a policy from its config: profiles, power figures, link estimator; and `explain`."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict

from scheduler.cost import CostModel, EnergyModel, Prediction
from scheduler.link import LinkEstimator, LinkState
from scheduler.objectives import Decision, PolicyConfig, active_objective, decide
from scheduler.policy import AdaptivePolicy
from scheduler.policy_base import FixedPolicy, SplitPolicy
from scheduler.profiles import Profile, load_profile
from splitpoint.bundle import split_ranges
from splitpoint.errors import ConfigError

log = logging.getLogger(__name__)

_BW_UNITS = {"bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}
#: the slowest uplink a plan is made for: below it a bare number is most likely Mbps without its
#: unit (`--bandwidth 5` planned for 5 bit/s), and a plan is a page of 300-digit milliseconds
MIN_BANDWIDTH_BPS = 1e3
#: the fastest: above it a rate is a typo (`1e308`, bit/s, was planned with, and energies were inf)
MAX_BANDWIDTH_BPS = 1e12
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_bandwidth(text: str, key: str = "--bandwidth") -> float:
    """'5Mbps', '500kbps', '2.5 mbps', '1e6' (bit/s), '5MBps' or '5MB/s' (bytes: 40 Mbit/s) -> bit/s.
    Case does not matter but for the B of bytes: '5MBps' was read as 5 Mbit/s, 8 times too slow."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zA-Z/]*)\s*", text)
    written = m.group(2).replace("/s", "ps") if m else ""
    in_bytes = written.endswith("Bps")
    unit = (written[:-3] + "bps" if in_bytes else written).lower() or "bps"
    if not m or unit not in _BW_UNITS:
        raise ConfigError(key, text, "expected a rate like 5Mbps, 500kbps or 2e6 (bit/s), or 1MBps (bytes)")
    value = float(m.group(1)) * _BW_UNITS[unit] * (8 if in_bytes else 1)
    if not value <= MAX_BANDWIDTH_BPS:  # 1e400Mbps: inf, which `policy explain --json` wrote as Infinity
        raise ConfigError(key, text, f"is too large to be a rate: above {MAX_BANDWIDTH_BPS:g} bit/s (1Tbps), "
                                     "faster than any uplink planned for")
    if value < MIN_BANDWIDTH_BPS:
        unitless = "; a number alone is bit/s: give its unit, e.g. 5Mbps" if not m.group(2) else ""
        raise ConfigError(key, text, f"is below {MIN_BANDWIDTH_BPS:g} bit/s (1kbps), slower than any uplink "
                                     f"planned for{unitless}")
    return value


def parse_duration_ms(text: str, key: str = "--rtt", round_trip: bool = True) -> float:
    """'40ms', '0.04s', '40' (ms) -> ms. A round trip given as a number alone under 1 (ms) is
    refused: `--rtt 0.04` meant seconds and was planned as 0.04 ms (a queue wait may be that short)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*", text)
    if not m:
        raise ConfigError(key, text, "expected a duration like 40ms or 0.04s")
    value = float(m.group(1)) * _TIME_UNITS[m.group(2) or "ms"]
    if not math.isfinite(value):  # 400 digits read as inf
        raise ConfigError(key, text, "is too large to be a duration")
    if round_trip and m.group(2) is None and 0 < value < 1:
        raise ConfigError(key, text, "a number alone is milliseconds, and under 1 ms is no link's round trip: "
                                     "give its unit, e.g. 40ms or 0.04s")
    return value


def energy_model(cfg: PolicyConfig, edge: Profile) -> EnergyModel | None:
    """Watts from a power table when given, else from the edge profile's meter; None if neither."""
    from scheduler.power import PowerTable, RadioModel

    radio = RadioModel.load(cfg.radio, key="policy.radio") if cfg.radio else RadioModel()
    if cfg.link not in radio.links:  # checked now: tx_watts would raise on every frame sent
        raise ConfigError("policy.link", cfg.link, f"unknown link type; known: {', '.join(sorted(radio.links))}"
                                                   + ("" if cfg.radio else " (a policy.radio file may add one)"))

    def tx(bps: float) -> float:
        return radio.tx_watts(bps, link=cfg.link)

    if cfg.power_table:
        table = PowerTable.load(cfg.power_table, key="policy.power_table")
        return EnergyModel(table.head_power, table.idle_w, tx, f"power table {cfg.power_table}")
    metered = {k: s.power_w for k, s in edge.splits.items() if s.power_w is not None}
    if metered and edge.idle_power_w is not None:
        def head_power(k: int) -> float:
            if k not in metered:
                raise ConfigError("policy.edge_profile", cfg.edge_profile, f"split {k} has no metered power")
            return float(metered[k])

        return EnergyModel(head_power, float(edge.idle_power_w), tx, f"edge profile meter ({edge.power_source})")
    return None


def build_cost_model(cfg: PolicyConfig, bundle_digest: str, candidates: list[int] | None = None,
                     num_layers: int | None = None) -> CostModel:
    """The cost model of `cfg`'s profiles and power figures; ConfigError now, not on every frame,
    when the power figures lack a split among `candidates` (default: every split both profiles cover),
    or the edge profile lacks the bundle's K (`num_layers`) or holds a split beyond it: the model
    takes its highest split for K."""
    # PolicyConfig asks for both unless name = "fixed"; `policy explain --name fixed` still
    # predicts every split, and Path("") would be read as the directory "."
    for side, path in (("edge", cfg.edge_profile), ("cloud", cfg.cloud_profile)):
        if not path:
            raise ConfigError(f"policy.{side}_profile", path,
                              f"is required to predict latency (measure it with `splitpoint profile {side}`)")
    edge = load_profile(cfg.edge_profile, "edge", bundle_digest, key="policy.edge_profile", num_layers=num_layers)
    if num_layers is not None and num_layers not in edge.splits:
        raise ConfigError("policy.edge_profile", cfg.edge_profile,
                          f"has no figure for split {num_layers} (K, all on the edge), which `splitpoint profile edge` "
                          "always measures: profile again")
    cloud = load_profile(cfg.cloud_profile, "cloud", bundle_digest, key="policy.cloud_profile", num_layers=num_layers)
    energy = energy_model(cfg, edge)
    if energy is None and cfg.needs_energy:
        raise ConfigError(
            "policy.power_table", cfg.power_table,
            f"policy {cfg.name!r} needs power figures: the edge profile has no meter readings "
            "(no power meter was found when profiling); give a power table",
        )
    cost = CostModel(edge, cloud, energy, stat="median_ms" if cfg.stat == "median" else "p95_ms")
    if energy is not None:
        for k in cost.splits if candidates is None else sorted(set(candidates) & set(cost.splits)):
            energy.head_power(k)  # raises, naming the split, when it has no figure
    return cost


def build_policy(cfg: PolicyConfig, bundle_digest: str, num_layers: int, fixed_split: int | None,
                 link: LinkEstimator | None = None, candidates: list[int] | None = None) -> SplitPolicy:
    """The policy the agent runs; `fixed_split` is the agent's --split (a fixed policy's default),
    `candidates` the splits it loaded (default: every split of the profiles)."""
    if cfg.name == "fixed":
        unused = [key for key in ("deadline_ms", "energy_budget_mj", "battery_low_pct") if getattr(cfg, key) is not None]
        if unused:  # e.g. a low battery that was meant to switch to min-energy: a fixed policy never does
            log.warning("policy.%s ignored: the fixed policy never switches splits; set policy.name to min-latency, "
                        "min-energy or weighted (with profiles) to use %s", ", policy.".join(unused),
                        "it" if len(unused) == 1 else "them")
        return FixedPolicy(cfg.split if cfg.split is not None else fixed_split if fixed_split is not None else num_layers)
    from scheduler.power import BatteryGauge

    cost = build_cost_model(cfg, bundle_digest, candidates, num_layers)
    battery = BatteryGauge(cfg.battery_file or None) if cfg.battery_low_pct is not None else None
    return AdaptivePolicy(cfg, cost, link or LinkEstimator(), battery)


def explain(cost: CostModel, cfg: PolicyConfig, link: LinkState, candidates: list[int] | None = None,
            battery_pct: float | None = None) -> tuple[list[Prediction], Decision]:
    """Every candidate's prediction and the policy's choice; the fixed policy's is its split
    (cfg.split, else K: all on the edge), shown beside the others' predictions. `battery_pct`:
    the level now, which below battery_low_pct makes an adaptive policy decide by min-energy."""
    preds = cost.predict_all(candidates or cost.splits, link)
    if cfg.name != "fixed":
        return preds, decide(preds, active_objective(cfg, battery_pct), cfg)
    k = cost.num_layers if cfg.split is None else cfg.split
    chosen = next((p for p in preds if p.split == k), None)
    if chosen is None:
        raise ConfigError("split", k, f"not a split of this bundle; its splits: {split_ranges(p.split for p in preds)}")
    return preds, Decision(k, "fixed", chosen.latency_ms, True,
                           "fixed split" + (" K, all on the edge" if cfg.split is None else ""))


def explain_json(preds: list[Prediction], decision: Decision, link: LinkState, cfg: PolicyConfig,
                 battery_pct: float | None = None) -> str:
    return json.dumps(
        {
            "policy": cfg.name,
            "objective": active_objective(cfg, battery_pct) if cfg.name != "fixed" else "fixed",
            "battery_pct": battery_pct,
            "battery_low_pct": cfg.battery_low_pct,
            "link": asdict(link),
            "deadline_ms": cfg.deadline_ms,
            "energy_budget_mj": cfg.energy_budget_mj,
            "chosen": decision.split,
            "feasible": decision.feasible,
            "reason": decision.reason,
            "splits": [asdict(p) for p in preds],
        },
        indent=2,
    )


def explain_table(preds: list[Prediction], decision: Decision, link: LinkState, cfg: PolicyConfig,
                  battery_pct: float | None = None) -> str:
    battery = ""
    if cfg.battery_low_pct is not None and cfg.name != "fixed":
        level = "unknown" if battery_pct is None else f"{battery_pct:g}%"
        battery = (f", battery {level} (battery_low_pct {cfg.battery_low_pct:g}%: deciding by "
                   f"{active_objective(cfg, battery_pct)})")
    rows = [f"link {link}; policy {cfg.name}" + battery
            + (f", deadline {cfg.deadline_ms:g} ms" if cfg.deadline_ms is not None else "")
            + (f", energy budget {cfg.energy_budget_mj:g} mJ" if cfg.energy_budget_mj is not None else "")]
    rows.append(f"  {'k':>3} {'wire KB':>9} {'head ms':>9} {'xfer ms':>9} {'rtt+q ms':>9} {'tail ms':>8} "
                f"{'latency ms':>11} {'energy mJ':>10}")
    for p in preds:
        energy = f"{p.energy_mj:10.1f}" if p.energy_mj is not None else f"{'-':>10}"
        mark = "->" if p.split == decision.split else "  "
        rows.append(f"{mark}{p.split:>3} {p.wire_bytes / 1024:>9.1f} {p.head_ms:>9.2f} {p.transfer_ms:>9.2f} "
                    f"{p.rtt_ms + p.queue_ms:>9.2f} {p.tail_ms:>8.2f} {p.latency_ms:>11.2f} {energy}")
    rows.append(f"chosen: k={decision.split} ({decision.reason})")
    return "\n".join(rows)

