"""The partitioner: a float Keras model -> a bundle of int8 heads and float tails.

For every candidate split k (the first k layers on the edge):
  edge/head_<k>.tflite   full-integer int8, uint8 input, calibrated on representative frames
  cloud/tail_<k>.keras   float, taking the dequantized cut tensor(s), returning every output
and, when edgetpu_compiler is on PATH, edge/head_<k>_edgetpu.tflite with its op counts.
Every split is verified (head -> dequantize -> tail against the float model on
held-out frames; splitpoint/verify.py) before the manifest, written last, makes
the bundle valid.

Candidate splits are cuts whose frontier is at most --max-cut-tensors tensors
(splitpoint/cut_points.py, splitpoint/cuts.py): with 1, the points where one tensor carries all state
forward (every layer boundary of a chain, none inside a residual block); with
more, also cuts through skip connections and feature pyramids, whose heads have
one output per cut tensor.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import logging
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import splitpoint
from splitpoint.bundle import (
    MANIFEST,
    Artifact,
    Manifest,
    Preprocessing,
    SplitSpec,
    TensorSpec,
    load_bundle,
)
from splitpoint.codec import Quantization
from splitpoint.cut_points import CutPoint, as_functional, find_cut_points, tensor_name
from splitpoint.errors import PartitionError, VerificationError
from splitpoint.images import list_frame_files, read_frame_file
from splitpoint.models import BUILTIN, ModelSource, reference_model
from splitpoint.runtime.tf import import_tensorflow
from splitpoint.verify import verify_outputs

log = logging.getLogger(__name__)

DEFAULT_MIN_AGREEMENT = 0.98
#: a detector's default: detection agreement (both ways, IoU >= 0.5, same class; splitpoint/verify.py)
DEFAULT_MIN_DETECTION_AGREEMENT = 0.95
#: cuts may carry up to this many tensors (--max-cut-tensors); 1 = single-tensor cut points only
DEFAULT_MAX_CUT_TENSORS = 4
EDGETPU_COMPILER = "edgetpu_compiler"


def model_digest(model: Any) -> str:
    """sha256 of the architecture and the weights: the same model gives the same digest."""
    h = hashlib.sha256(model.to_json().encode())
    for w in model.weights:
        arr = np.ascontiguousarray(np.asarray(w.numpy() if hasattr(w, "numpy") else w))
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return "sha256:" + h.hexdigest()


def parse_splits(text: str) -> list[int]:
    """'3,5,8-10' -> [3, 5, 8, 9, 10]; names the bad item otherwise."""
    out: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m:
            raise PartitionError(f"--splits: {item!r} is not a split number or a range like 3-7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise PartitionError(f"--splits: range {item!r} runs backwards")
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


# --------------------------------------------------------------------------- inputs


def load_model_source(spec: str, input_size: int | None = None) -> ModelSource:
    """A built-in name, a .keras/.h5 file, or a SavedModel directory."""
    if spec in BUILTIN:
        return reference_model(spec, input_size)
    path = Path(spec)
    if not path.exists():
        raise PartitionError(f"model {spec!r} is neither a file, a SavedModel directory nor a built-in ({', '.join(BUILTIN)})")
    if path.suffix in (".keras", ".h5"):
        _check_model_file(path)  # before TensorFlow's import: a wrong file is told in a moment
    import_tensorflow()
    import keras

    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise PartitionError(f"{path} is a directory without saved_model.pb: not a SavedModel")
        model = _saved_model_as_keras(path)
    elif path.suffix in (".keras", ".h5"):
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types for a bad file
            raise PartitionError(f"cannot load Keras model {path}: {exc}") from None
    else:
        raise PartitionError(f"{path}: unknown model format (expected .keras, .h5 or a SavedModel directory)")
    model = as_functional(model)
    shape = model.inputs[0].shape
    if len(shape) != 4 or None in shape[1:]:
        raise PartitionError(f"model input shape {tuple(shape)} is not an image batch (N, H, W, C) with a static size")
    _, h, w, c = shape
    if c not in (1, 3):
        raise PartitionError(f"model input has {c} channels; splitpoint feeds 1 (grayscale) or 3 (RGB)")
    pre = Preprocessing(height=int(h), width=int(w), channels=int(c), scale=1.0 / 255.0, offset=0.0)
    return ModelSource(name=path.stem, source=str(path), model=model, preprocessing=pre, labels=[], trained=True)


def _check_model_file(path: Path) -> None:
    """Keras reports any file it cannot open as "File not found"; say what is really wrong."""
    import zipfile

    if not path.is_file():
        raise PartitionError(f"{path} is not a file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError as exc:
        raise PartitionError(f"cannot read {path}: {exc.strerror}") from None
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise PartitionError(f"{path} is not a Keras model: a .keras file is a zip archive written by "
                             "model.save('name.keras'), and this one is not")
    if path.suffix == ".h5" and magic != b"\x89HDF\r\n\x1a\n":
        raise PartitionError(f"{path} is not a Keras model: a .h5 file is HDF5 written by model.save('name.h5'), "
                             "and this one is not")


def _saved_model_as_keras(path: Path) -> Any:
    """A SavedModel has no layer structure Keras 3 can read back: wrap it as one opaque layer.

    Only k = 0 and k = K are then candidates; save the model as .keras for finer splits.
    """
    import keras

    try:
        layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    except Exception as exc:
        raise PartitionError(f"cannot load SavedModel {path}: {exc}") from None
    spec = layer._endpoint_signatures["serving_default"].structured_input_signature[1]  # type: ignore[attr-defined]
    (name, tspec), = spec.items()
    inp = keras.Input(batch_shape=tuple(tspec.shape), name=name)
    out = layer(inp)
    if isinstance(out, dict):
        if len(out) != 1:
            raise PartitionError(f"SavedModel {path} has {len(out)} outputs; splitpoint needs one")
        out = next(iter(out.values()))
    log.warning("%s is a SavedModel: its layers are not visible, so only k = 0 and k = K can be offered", path)
    return keras.Model(inp, out, name=path.name)


def load_calibration(
    src: ModelSource, calibration_dir: Path | None, calibration_random: int | None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(calibration frames, held-out frames, held-out labels or None), all raw uint8 (N, H, W, C)."""
    pre = src.preprocessing
    shape = (pre.height, pre.width, pre.channels)

    def fit(frames: np.ndarray) -> np.ndarray:
        return frames.reshape((len(frames), *shape))

    if calibration_dir is not None:
        frames = np.stack([read_frame_file(p, pre) for p in list_frame_files(calibration_dir, "--calibration")])
        if len(frames) < 2:
            raise PartitionError(f"--calibration {calibration_dir}: need at least 2 frames (some are held out to verify)")
        held = max(1, len(frames) // 5)
        return frames[:-held], frames[-held:], None
    if calibration_random is not None or src.calibration is None:
        n = calibration_random or 32
        if n < 1:
            raise PartitionError(f"--calibration-random {n}: must be at least 1")
        if src.trained and calibration_random is None:
            log.warning("no calibration data given: calibrating %s on %d random frames (quantization will be poor)", src.name, n)
        rng = np.random.default_rng(seed)
        cal = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        if src.validation is not None:
            return cal, fit(src.validation), src.validation_labels
        val = np.random.default_rng(seed + 1).integers(0, 256, size=(max(4, min(n, 16)), *shape), dtype=np.uint8)
        return cal, val, None
    assert src.validation is not None
    return fit(src.calibration), fit(src.validation), src.validation_labels


# --------------------------------------------------------------------------- per-split work


@dataclass
class _Job:
    """What a worker needs to build and check one split (picklable)."""

    bundle: Path
    split: int
    num_layers: int
    input_quant: dict | None  # set for k = 0: how the edge quantizes the input
    min_agreement: float
    enforce: bool
    edgetpu_compiler: str | None


@dataclass
class _Shared:
    model: Any
    cuts: dict[int, CutPoint]
    preprocessing: Preprocessing
    calibration: np.ndarray  # float, preprocessed
    validation: np.ndarray  # float, preprocessed
    reference: list[np.ndarray]  # float model outputs on `validation`, one array per output
    detection: dict | None = None  # the manifest's detection block: agreement on detections


_shared: _Shared | None = None


def _init_worker(model_path: str, pre: dict, cal_path: str, val_path: str, ref_path: str,
                 max_cut_tensors: int, detection: dict | None) -> None:
    """Process-pool initializer: load the model once per worker."""
    global _shared
    logging.basicConfig(level=logging.WARNING)
    import_tensorflow()
    import keras

    model = as_functional(keras.models.load_model(model_path, compile=False))
    cuts, _ = find_cut_points(model, max_cut_tensors)
    with np.load(ref_path) as z:
        reference = [z[f"out_{i}"] for i in range(len(z.files))]
    _shared = _Shared(
        model, {c.split: c for c in cuts}, Preprocessing.from_dict(pre),
        np.load(cal_path), np.load(val_path), reference, detection,
    )


def _build_split(job: _Job) -> dict:
    """Convert, save, compile and verify one split; returns its SplitSpec as a dict + timings."""
    assert _shared is not None, "worker not initialised"
    t0 = time.perf_counter()
    tf = import_tensorflow()
    import keras

    sh = _shared
    cut = sh.cuts[job.split]
    k, K = job.split, job.num_layers
    edge_dir, cloud_dir = job.bundle / "edge", job.bundle / "cloud"
    head_art = tail_art = tpu_art = None
    param_bytes = 0
    edgetpu: dict[str, Any] = {"status": "not compiled", "reason": "k = 0 has no head"}
    cut_specs: list[TensorSpec] = []
    head_out_val: list[np.ndarray]
    input_quant = job.input_quant  # k > 0: the head's own input quantization, set below
    if k == 0:
        q = Quantization.from_dict(job.input_quant) if job.input_quant else None
        assert q is not None
        wire = q.quantize(sh.validation, np.uint8)
        head_out_val = [q.dequantize(wire)]
        cut_specs = [TensorSpec("input", tuple([1, *sh.validation.shape[1:]]), "uint8", q)]
    else:
        head = keras.Model(sh.model.inputs, list(cut.tensors), name=f"head_{k}")
        tflite = _convert_head(tf, head, sh.calibration)
        rel = f"edge/head_{k}.tflite"
        (job.bundle / rel).write_bytes(tflite)
        head_art = Artifact.of(job.bundle, rel)
        param_bytes = _tflite_param_bytes(tflite)
        from splitpoint.runtime.litert import HeadRunner

        runner = HeadRunner(job.bundle / rel)
        in_q = runner.input_quantization
        assert in_q is not None and all(q is not None for q in runner.output_quantizations)
        input_quant = in_q.to_dict()
        per_frame = [runner.run_all(in_q.quantize(x[None], runner.input_dtype)) for x in sh.validation]
        head_out_val = [q.dequantize(np.concatenate([f[i] for f in per_frame]))  # type: ignore[union-attr]
                        for i, q in enumerate(runner.output_quantizations)]
        if k < K:
            cut_specs = [TensorSpec(tensor_name(t), shape, dt.name, q)
                         for t, shape, dt, q in zip(cut.tensors, runner.output_shapes, runner.output_dtypes,
                                                    runner.output_quantizations, strict=True)]
        edgetpu = _compile_edgetpu(job.edgetpu_compiler, job.bundle / rel, edge_dir)
        if edgetpu.get("status") == "compiled":
            tpu_art = Artifact.of(job.bundle, f"edge/head_{k}_edgetpu.tflite")
    if k < K:
        inputs = list(cut.tensors) if len(cut.tensors) > 1 else cut.tensor
        tail = sh.model if k == 0 else keras.Model(inputs, sh.model.outputs, name=f"tail_{k}")
        rel = f"cloud/tail_{k}.keras"
        tail.save(cloud_dir / f"tail_{k}.keras")
        tail_art = Artifact.of(job.bundle, rel)
        reloaded = keras.models.load_model(cloud_dir / f"tail_{k}.keras", compile=False)
        feed = head_out_val if len(head_out_val) > 1 else head_out_val[0]
        pred = reloaded.predict(feed, verbose=0, batch_size=32)
        got = [np.asarray(p) for p in (pred if isinstance(pred, (list, tuple)) else [pred])]
    else:
        got = head_out_val
    got = [g.reshape(r.shape) for g, r in zip(got, sh.reference, strict=True)]
    verification = verify_outputs(got, sh.reference, sh.detection)
    verification.update(min_agreement=job.min_agreement, enforced=job.enforce,
                        passed=verification["agreement"] >= job.min_agreement)
    spec = SplitSpec(
        split=k, after_layer=cut.layer or None, cut=cut_specs, head=head_art, head_param_bytes=param_bytes,
        edgetpu=edgetpu, edgetpu_head=tpu_art, tail=tail_art, verification=verification,
    )
    return {"spec": spec.to_dict(), "input_quantization": input_quant, "seconds": time.perf_counter() - t0}


def _as_list(out: Any) -> list[Any]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _convert_head(tf: Any, head: Any, calibration: np.ndarray) -> bytes:
    """Full-integer int8 TFLite with a static batch of 1: what edgetpu_compiler accepts."""
    in_shape = (1, *head.inputs[0].shape[1:])
    # Named outputs: the head's signature keeps their order (runtime/litert.py reads it back).
    fn = tf.function(lambda x: {f"cut_{i:02d}": t for i, t in enumerate(_as_list(head(x, training=False)))})
    concrete = fn.get_concrete_function(tf.TensorSpec(in_shape, tf.float32))
    # The converter freezes the variables it finds on this trackable: hand it the backend ones.
    holder = tf.Module()
    holder.variables_ = [getattr(v, "value", v) for v in head.weights]
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in calibration)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.int8
    with _native_stderr_captured() as captured:
        try:
            return bytes(conv.convert())
        except Exception as exc:  # the converter raises ConverterError and plain exceptions
            raise PartitionError(
                f"cannot convert {head.name} to full-integer TFLite: {str(exc).splitlines()[0]}"
            ) from None
        finally:
            log.debug("converter output for %s: %s", head.name, captured())


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[Callable[[], str]]:
    """The converter's C++ code chats on file descriptor 2; keep that off the user's terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)

        def read() -> str:
            tmp.seek(0)
            return tmp.read().decode(errors="replace").strip()[-2000:]

        try:
            yield read
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _tflite_param_bytes(tflite: bytes) -> int:
    """Bytes of constant buffers (weights, biases) in a .tflite model."""
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.Model.GetRootAsModel(tflite, 0)
    return int(sum(m.Buffers(i).DataLength() for i in range(m.BuffersLength())))


_EDGETPU_OPS = re.compile(r"Number of operations that will run on (Edge TPU|CPU):\s*(\d+)")


def find_edgetpu_compiler() -> str | None:
    return shutil.which(EDGETPU_COMPILER)


def _compile_edgetpu(compiler: str | None, head: Path, out_dir: Path) -> dict[str, Any]:
    """Run edgetpu_compiler on one head; record how many ops it mapped where."""
    if compiler is None:
        return {"status": "not compiled", "reason": f"{EDGETPU_COMPILER} not found on PATH (it runs on x86-64 Linux only)"}
    try:
        proc = subprocess.run(
            [compiler, "-s", "-o", str(out_dir), str(head)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"status": "failed", "reason": f"{compiler}: {exc}"}
    compiled = out_dir / (head.stem + "_edgetpu.tflite")
    counts = {name: int(n) for name, n in _EDGETPU_OPS.findall(proc.stdout)}
    if proc.returncode != 0 or not compiled.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"status": "failed", "reason": f"exit {proc.returncode}: {' | '.join(tail)}"}
    version = re.search(r"Edge TPU Compiler version ([\w.]+)", proc.stdout)
    return {
        "status": "compiled",
        "compiler_version": version.group(1) if version else "",
        "ops_on_edgetpu": counts.get("Edge TPU", 0),
        "ops_on_cpu": counts.get("CPU", 0),
    }


# --------------------------------------------------------------------------- driver


@dataclass
class PartitionOptions:
    output: Path
    calibration_dir: Path | None = None
    calibration_random: int | None = None
    splits: list[int] | None = None
    min_agreement: float | None = None  # None: 0.98 for trained models, recorded only for random weights
    jobs: int | None = None  # None: 1 for small models, 2 for big ones
    input_size: int | None = None
    force: bool = False
    edgetpu_compiler: str | None = field(default_factory=find_edgetpu_compiler)
    max_cut_tensors: int = DEFAULT_MAX_CUT_TENSORS


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, stream: Any = None, width: int = 28):
        self.total, self.done, self.width = total, 0, width
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.t0 = time.perf_counter()

    def update(self, label: str, advance: int = 1) -> None:
        self.done += advance
        filled = int(self.width * self.done / max(1, self.total))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {label} ({time.perf_counter() - self.t0:.0f}s)"
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def partition(
    src: ModelSource, opts: PartitionOptions, progress: Callable[[int], Progress] | None = None
) -> Manifest:
    """Partition `src` into a bundle at opts.output; returns the manifest written."""
    t_start = time.perf_counter()
    tf = import_tensorflow()
    out = opts.output
    model = as_functional(src.model)
    cuts, K = find_cut_points(model, opts.max_cut_tensors)
    available = [c.split for c in cuts]
    wanted = set(available)
    if opts.splits is not None:
        bad = [k for k in opts.splits if k not in wanted]
        if bad:
            raise PartitionError(f"--splits: {bad} are not candidate splits of {src.name}; candidates: {available}")
        wanted = set(opts.splits) | {0, K}  # all-cloud and all-edge are always there
    splits = sorted(wanted)
    # Only now touch the output: a bad --splits must not leave (or, with --force, destroy) a bundle.
    _prepare_output(out, opts.force)
    (out / "edge").mkdir(parents=True, exist_ok=True)
    (out / "cloud").mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / ".work").mkdir(parents=True, exist_ok=True)
    enforce = src.trained if opts.min_agreement is None else True
    default_agreement = DEFAULT_MIN_DETECTION_AGREEMENT if src.detection else DEFAULT_MIN_AGREEMENT
    min_agreement = default_agreement if opts.min_agreement is None else opts.min_agreement
    if not enforce:
        log.warning("%s has random weights: split agreement is recorded, not enforced", src.name)

    cal_raw, val_raw, val_labels = load_calibration(src, opts.calibration_dir, opts.calibration_random)
    pre = src.preprocessing
    calibration = pre.apply_batch(cal_raw)
    validation = pre.apply_batch(val_raw)
    predicted = model.predict(validation, verbose=0, batch_size=32)
    if len(model.outputs) == 1:  # a classifier's scores, flat as a single-output manifest has always had them
        reference = [np.asarray(predicted).reshape(len(validation), -1)]
    else:
        reference = [np.asarray(p) for p in predicted]
    detection = src.detection
    truth = src.validation_boxes if opts.calibration_dir is None else None
    accuracy = _detection_accuracy(reference, detection, truth) if detection else None
    extra: dict[str, np.ndarray] = {"labels": val_labels} if val_labels is not None else {}
    if src.validation_boxes is not None and opts.calibration_dir is None:
        # ground truth of a detector's held-out frames: rows (frame, class, x0, y0, x1, y1), input pixels
        extra["boxes"] = np.array([[i, o["class"], *o["box"]] for i, objs in enumerate(src.validation_boxes) for o in objs],
                                  np.float32).reshape(-1, 6)
    save_npz: Any = np.savez_compressed  # numpy's stub reads **arrays as its allow_pickle flag
    save_npz(out / "data" / "validation.npz", inputs=val_raw, **extra)
    digest = model_digest(model)

    # The full float model is tail_0; workers load it from there.
    model_path = out / "cloud" / "tail_0.keras"
    model.save(model_path)
    work = out / ".work"
    np.save(work / "cal.npy", calibration)
    np.save(work / "val.npy", validation)
    save_npz(work / "ref.npz", **{f"out_{i}": r for i, r in enumerate(reference)})
    params = model.count_params()
    jobs = opts.jobs or (1 if params < 5_000_000 else min(2, os.cpu_count() or 1))
    bar = (progress or (lambda n: Progress(n)))(len(splits))
    log.info("partitioning %s: %d layers, %d candidate splits, building %s with %d job(s)", src.name, K, len(available), splits, jobs)

    def make_jobs(input_quant: dict | None) -> Iterable[_Job]:
        for k in splits:
            yield _Job(out, k, K, input_quant, min_agreement, enforce, opts.edgetpu_compiler)

    results: dict[int, dict] = {}
    init_args = (str(model_path), pre.to_dict(), str(work / "cal.npy"), str(work / "val.npy"), str(work / "ref.npz"),
                 opts.max_cut_tensors, detection)
    # head_K first: its input quantization is what the edge uses to send k = 0.
    all_jobs = list(make_jobs(None))
    last = all_jobs.pop(-1)
    if jobs == 1:
        global _shared
        _shared = _Shared(model, {c.split: c for c in cuts}, pre, calibration, validation, reference, detection)
        results[K] = _build_split(last)
        bar.update(f"split {K}")
        input_quant = results[K]["input_quantization"]
        for job in all_jobs:
            job.input_quant = input_quant
            results[job.split] = _build_split(job)
            bar.update(f"split {job.split}")
    else:
        ctx = multiprocessing.get_context("spawn")  # TensorFlow does not survive fork
        with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=init_args) as pool:
            results[K] = pool.submit(_build_split, last).result()
            bar.update(f"split {K}")
            input_quant = results[K]["input_quantization"]
            futures = {}
            for job in all_jobs:
                job.input_quant = input_quant
                futures[pool.submit(_build_split, job)] = job.split
            for fut in cf.as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(f"split {futures[fut]}")
    shutil.rmtree(work, ignore_errors=True)

    specs = [SplitSpec.from_dict(results[k]["spec"]) for k in splits]
    failed = [s for s in specs if not s.verification["passed"]]
    input_q = Quantization.from_dict(input_quant)
    in_shape = (1, pre.height, pre.width, pre.channels)
    if len(reference) == 1:
        out_specs = [TensorSpec("output", (1, reference[0].shape[1]), "float32", None)]
    else:
        out_specs = [TensorSpec(tensor_name(t), (1, *r.shape[1:]), "float32", None)
                     for t, r in zip(model.outputs, reference, strict=True)]
    manifest = Manifest(
        model_name=src.name,
        model_digest=digest,
        num_layers=K,
        source=src.source,
        labels=src.labels,
        input=TensorSpec("input", in_shape, "float32", None),
        input_wire=TensorSpec("input", in_shape, "uint8", input_q),
        preprocessing=pre,
        output=out_specs[0],
        outputs=out_specs,
        detection=detection,
        splits=specs,
        validation=Artifact.of(out, "data/validation.npz"),
        partition={
            "candidate_splits": available,
            "max_cut_tensors": opts.max_cut_tensors,
            **({"accuracy": accuracy} if accuracy else {}),
            "cut_tensors": {str(c.split): len(c.tensors) for c in cuts if 0 < c.split < K},
            "calibration": (
                f"dir:{opts.calibration_dir}" if opts.calibration_dir else
                f"random:{len(cal_raw)}" if (opts.calibration_random or src.calibration is None) else f"builtin:{len(cal_raw)}"
            ),
            "min_agreement": min_agreement,
            "agreement_enforced": enforce,
            "edgetpu_compiler": opts.edgetpu_compiler or None,
            "jobs": jobs,
            "seconds": round(time.perf_counter() - t_start, 2),
            "tensorflow": tf.__version__,
        },
        created_by=f"splitpoint {splitpoint.__version__}",
    )
    if enforce and failed:
        worst = min(failed, key=lambda s: s.verification["agreement"])
        raise VerificationError(
            f"{len(failed)} split(s) agree with the float model on fewer than {min_agreement:.0%} of "
            f"{worst.verification['samples']} held-out inputs: "
            + ", ".join(f"k={s.split}: {s.verification['agreement']:.1%}" for s in failed)
            + f" (worst k={worst.split}). Give better calibration data (--calibration DIR) or lower --min-agreement. "
            "No manifest was written."
        )
    manifest.write(out)
    load_bundle(out)  # what we wrote must load and verify
    return manifest


def _detection_accuracy(reference: list[np.ndarray], detection: dict, truth: list | None) -> dict | None:
    """The float model's detections on the held-out frames against their ground truth, when known."""
    if truth is None or len(truth) != len(reference[0]):
        return None
    from splitpoint.detection import decode_batch
    from splitpoint.verify import detection_agreement

    gt = [[{"class": o["class"], "score": 1.0, "box": o["box"]} for o in objs] for objs in truth]
    recall, precision, n = detection_agreement(gt, decode_batch(reference, detection))
    return {"against": "synthetic ground truth of the held-out frames (IoU >= 0.5, same class)",
            "objects": n, "recall": round(recall, 4), "precision": round(precision, 4)}


def _prepare_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PartitionError(f"-o {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise PartitionError(f"-o {out}: directory is not empty; use --force to replace the bundle in it")
        if not (out / MANIFEST).exists() and not (out / "edge").exists():
            raise PartitionError(f"-o {out}: not empty and not a bundle; refusing to delete it even with --force")
        (out / MANIFEST).unlink(missing_ok=True)  # invalid first, so a crash below leaves no stale bundle
        for sub in ("edge", "cloud", "data", ".work"):
            shutil.rmtree(out / sub, ignore_errors=True)
