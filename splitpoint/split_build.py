"""One split of a bundle, built and checked in a worker: the int8 head (splitpoint/convert.py),
its Edge TPU compile (splitpoint/edgetpu_compile.py), the float tail, and the verification of
head -> dequantize -> tail against the float model (splitpoint/verify.py).

Workers are spawned processes (TensorFlow does not survive fork) or the partitioner's own process
(splitpoint/split_workers.py decides, and turns a worker's death into an error naming its split);
`_shared` holds what every split of one model needs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitpoint.bundle import Artifact, Preprocessing, SplitSpec, TensorSpec
from splitpoint.codec import Quantization
from splitpoint.convert import convert_head, tflite_param_bytes
from splitpoint.cut_points import CutPoint, as_functional, find_cut_points, tensor_name
from splitpoint.edgetpu_compile import compile_edgetpu
from splitpoint.errors import BackendUnavailableError
from splitpoint.runtime.tf import import_tensorflow
from splitpoint.verify import verify_outputs


@dataclass
class Job:
    """What a worker needs to build and check one split (picklable)."""

    bundle: Path
    split: int
    num_layers: int
    input_quant: dict | None  # set for k = 0: how the edge quantizes the input
    min_agreement: float
    enforce: bool
    edgetpu_compiler: str | None


@dataclass
class Shared:
    model: Any
    cuts: dict[int, CutPoint]
    preprocessing: Preprocessing
    calibration: np.ndarray  # float, preprocessed
    validation: np.ndarray  # float, preprocessed
    reference: list[np.ndarray]  # float model outputs on `validation`, one array per output
    detection: dict | None = None  # the manifest's detection block: agreement on detections


_shared: Shared | None = None


def init_worker(model_path: str, pre: dict, cal_path: str, val_path: str, ref_path: str,
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
    _shared = Shared(
        model, {c.split: c for c in cuts}, Preprocessing.from_dict(pre),
        np.load(cal_path), np.load(val_path), reference, detection,
    )


def use_in_process(shared: Shared) -> None:
    """One job: build the splits in this process, from what the partitioner already holds."""
    global _shared
    _shared = shared


def build_split(job: Job) -> dict:
    """Convert, save, compile and verify one split; returns its SplitSpec as a dict + timings, or
    {"skipped": last edge layer} when its head computes nothing (converts to no int8 operation)."""
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
        tflite = convert_head(tf, head, sh.calibration)
        rel = f"edge/head_{k}.tflite"
        (job.bundle / rel).write_bytes(tflite)
        head_art = Artifact.of(job.bundle, rel)
        param_bytes = tflite_param_bytes(tflite)
        from splitpoint.runtime.litert import HeadRunner

        try:
            runner = HeadRunner(job.bundle / rel)
        except BackendUnavailableError as err:  # named by its path in the staging directory, gone once this fails
            raise BackendUnavailableError(str(err).replace(str(job.bundle / rel), f"{rel} (split {k})")) from None
        in_q = runner.input_quantization
        if in_q is None or any(q is None for q in runner.output_quantizations):
            # The converter quantizes only what computes: layers that pass their input through (a
            # linear Activation, Dropout at inference) leave a float graph with no int8 op in it.
            # Such a head would only send what k = 0 sends; the driver skips it or, for k = K or a
            # split asked for by --splits, refuses (splitpoint/partition.py, _skip_empty_heads).
            (job.bundle / rel).unlink()
            return {"skipped": cut.layer, "input_quantization": None, "seconds": time.perf_counter() - t0}
        input_quant = in_q.to_dict()
        per_frame = [runner.run_all(in_q.quantize(x[None], runner.input_dtype)) for x in sh.validation]
        head_out_val = [q.dequantize(np.concatenate([f[i] for f in per_frame]))  # type: ignore[union-attr]
                        for i, q in enumerate(runner.output_quantizations)]
        if k < K:
            cut_specs = [TensorSpec(tensor_name(t), shape, dt.name, q)
                         for t, shape, dt, q in zip(cut.tensors, runner.output_shapes, runner.output_dtypes,
                                                    runner.output_quantizations, strict=True)]
        edgetpu = compile_edgetpu(job.edgetpu_compiler, job.bundle / rel, edge_dir)
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
