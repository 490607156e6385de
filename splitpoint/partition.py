"""The partitioner: a float Keras model -> a bundle of int8 heads and float tails.

For every candidate split k (the first k layers on the edge):
  edge/head_<k>.tflite   full-integer int8, uint8 input, calibrated on representative frames
  cloud/tail_<k>.keras   float, taking the dequantized cut tensor(s), returning every output
and, when edgetpu_compiler is on PATH, edge/head_<k>_edgetpu.tflite with its op counts.
Every split is verified (head -> dequantize -> tail against the float model on
held-out frames; splitpoint/verify.py) before the manifest, written last, makes
the bundle valid.

This module is the driver: which splits, the reference outputs, the workers, the
manifest. What it reads is in splitpoint/partition_inputs.py; one split is built in
splitpoint/split_build.py (conversion: splitpoint/convert.py; the Edge TPU compile:
splitpoint/edgetpu_compile.py), in this process or in workers that may crash
(splitpoint/split_workers.py); a detector's decoder settings are checked against the
model by splitpoint/detection_config.py before anything is written.

Candidate splits are cuts whose frontier is at most --max-cut-tensors tensors
(splitpoint/cut_points.py, splitpoint/cuts.py): with 1, the points where one tensor carries all state
forward (every layer boundary of a chain, none inside a residual block); with
more, also cuts through skip connections and feature pyramids, whose heads have
one output per cut tensor.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import splitpoint
from splitpoint.bundle import (
    Artifact,
    Manifest,
    SplitSpec,
    TensorSpec,
    load_bundle,
    split_ranges,
)
from splitpoint.codec import Quantization
from splitpoint.cut_points import as_functional, find_cut_points, tensor_name
from splitpoint.detection_config import check_binary_scores, check_outputs
from splitpoint.edgetpu_compile import EDGETPU_COMPILER, compile_edgetpu, find_edgetpu_compiler
from splitpoint.errors import PartitionError, VerificationError
from splitpoint.models import ModelSource
from splitpoint.partition_inputs import load_calibration, load_model_source
from splitpoint.partition_output import staged_output
from splitpoint.runtime.tf import import_tensorflow
from splitpoint.split_build import Job, Shared, build_split, use_in_process
from splitpoint.split_workers import Build, InProcess, Workers, control_flow_ops, converter_advice
from splitpoint.verify import agreement_rule, one_value

# Re-exported: callers and tests import these from the partitioner.
__all__ = ["EDGETPU_COMPILER", "PartitionOptions", "Progress", "as_functional", "compile_edgetpu",
           "find_cut_points", "load_calibration", "load_model_source", "model_digest", "parse_splits", "partition"]

log = logging.getLogger(__name__)

DEFAULT_MIN_AGREEMENT = 0.98
#: a detector's default: detection agreement (both ways, IoU >= 0.5, same class; splitpoint/verify.py)
DEFAULT_MIN_DETECTION_AGREEMENT = 0.95
#: cuts may carry up to this many tensors (--max-cut-tensors); 1 = single-tensor cut points only
DEFAULT_MAX_CUT_TENSORS = 4


def model_digest(model: Any) -> str:
    """sha256 of the architecture and the weights: the same model gives the same digest."""
    h = hashlib.sha256(model.to_json().encode())
    for w in model.weights:
        arr = np.ascontiguousarray(np.asarray(w.numpy() if hasattr(w, "numpy") else w))
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return "sha256:" + h.hexdigest()


#: the largest split number `--splits` takes (MobileNetV2 has 155 layers, a ResNet-152 about 500)
MAX_SPLIT = 100_000


def parse_splits(text: str) -> list[int]:
    """'3,5,8-10' -> [3, 5, 8, 9, 10]; names the bad item otherwise. No split at all is an error
    (`--splits ""` built every split), and so is a range longer than any model (`1-99999999999`
    was expanded first: an out-of-memory exit 1)."""
    out: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", item)  # ASCII: \d also matches "\uff15"
        if not m:
            raise PartitionError(f"--splits: {item!r} is not a split number or a range like 3-7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise PartitionError(f"--splits: range {item!r} runs backwards")
        if hi > MAX_SPLIT:
            raise PartitionError(f"--splits: {hi} is more layers than any model has (at most {MAX_SPLIT})")
        out.extend(range(lo, hi + 1))
    if not out:
        raise PartitionError(f"--splits: {text!r} names no split; give numbers and ranges, e.g. --splits 3,5,8-10")
    return sorted(set(out))


# --------------------------------------------------------------------------- driver


def _workers_to_use(asked: int | None, params: int, splits: int) -> int:
    """How many splits to convert at once (`asked`: --jobs; None: 1 for small models, 2 for big
    ones): at most one per CPU this process may use (conversion is CPU-bound, and each worker holds
    its own TensorFlow and model, ~0.5 GB) and one per split built after head K (which is built
    alone, first). More only costs memory: `--jobs 100000` would start 100,000 processes. Asked
    for more than one, the splits are still built in worker processes (a converter crash is survived)."""
    get = getattr(os, "sched_getaffinity", None)
    cpus = len(get(0)) if get is not None else (os.cpu_count() or 1)
    most = max(1, min(cpus, splits - 1))
    if asked is None:
        return min(1 if params < 5_000_000 else 2, most)
    if asked > most:
        log.warning("--jobs %d: converting %d split(s) at once (%d CPU(s) here, %d split(s) after head K)",
                    asked, most, cpus, splits - 1)
    return min(asked, most)


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
    #: a detector's decoder settings (splitpoint/detection_config.py); None: the model source's own
    detection: dict | None = None
    #: class labels for the manifest; None: the model source's own
    labels: list[str] | None = None
    #: where each detection key and the labels came from, to name them in an error (the CLI's
    #: flags and file: detection_config.build's); None: `detection.KEY` and `labels`
    detection_origins: dict[str, str] | None = None


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
    src: ModelSource, opts: PartitionOptions, progress: Callable[[int], Progress] | None = None,
    build: Build = build_split,
) -> Manifest:
    """Partition `src` into a bundle at opts.output; returns the manifest written. `build` builds one
    split (in this process or a worker, which gets it pickled): tests pass one that dies by a signal."""
    t_start = time.perf_counter()
    tf = import_tensorflow()
    model = as_functional(src.model)
    cuts, K = find_cut_points(model, opts.max_cut_tensors)
    available = [c.split for c in cuts]
    wanted = set(available)
    if opts.splits is not None:
        bad = [k for k in opts.splits if k not in wanted]
        if bad:
            what = "is not a candidate split" if len(set(bad)) == 1 else "are not candidate splits"
            raise PartitionError(f"--splits: {split_ranges(bad)} {what} of {src.name}; candidates: {split_ranges(available)}")
        wanted = set(opts.splits) | {0, K}  # all-cloud and all-edge are always there
    splits = sorted(wanted)
    detection = opts.detection if opts.detection is not None else src.detection
    labels = opts.labels if opts.labels is not None else src.labels
    check_outputs(src.name, [tuple(o.shape) for o in model.outputs],
                  (src.preprocessing.height, src.preprocessing.width), detection, opts.labels,
                  opts.detection_origins)
    # Read (and judge) the frames before the output is touched: a set that cannot calibrate writes nothing.
    cal_raw, val_raw, val_labels = load_calibration(src, opts.calibration_dir, opts.calibration_random)
    # Only now touch the output: bad --splits or frames must not leave (or, with --force, destroy) a bundle.
    # -o must not hold what the run reads: with --force (or even empty) the bundle would replace it
    inputs = [Path(src.source)] if not src.source.startswith("builtin:") else []
    inputs += [opts.calibration_dir] if opts.calibration_dir is not None else []
    with staged_output(opts.output, opts.force, inputs) as out:
        for sub in ("edge", "cloud", "data", ".work"):
            (out / sub).mkdir()
        enforce = src.trained if opts.min_agreement is None else True
        default_agreement = DEFAULT_MIN_DETECTION_AGREEMENT if detection else DEFAULT_MIN_AGREEMENT
        min_agreement = default_agreement if opts.min_agreement is None else opts.min_agreement
        if not enforce:
            log.warning("%s has random weights: split agreement is recorded, not enforced", src.name)

        pre = src.preprocessing
        calibration = pre.apply_batch(cal_raw)
        validation = pre.apply_batch(val_raw)
        predicted = model.predict(validation, verbose=0, batch_size=32)
        if len(model.outputs) == 1:  # a classifier's scores, flat as a single-output manifest has always had them
            reference = [np.asarray(predicted).reshape(len(validation), -1)]
        else:
            reference = [np.asarray(p) for p in predicted]
        if opts.labels is not None and detection is None and len(reference) == 1 and one_value(reference[0]):
            check_binary_scores(src.name, reference[0], opts.labels, (opts.detection_origins or {}).get("labels"))
        rule = agreement_rule(reference, detection)
        if detection is None and any(one_value(r) for r in reference):  # not top-1: say what it is
            log.info("%s: verifying splits by value agreement - %s", src.name, rule)
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
        jobs = _workers_to_use(opts.jobs, params, len(splits))
        # A crash of the converter (a signal, not an exception) is survived by the partitioner only in a
        # worker process; one costs ~5 s, so small models without control flow stay in this process
        # (splitpoint/split_workers.py says why and what was measured), whose own death the command
        # line's parent process tells (splitpoint/partition_guard.py).
        flow = control_flow_ops(tf, model)
        isolated = jobs > 1 or (opts.jobs or 1) > 1 or bool(flow)  # --jobs 2 isolates even when capped to 1
        bar = (progress or (lambda n: Progress(n)))(len(splits))
        log.info("partitioning %s: %d layers, %d candidate splits, building %s with %d job(s)%s", src.name, K,
                 len(available), splits, jobs,
                 f" in a worker process (control flow: {', '.join(sorted(flow))})" if flow and jobs == 1 else "")

        results: dict[int, dict] = {}
        init_args = (str(model_path), pre.to_dict(), str(work / "cal.npy"), str(work / "val.npy"), str(work / "ref.npz"),
                     opts.max_cut_tensors, detection)
        all_jobs = [Job(out, k, K, None, min_agreement, enforce, opts.edgetpu_compiler) for k in splits]
        last = all_jobs.pop(-1)
        shown = src.name if src.source.startswith("builtin:") else src.source
        if not isolated:
            use_in_process(Shared(model, {c.split: c for c in cuts}, pre, calibration, validation, reference, detection))
        runner = (Workers(jobs, init_args, work, shown, converter_advice(flow), build) if isolated
                  else InProcess(build))
        with runner:
            # head_K first: its input quantization is what the edge uses to send k = 0.
            for k, result in runner.run([last]):
                results[k] = result
                bar.update(f"split {k}")
            input_quant = _whole_model_head(src.name, K, results[K])
            for job in all_jobs:
                job.input_quant = input_quant
            for k, result in runner.run(all_jobs):
                results[k] = result
                bar.update(f"split {k}")
        shutil.rmtree(work, ignore_errors=True)

        skipped = _skip_empty_heads(src.name, results, opts.splits)
        splits = [k for k in splits if k not in skipped]
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
            labels=labels,
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
                **({"skipped_splits": {str(k): why for k, why in skipped.items()}} if skipped else {}),
                "calibration": (
                    f"dir:{opts.calibration_dir}" if opts.calibration_dir else
                    f"random:{len(cal_raw)}" if (opts.calibration_random or src.calibration is None) else f"builtin:{len(cal_raw)}"
                ),
                "min_agreement": min_agreement,
                "agreement_enforced": enforce,
                "agreement_rule": rule,
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
                + f" (worst k={worst.split}"
                + (f"; {rule}" if "value_agreement" in worst.verification else "")
                + "). Give better calibration data (--calibration DIR) or lower --min-agreement. "
                "No manifest was written."
            )
        manifest.write(out)
        load_bundle(out)  # what we wrote must load and verify
    return manifest


_NO_INT8 = "convert to no int8 computation (they pass the input through unchanged)"


def _whole_model_head(name: str, K: int, result: dict) -> dict:
    """head_K's input quantization (how the edge sends k = 0); a model whose every layer passes its
    input through has nothing to run on the edge at all: refused."""
    if "skipped" in result:
        raise PartitionError(f"{name}: its first {K} layer(s) (up to {result['skipped']!r}) {_NO_INT8}, so "
                             "there is nothing to run on the edge; partition a model with layers that compute "
                             "(Conv2D, Dense, ...)")
    quant: dict = result["input_quantization"]
    return quant


def _skip_empty_heads(name: str, results: dict[int, dict], asked: list[int] | None) -> dict[int, str]:
    """Splits whose heads compute nothing (a leading Dropout, a linear Activation): they would
    send what k = 0 sends, so they are left out, with a log line - unless --splits asked for one,
    which is refused naming it. Returns {split: why} for the manifest's partition.skipped_splits."""
    empty = {k: r["skipped"] for k, r in sorted(results.items()) if "skipped" in r}
    wanted = sorted(set(empty) & set(asked or ()))
    if wanted:
        k = wanted[-1]
        raise PartitionError(f"--splits: split {split_ranges(wanted)} of {name} computes nothing on the edge: its "
                             f"first {k} layer(s) (up to {empty[k]!r}) {_NO_INT8}, so it would send what split 0 "
                             "sends; leave it out of --splits")
    if empty:
        last = max(empty)
        one = len(empty) == 1
        log.info("%s: skipped split%s %s: the layers up to %r %s, so %s would only send what split 0 sends",
                 name, "" if one else "s", split_ranges(sorted(empty)), empty[last], _NO_INT8,
                 "its head" if one else "their heads")
    return {k: f"computes nothing: the layers up to {layer!r} {_NO_INT8}" for k, layer in empty.items()}


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
