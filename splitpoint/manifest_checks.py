"""Checking a bundle manifest as it is read: each field the kind of JSON value that the loaders,
the agent, the server and `splitpoint inspect` rely on, and the fields consistent with each other.

A manifest edited by hand (or by a script) with a number where a string goes, `"7"` where an
integer goes, or a zero quantization scale used to pass the loader and end later in a traceback
(`inspect` formatting `model.digest = 5`) or in an error blamed on the device (a head fed a tensor
of the wrong shape). Each reader here raises `FieldError` naming the field by its path in the file
(`model.digest`, `splits[3].edgetpu.status`) and what it must be; `check_consistency` raises a
ValueError saying which fields disagree. `Manifest.from_dict` turns either into one BundleError line.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from splitpoint import detection
from splitpoint.detection_config import check_against_model
from splitpoint.errors import ConfigError


class FieldError(ValueError):
    """A manifest field that is missing or not of the kind it must be; the text names it."""

    def __init__(self, name: str, value: Any, must: str):
        shown = json.dumps(value, default=str)
        super().__init__(f"{name} = {shown[:80] + ('...' if len(shown) > 80 else '')}: {must}")


class MissingField(FieldError):
    def __init__(self, name: str):
        ValueError.__init__(self, f"{name}: missing (or null)")


REQUIRED: Any = object()  # a reader's default: the key must be there

# Each reader takes a table `d`, a `key` and `at`, the table's own path in the file ("" at the
# top), and returns d[key] checked; `default` for an absent or null key (MissingField without one).


def _get(d: dict[str, Any], key: str, at: str, default: Any) -> tuple[str, Any]:
    name = f"{at}.{key}" if at else key
    if d.get(key) is None:
        if default is REQUIRED:
            raise MissingField(name)
        return name, default
    return name, d[key]


def table(d: dict[str, Any], key: str, at: str = "", default: Any = None) -> dict[str, Any]:
    """A JSON object; {} (or `default`) when absent or null."""
    name, value = _get(d, key, at, {} if default is None else default)
    return is_table(value, name)


def is_table(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldError(name, value, "must be a JSON object")
    return value


def listed(d: dict[str, Any], key: str, at: str = "", default: Any = REQUIRED) -> list[Any]:
    name, value = _get(d, key, at, default)
    if not isinstance(value, list):
        raise FieldError(name, value, "must be a JSON list")
    return value


def text(d: dict[str, Any], key: str, at: str = "", default: Any = REQUIRED) -> str:
    name, value = _get(d, key, at, default)
    return is_text(value, name)


def is_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise FieldError(name, value, "must be a string")
    return value


def whole(d: dict[str, Any], key: str, at: str = "", minimum: int = 0, default: Any = REQUIRED) -> int:
    """A JSON integer (not "3", 3.0 or true) >= minimum."""
    name, value = _get(d, key, at, default)
    return is_whole(value, name, minimum)


def is_whole(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FieldError(name, value, f"must be a whole number >= {minimum}")
    return value


def number(d: dict[str, Any], key: str, at: str = "") -> float:
    """A finite JSON number (not a string, not true)."""
    name, value = _get(d, key, at, REQUIRED)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FieldError(name, value, "must be a finite number")
    return float(value)


def shape(d: dict[str, Any], key: str, at: str = "") -> tuple[int, ...]:
    """A tensor's shape: whole numbers >= 1 (a -8 or 0 made every tensor of it fail to decode)."""
    name = f"{at}.{key}" if at else key
    dims = listed(d, key, at)
    if not dims:
        raise FieldError(name, dims, "must list at least one dimension")
    return tuple(is_whole(v, f"{name}[{i}]", minimum=1) for i, v in enumerate(dims))


def dtype(d: dict[str, Any], key: str, at: str = "") -> str:
    """A numeric numpy dtype name: float32, uint8, int8 ..."""
    name, value = _get(d, key, at, REQUIRED)
    try:
        kind: str = np.dtype(is_text(value, name)).kind
    except TypeError:
        kind = ""
    if kind not in ("b", "i", "u", "f"):
        raise FieldError(name, value, "must name a numeric dtype (float32, uint8, int8, ...)")
    return value


def check_consistency(m: Any) -> None:
    """What the agent and the server rely on (ValueError naming it) in a Manifest `m`: splits 0..K,
    each once, K among them (every fallback runs head K), a head for each k > 0, a tail for each
    k < K, one label per class and no two alike, an input that preprocessing makes and the wire carries as it is,
    a detection block that decodes these outputs (its defaults filled in)."""
    from splitpoint.bundle import split_ranges  # it imports this module

    K = m.num_layers
    ids = m.split_ids
    if not ids:
        raise ValueError("no splits")
    if len(set(ids)) != len(ids):
        raise ValueError(f"splits listed twice: {split_ranges(k for k in set(ids) if ids.count(k) > 1)}")
    if K < 1 or any(not 0 <= k <= K for k in ids) or K not in ids:
        raise ValueError(f"splits {split_ranges(ids)} are not among 0-{K} with {K} (all on the edge) among them")
    for s in m.splits:
        if s.split > 0 and s.head is None:
            raise ValueError(f"split {s.split} has no head")
        if s.split < K and s.tail is None:
            raise ValueError(f"split {s.split} has no tail")
    pre = m.preprocessing
    made = (1, pre.height, pre.width, pre.channels)
    if m.input.shape != made:  # a head fed the wrong shape failed "on the device" (doctor advice) instead
        raise ValueError(f"input.preprocessing makes {list(made)} (resize {pre.height}x{pre.width}, {pre.channels} "
                         f"channel(s)) but input.tensor.shape is {list(m.input.shape)}")
    if m.input_wire.shape != m.input.shape or m.input_wire.quantization is None:
        raise ValueError(f"input.wire must be the quantized input tensor: shape {list(m.input.shape)} with a "
                         f"quantization, not shape {list(m.input_wire.shape)}"
                         + ("" if m.input_wire.quantization else " without one"))
    if m.labels:  # partition refuses two classes of one name (detection_config.check_distinct); a hand edit too
        twice = sorted({label for label in m.labels if m.labels.count(label) > 1})
        if twice:
            raise FieldError("model.labels", m.labels, f"{twice[0]!r} is given twice; each class needs a label of its own")
    classes = m.outputs[0].shape[-1] if len(m.outputs) == 1 and m.outputs[0].shape else None
    binary = classes == 1 and len(m.labels) == 2  # a sigmoid score's two sides (recorder.top_class)
    if m.labels and m.detection is None and classes is not None and len(m.labels) != classes and not binary:
        raise ValueError(f"{len(m.labels)} labels for {classes} classes")
    if m.detection is not None:  # the agent and the server decode every frame with it (keys left out: defaults)
        m.detection = detection.config(**m.detection)
        try:
            check_against_model(m.detection, m.labels or None, [o.shape for o in m.outputs],
                                (pre.height, pre.width))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
