"""Profiles shaped like the drone paper's measurements, for a chain bundle such as VGG16.

"Energy Efficient and Real-Time Remote Sensing in AI-Powered Drone" (Mobile
Information Systems 2021) measured VGG16 layer by layer on a Raspberry Pi 3B+
with a Coral USB accelerator: the Edge TPU cut execution time to about 1/6 of
the Pi's CPU, and the fully connected layers dominated memory and energy. We do
not have the paper's per-layer numbers, so this module derives a table with that
shape from the bundle itself, from first principles a reader can check:

- work per layer from the manifest: a conv layer's MACs are its weight bytes times
  its output's spatial size (int8: one byte per weight), a dense layer's MACs are
  its weight bytes; pooling and flatten cost nothing worth counting;
- Pi 3B+ CPU at PI_MACS_PER_S; the Edge TPU 6x faster on compute (the paper's ratio);
- weights beyond the Edge TPU's 8 MiB cache stream over USB 2 (the Pi 3B+ has no
  USB 3) at USB2_BYTES_PER_S on every inference: this is what makes the fully
  connected layers dominate on the edge;
- power: the Pi idle, the Pi with the accelerator computing, the Pi streaming weights;
- the server's tail at SERVER_MACS_PER_S.

`splitpoint profile reference` writes the three files (edge profile, cloud profile,
power table) for a bundle, so `policy explain` can be run against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scheduler.profiles import Profile, SplitProfile, StageStats, check_output
from splitpoint.bundle import EDGETPU_CACHE_BYTES, Manifest
from splitpoint.files import check_replaceable, json_object, write_replacing_named

PI_MACS_PER_S = 1.0e9  # TFLite int8 on a Pi 3B+'s four A53 cores, roughly
EDGETPU_SPEEDUP = 6.0  # the paper: mean execution time with the Coral about 1/6
USB2_BYTES_PER_S = 30e6  # effective USB 2 bulk rate for parameter streaming
SERVER_MACS_PER_S = 200e9  # a server CPU with oneDNN, float32
IDLE_W = 2.0  # Pi 3B+ idle with the accelerator attached
TPU_COMPUTE_W = 4.5  # Pi + Edge TPU computing (USB accelerator about 2 W at full load)
TPU_STREAM_W = 3.5  # Pi + Edge TPU waiting on USB transfers
TABLE_SOURCE = "reference model shaped like the drone paper"  # how the power table's "source" begins
REFERENCE_TABLE = "a reference power table (splitpoint profile reference)"


@dataclass(frozen=True)
class LayerCost:
    split: int
    layer: str
    macs: float
    weight_bytes: int
    edge_ms: float
    edge_w: float


def layer_costs(m: Manifest) -> list[LayerCost]:
    """Per split boundary k (k >= 1): the cost of the layer(s) between split k-1's cut and k's."""
    splits = sorted(m.splits, key=lambda s: s.split)
    out: list[LayerCost] = []
    prev_params = 0
    cached = 0
    for s in splits:
        if s.split == 0:
            continue
        weights = max(0, s.head_param_bytes - prev_params)
        prev_params = s.head_param_bytes
        # the widest tensor of the cut (a multi-tensor cut's pyramid levels differ) sets the spatial size
        shapes = [t.shape for t in s.cut] if s.cut else [t.shape for t in m.outputs]
        spatial = max(int(sh[1] * sh[2]) if len(sh) == 4 else 1 for sh in shapes)
        macs = float(weights * spatial)
        compute_s = macs / (PI_MACS_PER_S * EDGETPU_SPEEDUP)
        in_cache = max(0, min(weights, EDGETPU_CACHE_BYTES - cached))
        cached += in_cache
        stream_s = (weights - in_cache) / USB2_BYTES_PER_S
        total_s = compute_s + stream_s
        watts = (TPU_COMPUTE_W * compute_s + TPU_STREAM_W * stream_s) / total_s if total_s > 0 else IDLE_W
        out.append(LayerCost(s.split, s.after_layer or "", macs, weights, total_s * 1000, watts))
    return out


def reference_profiles(m: Manifest) -> tuple[Profile, Profile, dict]:
    """(edge profile, cloud profile, power table dict) shaped like the paper, for manifest `m`."""
    costs = layer_costs(m)
    edge_splits = {0: SplitProfile(0, m.split(0).wire_bytes, StageStats.constant(0.05), IDLE_W)}
    head_w: dict[str, float] = {"0": IDLE_W}
    total_ms, energy_mj = 0.0, 0.0
    for c in costs:
        total_ms += c.edge_ms
        energy_mj += c.edge_ms * c.edge_w
        watts = energy_mj / total_ms if total_ms > 0 else IDLE_W
        edge_splits[c.split] = SplitProfile(c.split, m.split(c.split).wire_bytes, StageStats.constant(round(total_ms, 3)), round(watts, 3))
        head_w[str(c.split)] = round(watts, 3)
    all_macs = sum(c.macs for c in costs)
    cloud_splits = {}
    done = 0.0
    for s in sorted(m.splits, key=lambda s: s.split):
        done += next((c.macs for c in costs if c.split == s.split), 0.0)
        tail_ms = (all_macs - done) / SERVER_MACS_PER_S * 1000
        cloud_splits[s.split] = SplitProfile(s.split, s.wire_bytes, StageStats.constant(round(max(tail_ms, 0.05), 3)))
    device = {"device": "reference: Raspberry Pi 3B+ + Coral USB (USB 2), shaped like the drone paper",
              "cpu": "model, not measured", "cores": 4}
    edge = Profile("edge", m.model_digest, m.model_name, device, edge_splits, IDLE_W, "reference table (model)")
    cloud = Profile("cloud", m.model_digest, m.model_name, {"device": "reference server", "cpu": "model"}, cloud_splits)
    table = {
        "source": f"{TABLE_SOURCE} (scheduler/reference_profiles.py), not a measurement",
        "device": device["device"],
        "idle_w": IDLE_W,
        "head_w": head_w,
    }
    return edge, cloud, table


def is_reference_table(data: bytes) -> bool:
    """An earlier reference power table (what `write_reference_profiles` may replace), not one measured."""
    return str((json_object(data) or {}).get("source", "")).startswith(TABLE_SOURCE)


def write_reference_profiles(m: Manifest, out_dir: Path, key: str = "-o") -> tuple[Path, Path, Path]:
    """edge-profile.json, cloud-profile.json and power-table.json in `out_dir`. Each may replace
    only an earlier one of its kind: all three are checked before any is written."""
    import json

    edge, cloud, table = reference_profiles(m)
    paths = (out_dir / "edge-profile.json", out_dir / "cloud-profile.json", out_dir / "power-table.json")
    check_output(paths[0], key)
    check_output(paths[1], key)
    check_replaceable(paths[2], key, REFERENCE_TABLE, is_reference_table)
    edge.save(paths[0], key)
    cloud.save(paths[1], key)
    write_replacing_named(paths[2], json.dumps(table, indent=2) + "\n", key, REFERENCE_TABLE, is_reference_table)
    return paths
