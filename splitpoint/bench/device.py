"""Emulated edge devices for `splitpoint bench`: per-split head times from a device file.

The bench's edge worker runs the real heads on a fast core and stretches each invocation with
a sleep to the time the emulated device would take. The target comes from a device file, so the
same file gives the same head times on any machine and under any load (the factor mode, which
multiplies a native median measured in the run itself, changes with whatever else runs).

A device file is one of:

* an edge profile (JSON, the format `splitpoint profile edge` writes): each split's head takes
  its `latency.median_ms`;
* a TOML file with one all-edge figure and a shape to scale from:

      device = "a slower board"            # optional, for logs and results
      all_edge_ms = 125.0                  # required: the whole network on the edge
      shape = "mobilenetv2-96-documented.json"   # required: an edge profile (relative to this file)

  split k then takes all_edge_ms x shape(k) / shape(K), K the shape's all-edge split. The
  shape may be a device profile or a native profile of the bundle measured once.

Shipped files (splitpoint/data/devices/, `shipped_device(name)`): `mobilenetv2-96-documented.json`
(the device of the documented MobileNetV2 runs, all-edge 77 ms) and `mobilenetv2-96-slow125.toml`
(the same shape, all-edge 125 ms). docs/benchmarks.md says how the first was derived. The
reference power table of the same package data (`REFERENCE_POWER_TABLE`) is described in
docs/power.md.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitpoint.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEVICES_DIR = DATA_DIR / "devices"
#: the reference power table of a Pi 4 + Coral USB Accelerator (+ LTE via the radio model): modelled
#: from published figures, not metered (docs/power.md); the power table of the bench's energy stage
#: when no measured one is given
REFERENCE_POWER_TABLE = DATA_DIR / "power" / "pi4-coral-lte.toml"

#: a head's file in a bundle: edge/head_<k>.tflite or edge/head_<k>_edgetpu.tflite
_HEAD_NAME = re.compile(r"head_(\d+)(?:_edgetpu)?\.tflite$")
_TOML_KEYS = ("device", "all_edge_ms", "shape")
#: the longest head time of a device file, ms: 10 s, 130x the documented device's all-edge 77 ms.
#: 1e308 ended in the worker's "timestamp out of range" (blamed on the device), and an hour per head
#: kept the bench profiling until the worker's timeout
MAX_HEAD_MS = 10_000.0


def shipped_device(name: str) -> Path:
    """Path of a device file shipped with the package (a ConfigError names the shipped ones)."""
    path = DEVICES_DIR / name
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in DEVICES_DIR.glob("*") if p.is_file()))
        raise ConfigError("device", name, f"no such shipped device file; shipped: {known}")
    return path


def split_of_head(path: str | Path) -> int | None:
    """The split a head file runs (edge/head_<k>....tflite), or None for another name."""
    m = _HEAD_NAME.search(Path(path).name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class DeviceProfile:
    """Target head time per split (ms) of an emulated device, and where the figures came from."""

    head_ms: dict[int, float]
    path: str
    description: str
    model_name: str
    how: str  # "edge profile" or "scaled from SHAPE to all-edge X ms"

    def target_ms(self, k: int) -> float:
        try:
            return self.head_ms[k]
        except KeyError:
            raise ConfigError(
                "device", self.path,
                f"has no head time for split {k} (it has {sorted(self.head_ms)}): give a device file for this bundle",
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """For the worker's `ready` answer and the results JSON."""
        return {"path": self.path, "description": self.description, "model_name": self.model_name, "how": self.how,
                "head_ms": {str(k): v for k, v in sorted(self.head_ms.items())}}


def _profile_times(path: Path, key: str) -> tuple[dict[int, float], str, str]:
    """(median head ms per split, model name, device description) of an edge profile file."""
    from scheduler.profiles import load_profile

    prof = load_profile(path, side="edge")
    times = {k: prof.latency_ms(k) for k in prof.splits}
    for k, t in times.items():
        if not (math.isfinite(t) and 0 <= t <= MAX_HEAD_MS):
            raise ConfigError(f"{key}: splits[{k}]", t, f"head time must be from 0 to {MAX_HEAD_MS:g} ms in {path}")
    desc = str(prof.device.get("device") or prof.device.get("cpu") or "edge profile")
    return times, prof.model_name, desc


