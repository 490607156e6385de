"""The bundle: what partitioning produces and what both sides load.

    bundle/
      manifest.json            everything below, with sha256 of every artifact
      edge/head_<k>.tflite     int8 head for split k (k >= 1)
      edge/head_<k>_edgetpu.tflite   the same compiled for the Edge TPU, when compiled
      cloud/tail_<k>.keras     float tail for split k (k < K)
      data/validation.npz      held-out raw inputs (and labels) for checks and demos

Loading checks the format version and, for every artifact a side will use, its
presence and hash: a partial or tampered bundle is refused naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from splitpoint import detection
from splitpoint.codec import Quantization
from splitpoint.detection_config import check_against_model
from splitpoint.errors import BundleError, ConfigError

log = logging.getLogger(__name__)

FORMAT = "splitpoint-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
#: on-chip parameter cache of the Edge TPU; weights beyond it stream over USB every inference
EDGETPU_CACHE_BYTES = 8 * 1024 * 1024


def split_ranges(splits: Iterable[int]) -> str:
    """Split numbers as a reader takes them in: [0, 1, 2, 3, 8, 17, 18] -> "0-3, 8, 17-18" (a
    MobileNetV2 bundle's 156 splits are "0-155", not a line of 156 numbers); "none" when empty.
    The inverse of the `--splits` syntax (splitpoint.partition.parse_splits)."""
    ks = sorted(set(splits))
    runs: list[list[int]] = []
    for k in ks:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in runs) or "none"


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _count(value: Any, what: str) -> int:
    """A whole number as JSON has it (not "3", not true)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} {json.dumps(value, default=str)} is not an integer")
    return value


