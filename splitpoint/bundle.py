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

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from splitpoint import manifest_checks as fields
from splitpoint.codec import Quantization
from splitpoint.errors import BundleError, TensorError
from splitpoint.files import file_stamp, path_kind, sha256_file
from splitpoint.manifest_checks import check_consistency

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
    def from_dict(cls, d: dict[str, Any], at: str) -> TensorSpec:
        """The tensor table `d`, found at `at` in the manifest (what errors name)."""
        q = fields.table(d, "quantization", at)
        try:
            quantization = Quantization.from_dict(q) if q else None
        except (KeyError, TypeError, ValueError):  # "could not convert string to float" named no field
            raise fields.FieldError(f"{at}.quantization", q, "must hold lists of numbers: scale and zero_point") \
                from None
        spec = cls(fields.text(d, "name", at), fields.shape(d, "shape", at), fields.dtype(d, "dtype", at),
                   quantization)
        if spec.quantization is not None:
            try:
                spec.quantization.validate(np.dtype(spec.dtype), spec.shape, f"{at}.quantization")
            except TensorError as exc:  # a zero or NaN scale decoded every frame to garbage
                raise ValueError(str(exc)) from None
        return spec


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the bundle root
    sha256: str
    bytes: int

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, d: dict | None, at: str = "artifact") -> Artifact | None:
        if not d:
            return None
        d = fields.is_table(d, at)
        path, digest, size = fields.text(d, "path", at, default=""), d.get("sha256"), d.get("bytes")
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
    def from_dict(cls, d: dict[str, Any], at: str = "split") -> SplitSpec:
        k = fields.whole(d, "split", at)
        at = f"splits[{k}]" if at.startswith("splits[") else at  # by split number from here
        edgetpu = dict(fields.table(d, "edgetpu", at, default={"status": "not compiled"}))
        fields.text(edgetpu, "status", f"{at}.edgetpu")
        verification = fields.table(d, "verification", at)
        for key in ("agreement", "top1_agreement", "value_agreement", "max_abs_error"):  # what inspect prints as figures
            if key in verification:
                fields.number(verification, key, f"{at}.verification")
        cut = fields.listed(d, "cut", at)
        return cls(
            split=k,
            after_layer=fields.text(d, "after_layer", at, default="") or None,  # None: k = 0
            cut=[TensorSpec.from_dict(fields.is_table(t, f"{at}.cut[{i}]"), f"{at}.cut[{i}]") for i, t in enumerate(cut)],
            head=Artifact.from_dict(d.get("head"), f"{at}.head"),
            head_param_bytes=fields.whole(d, "head_param_bytes", at, default=0),
            edgetpu=edgetpu,
            edgetpu_head=Artifact.from_dict(edgetpu.pop("head", None), f"{at}.edgetpu.head"),
            tail=Artifact.from_dict(d.get("tail"), f"{at}.tail"),
            verification=verification,
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
    def from_dict(cls, d: dict[str, Any], at: str = "input.preprocessing") -> Preprocessing:
        resize = fields.listed(d, "resize", at)
        if len(resize) != 2:
            raise fields.FieldError(f"{at}.resize", resize, "must be [height, width]")
        h, w = (fields.is_whole(v, f"{at}.resize[{i}]", minimum=1) for i, v in enumerate(resize))
        channels = fields.whole(d, "channels", at)
        if channels not in (1, 3):
            raise fields.FieldError(f"{at}.channels", channels, "must be 1 (grayscale) or 3 (RGB)")
        return cls(h, w, channels, fields.number(d, "scale", at), fields.number(d, "offset", at))

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
        if d.get("schema_version") != SCHEMA_VERSION or isinstance(d.get("schema_version"), bool):
            raise BundleError(f"{where}: schema_version {json.dumps(d.get('schema_version'), default=str)[:40]} is not "
                              f"supported (this splitpoint reads {SCHEMA_VERSION})")
        try:
            m, inp = fields.table(d, "model", default=fields.REQUIRED), fields.table(d, "input", default=fields.REQUIRED)
            labels = fields.listed(m, "labels", "model", default=[])
            splits = fields.listed(d, "splits")
            outputs = fields.listed(d, "outputs", default=[fields.table(d, "output", default=fields.REQUIRED)])
            return cls(
                model_name=fields.text(m, "name", "model"),
                model_digest=fields.text(m, "digest", "model"),
                num_layers=fields.whole(m, "num_layers", "model", minimum=1),
                source=fields.text(m, "source", "model", default=""),
                labels=[fields.is_text(label, f"model.labels[{i}]") for i, label in enumerate(labels)],
                input=TensorSpec.from_dict(fields.table(inp, "tensor", "input", default=fields.REQUIRED), "input.tensor"),
                input_wire=TensorSpec.from_dict(fields.table(inp, "wire", "input", default=fields.REQUIRED), "input.wire"),
                preprocessing=Preprocessing.from_dict(fields.table(inp, "preprocessing", "input", default=fields.REQUIRED)),
                output=TensorSpec.from_dict(fields.table(d, "output", default=fields.REQUIRED), "output"),
                splits=[SplitSpec.from_dict(fields.is_table(s, f"splits[{i}]"), f"splits[{i}]") for i, s in enumerate(splits)],
                validation=Artifact.from_dict(d.get("validation"), "validation"),
                partition=fields.table(d, "partition"),
                created_by=fields.text(d, "created_by", default=""),
                outputs=[TensorSpec.from_dict(fields.is_table(t, f"outputs[{i}]"), f"outputs[{i}]")
                         for i, t in enumerate(outputs)],
                detection=fields.table(d, "detection") or None,
            )._checked()
        except ValueError as exc:  # FieldError and the checks' own words, naming the field
            raise BundleError(f"{where}: malformed manifest: {exc}") from None
        except (KeyError, TypeError, AttributeError) as exc:  # AttributeError: a list where a table goes
            raise BundleError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None

    def _checked(self) -> Manifest:
        check_consistency(self)
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
        #: artifact path -> file_identity when load_bundle checked its hash: a file not changed
        #: since need not be hashed again at start (a big bundle's tails take seconds each)
        self.checked: dict[str, tuple[int, ...]] = {}

    def path(self, artifact: Artifact) -> Path:
        return self.root / artifact.path

    def validation_data(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(raw inputs, labels or None) held out at partition time."""
        if self.manifest.validation is None:
            raise BundleError(f"{self.root}: the bundle has no validation data")
        from splitpoint.validation_archive import read_validation

        return read_validation(self.path(self.manifest.validation))


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
        if mpath.exists():  # never opened: a named pipe would wait for a writer
            raise BundleError(f"{mpath} is not a regular file (a directory, a pipe or a device): not a bundle")
        raise BundleError(f"{mpath} is missing: not a bundle, or partitioning did not finish")
    try:
        data = json.loads(mpath.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise BundleError(f"{mpath}: unreadable manifest ({type(exc).__name__}: {exc})") from None
    manifest = Manifest.from_dict(data, str(mpath))
    wanted: list[Artifact] = []
    if verify:
        if manifest.validation:
            wanted.append(manifest.validation)
        for s in manifest.splits:
            if side in ("edge", "all"):
                wanted += [a for a in (s.head, s.edgetpu_head) if a]
            if side in ("cloud", "all") and s.tail:
                wanted.append(s.tail)
    bundle = Bundle(root, manifest)
    for art in wanted:
        before = file_stamp(root / art.path)
        check_artifact(root, art)
        if before is not None and file_stamp(root / art.path) == before:
            bundle.checked[art.path] = before
    log.debug("loaded bundle %s (%s, %d splits)", root, manifest.model_name, len(manifest.splits))
    return bundle



def check_artifact(root: Path, art: Artifact) -> None:
    """BundleError unless root/art.path is a regular file of the manifest's size and sha256."""
    p = root / art.path
    if not p.is_file():
        what = f"is {path_kind(p)}, not a file" if p.is_symlink() else \
            "is not a regular file (a directory, a pipe or a device)" if p.exists() else \
            "is missing from the bundle (partial copy?)"
        raise BundleError(f"{p} {what}")
    size = p.stat().st_size
    if size != art.bytes:
        raise BundleError(f"{p} has {size} bytes, the manifest says {art.bytes}: truncated or modified")
    digest = sha256_file(p)
    if digest != art.sha256:
        raise BundleError(f"{p} sha256 {digest[:16]}... does not match the manifest ({art.sha256[:16]}...): modified")