def load_device(path: str | Path) -> DeviceProfile:
    """Read a device file (an edge profile JSON, or a scaling TOML); errors name the file and key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("device", str(p), "file not found")
    if p.suffix == ".json":
        times, model, desc = _profile_times(p, "device")
        return DeviceProfile(times, str(p), desc, model, "edge profile")
    if p.suffix != ".toml":
        raise ConfigError("device", str(p), "a device file is an edge profile (.json) or a scaling file (.toml)")
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("device", str(p), f"not a readable TOML file ({exc})") from None
    unknown = sorted(set(data) - set(_TOML_KEYS))
    if unknown:
        raise ConfigError(unknown[0], data[unknown[0]], f"unknown key in device file {p}; known: {', '.join(_TOML_KEYS)}")
    for required in ("all_edge_ms", "shape"):
        if required not in data:
            raise ConfigError(required, None, f"is required in device file {p}")
    all_edge = data["all_edge_ms"]
    if isinstance(all_edge, bool) or not isinstance(all_edge, (int, float)) or not 0 < all_edge <= MAX_HEAD_MS:
        raise ConfigError("all_edge_ms", all_edge, f"must be a number of ms above 0 and at most {MAX_HEAD_MS:g} "
                                                   f"in device file {p}")
    shape_name = data["shape"]
    if not isinstance(shape_name, str) or not shape_name:
        raise ConfigError("shape", shape_name, f"must name an edge profile file in device file {p}")
    shape = (p.parent / shape_name).resolve()
    times, model, _ = _profile_times(shape, "shape")
    k_all = max(times)
    if times[k_all] <= 0:
        raise ConfigError("shape", shape_name, f"its all-edge split k={k_all} takes 0 ms: nothing to scale from")
    scale = float(all_edge) / times[k_all]
    head = {k: round(t * scale, 4) for k, t in times.items()}
    worst = max(head, key=head.__getitem__)
    if head[worst] > MAX_HEAD_MS:  # a shape whose split takes longer than its all-edge one
        raise ConfigError("all_edge_ms", all_edge, f"scales split {worst}'s head to {head[worst]:g} ms, above the "
                                                   f"{MAX_HEAD_MS:g} ms a head may last, in device file {p}")
    desc = str(data.get("device") or f"all-edge {all_edge:g} ms, shaped like {shape.name}")
    return DeviceProfile(head, str(p), desc, model, f"scaled from {shape.name} to all-edge {all_edge:g} ms (x{scale:.4g})")


@dataclass
class OverrunCounter:
    """Head runs whose native time already exceeded the device's target (the emulation could not
    slow them down to the device, it was slower): per split, reset per worker command."""

    runs: dict[int, int] = field(default_factory=dict)
    over: dict[int, int] = field(default_factory=dict)
    worst_ms: dict[int, float] = field(default_factory=dict)

    def record(self, k: int, native_ms: float, target_ms: float) -> bool:
        self.runs[k] = self.runs.get(k, 0) + 1
        if native_ms <= target_ms:
            return False
        self.over[k] = self.over.get(k, 0) + 1
        self.worst_ms[k] = max(self.worst_ms.get(k, 0.0), native_ms)
        return True

    def take(self, device: DeviceProfile) -> dict[str, Any]:
        """What to say in the worker's `done` answer, then start counting afresh."""
        out: dict[str, Any] = {"head_runs": sum(self.runs.values()), "too_slow": {}}
        for k in sorted(self.over):
            out["too_slow"][str(k)] = {"runs": self.runs[k], "slower_than_target": self.over[k],
                                       "worst_native_ms": round(self.worst_ms[k], 3), "target_ms": device.head_ms[k]}
        if out["too_slow"]:
            out["note"] = ("this machine's native head was already slower than the device's time on these runs: "
                           "the device cannot be emulated there (those runs took their native time)")
        self.runs.clear()
        self.over.clear()
        self.worst_ms.clear()
        return out