def _table(value: Any, what: str) -> dict[str, Any]:
    """A JSON object, or {} when absent or null."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} {json.dumps(value, default=str)[:80]} is not a table")
    return value


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization | None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "quantization": self.quantization.to_dict() if self.quantization else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        q = d.get("quantization")
        return cls(d["name"], tuple(int(x) for x in d["shape"]), d["dtype"], Quantization.from_dict(q) if q else None)


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the bundle root
    sha256: str
    bytes: int

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, d: dict | None) -> Artifact | None:
        if not d:
            return None
        path, digest, size = d["path"], d["sha256"], d["bytes"]
        if not isinstance(path, str) or not path or PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
            # a manifest naming /etc/hostname or ../x would have the loader read (and a head or
            # tail runner execute) a file outside the bundle that the digest then vouches for
            raise ValueError(f"artifact path {json.dumps(path)} is not a path inside the bundle")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ValueError(f"artifact {path}: sha256 {json.dumps(digest)} is not 64 hex digits")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"artifact {path}: bytes {json.dumps(size)} is not a byte count")
        return cls(path, digest, size)

    @classmethod
    def of(cls, root: Path, rel: str) -> Artifact:
        p = root / rel
        return cls(rel, sha256_file(p), p.stat().st_size)


@dataclass
class SplitSpec:
    """One candidate split: the first `split` layers run on the edge."""

    split: int
    after_layer: str | None  # name of the last edge layer; None for k = 0
    cut: list[TensorSpec]  # what travels on the wire (empty for k = K)
    head: Artifact | None  # None for k = 0
    head_param_bytes: int
    edgetpu: dict[str, Any]  # {"status": "compiled", ...} or {"status": "not compiled", "reason": ...}
    edgetpu_head: Artifact | None
    tail: Artifact | None  # None for k = K
    verification: dict[str, Any]

    @property
    def wire_bytes(self) -> int:
        return sum(t.nbytes for t in self.cut)

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "after_layer": self.after_layer,
            "cut": [t.to_dict() for t in self.cut],
            "wire_bytes": self.wire_bytes,
            "head": self.head.to_dict() if self.head else None,
            "head_param_bytes": self.head_param_bytes,
            "head_fits_edgetpu_cache": self.head_param_bytes <= EDGETPU_CACHE_BYTES,
            "edgetpu": dict(self.edgetpu, head=self.edgetpu_head.to_dict() if self.edgetpu_head else None),
            "tail": self.tail.to_dict() if self.tail else None,
            "verification": self.verification,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SplitSpec:
        edgetpu = dict(d.get("edgetpu") or {"status": "not compiled"})
        edgetpu_head = Artifact.from_dict(edgetpu.pop("head", None))
        return cls(
            split=_count(d["split"], "split"),
            after_layer=d.get("after_layer"),
            cut=[TensorSpec.from_dict(t) for t in d["cut"]],
            head=Artifact.from_dict(d.get("head")),
            head_param_bytes=int(d.get("head_param_bytes", 0)),
            edgetpu=edgetpu,
            edgetpu_head=edgetpu_head,
            tail=Artifact.from_dict(d.get("tail")),
            verification=_table(d.get("verification"), "verification"),
        )


@dataclass
class Preprocessing:
    """How a raw frame becomes the model's float input: resize, colour, then x * scale + offset."""

    height: int
    width: int
    channels: int  # 1 = grayscale, 3 = RGB
    scale: float
    offset: float

    def to_dict(self) -> dict:
        return {"resize": [self.height, self.width], "channels": self.channels, "scale": self.scale, "offset": self.offset}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        h, w = d["resize"]
        return cls(int(h), int(w), int(d["channels"]), float(d["scale"]), float(d["offset"]))

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw frame (H, W[, C]) already at the model's size -> float32 (1, H, W, C)."""
        return self.apply_batch(np.asarray(raw)[None])

    def apply_batch(self, raw: np.ndarray) -> np.ndarray:
        """Raw frames (N, H, W[, C]) -> float32 (N, H, W, C)."""
        x = np.asarray(raw, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        return x * np.float32(self.scale) + np.float32(self.offset)


@dataclass
class Manifest:
    model_name: str
    model_digest: str
    num_layers: int  # K: layers of the model; split K = all on the edge
    source: str
    labels: list[str]
    input: TensorSpec  # float model input (batch 1)
    input_wire: TensorSpec  # the quantized input: what head_k takes and what k = 0 sends
    preprocessing: Preprocessing
    output: TensorSpec  # the first output (all a classifier has)
    splits: list[SplitSpec]
    validation: Artifact | None
    partition: dict[str, Any] = field(default_factory=dict)
    created_by: str = ""
    #: every model output in the tail's order; a manifest without the list has one output
    outputs: list[TensorSpec] = field(default_factory=list)
    #: how raw outputs become detections (splitpoint/detection.py); None for a classifier
    detection: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.outputs:
            self.outputs = [self.output]

    def split(self, k: int) -> SplitSpec:
        for s in self.splits:
            if s.split == k:
                return s
        raise BundleError(f"split {k} is not in the bundle; its splits: {split_ranges(self.split_ids)}")

    @property
    def split_ids(self) -> list[int]:
        return [s.split for s in self.splits]

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created_by": self.created_by,
            "model": {
                "name": self.model_name,
                "digest": self.model_digest,
                "num_layers": self.num_layers,
                "source": self.source,
                "labels": self.labels,
            },
            "input": {
                "tensor": self.input.to_dict(),
                "wire": self.input_wire.to_dict(),
                "preprocessing": self.preprocessing.to_dict(),
            },
            "output": self.output.to_dict(),
            "outputs": [t.to_dict() for t in self.outputs],
            **({"detection": self.detection} if self.detection else {}),
            "validation": self.validation.to_dict() if self.validation else None,
            "partition": self.partition,
            "splits": [s.to_dict() for s in self.splits],
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = MANIFEST) -> Manifest:
        if not isinstance(d, dict):
            raise BundleError(f"{where}: not a splitpoint bundle manifest (a JSON object is expected at the top)")
        if d.get("format") != FORMAT:
            raise BundleError(f"{where}: not a splitpoint bundle manifest (format = {d.get('format')!r})")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise BundleError(
                f"{where}: schema_version {d.get('schema_version')!r} is not supported (this splitpoint reads {SCHEMA_VERSION})"
            )
        try:
            m = d["model"]
            return cls(
                model_name=m["name"],
                model_digest=m["digest"],
                num_layers=int(m["num_layers"]),
                source=m.get("source", ""),
                labels=list(m.get("labels", [])),
                input=TensorSpec.from_dict(d["input"]["tensor"]),
                input_wire=TensorSpec.from_dict(d["input"]["wire"]),
                preprocessing=Preprocessing.from_dict(d["input"]["preprocessing"]),
                output=TensorSpec.from_dict(d["output"]),
                splits=[SplitSpec.from_dict(s) for s in d["splits"]],
                validation=Artifact.from_dict(d.get("validation")),
                partition=d.get("partition", {}),
                created_by=d.get("created_by", ""),
                outputs=[TensorSpec.from_dict(t) for t in d.get("outputs") or [d["output"]]],
                detection=d.get("detection"),
            )._checked()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # AttributeError: a list where a table goes
            raise BundleError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None

    def _checked(self) -> Manifest:
        """What the agent and the server rely on (ValueError naming it): splits 0..K, each once,
        K among them (every fallback runs head K), a head for each k > 0, a tail for each k < K,
        one label per class, a detection block that decodes these outputs (its defaults filled in)."""
        K = self.num_layers
        ids = self.split_ids
        if not ids:
            raise ValueError("no splits")
        if len(set(ids)) != len(ids):
            raise ValueError(f"splits listed twice: {split_ranges(k for k in set(ids) if ids.count(k) > 1)}")
        if K < 1 or any(not 0 <= k <= K for k in ids) or K not in ids:
            raise ValueError(f"splits {split_ranges(ids)} are not among 0-{K} with {K} (all on the edge) among them")
        for s in self.splits:
            if s.split > 0 and s.head is None:
                raise ValueError(f"split {s.split} has no head")
            if s.split < K and s.tail is None:
                raise ValueError(f"split {s.split} has no tail")
        classes = self.outputs[0].shape[-1] if len(self.outputs) == 1 and self.outputs[0].shape else None
        if self.labels and self.detection is None and classes is not None and len(self.labels) != classes:
            raise ValueError(f"{len(self.labels)} labels for {classes} classes")
        if self.detection is not None:  # the agent and the server decode every frame with it (keys left out: defaults)
            self.detection = detection.config(**self.detection)
            try:
                check_against_model(self.detection, self.labels or None, [o.shape for o in self.outputs],
                                    (self.preprocessing.height, self.preprocessing.width))
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    def write(self, root: Path) -> None:
        tmp = root / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(root / MANIFEST)  # atomic: a reader never sees half a manifest


class Bundle:
    """A loaded, verified bundle. `side` picks which artifacts must be present."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root = root
        self.manifest = manifest

    def path(self, artifact: Artifact) -> Path:
        return self.root / artifact.path

    def validation_data(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(raw inputs, labels or None) held out at partition time."""
        if self.manifest.validation is None:
            raise BundleError(f"{self.root}: the bundle has no validation data")
        with np.load(self.path(self.manifest.validation)) as z:
            return z["inputs"], (z["labels"] if "labels" in z.files else None)


def load_bundle(root: str | Path, side: str = "all", verify: bool = True) -> Bundle:
    """Load and check a bundle. side: 'edge' (heads), 'cloud' (tails) or 'all'."""
    root = Path(root)
    if side not in ("edge", "cloud", "all"):
        raise ValueError(f"side must be edge, cloud or all, not {side!r}")
    mpath = root / MANIFEST
    if not root.is_dir():
        what = "is a file, not a bundle directory" if root.exists() else "does not exist"
        raise BundleError(f"bundle directory {root} {what}")
    if not mpath.is_file():
        raise BundleError(f"{mpath} is missing: not a bundle, or partitioning did not finish")
    try:
        data = json.loads(mpath.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise BundleError(f"{mpath}: unreadable manifest ({type(exc).__name__}: {exc})") from None
    manifest = Manifest.from_dict(data, str(mpath))
    if verify:
        wanted: list[Artifact] = []
        if manifest.validation:
            wanted.append(manifest.validation)
        for s in manifest.splits:
            if side in ("edge", "all"):
                wanted += [a for a in (s.head, s.edgetpu_head) if a]
            if side in ("cloud", "all") and s.tail:
                wanted.append(s.tail)
        for art in wanted:
            _check_artifact(root, art)
    log.debug("loaded bundle %s (%s, %d splits)", root, manifest.model_name, len(manifest.splits))
    return Bundle(root, manifest)


def _check_artifact(root: Path, art: Artifact) -> None:
    p = root / art.path
    if not p.is_file():
        raise BundleError(f"{p} is missing from the bundle (partial copy?)")
    size = p.stat().st_size
    if size != art.bytes:
        raise BundleError(f"{p} has {size} bytes, the manifest says {art.bytes}: truncated or modified")
    digest = sha256_file(p)
    if digest != art.sha256:
        raise BundleError(f"{p} sha256 {digest[:16]}... does not match the manifest ({art.sha256[:16]}...): modified")
