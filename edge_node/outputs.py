"""Pure functions between the heads, the wire and the records, for cuts and models with
several tensors (the agent calls them; they hold no state).

- `cut_request_tensors`: a head's output -> the request's tensors, each named as the
  manifest names it, each with its own quantization.
- `decode_outputs`: a response -> every model output as float32, in the manifest's order.
- `decode_detections`: a detector's response -> its compact detections, checked.
- `local_outputs`: the k = K head's output -> the same, when the edge ran everything.
- `timing_problem`: what is wrong with an answer's server timing, if anything.
- `request_bytes`: the largest message a split's frames make (checked against max_message_mb).
"""

from __future__ import annotations

import math

import numpy as np

from splitpoint.bundle import Manifest, SplitSpec
from splitpoint.codec import decode, encode
from splitpoint.detection import COMPACT_NAME, read_compact
from splitpoint.errors import TensorError
from splitpoint.v1 import offload_pb2, tensor_pb2

from .heads import HeadOutput


def cut_request_tensors(out: HeadOutput, spec: SplitSpec) -> list[tensor_pb2.Tensor]:
    """The tensors of split `spec` for InferRequest.tensors (extend req.tensors with them)."""
    if len(out.arrays) != len(spec.cut):
        raise ValueError(f"head {spec.split} gave {len(out.arrays)} tensors, split {spec.split} takes {len(spec.cut)}")
    return [encode(a, name=t.name, quantization=q) for a, q, t in zip(out.arrays, out.quantizations, spec.cut, strict=True)]


def request_bytes(manifest: Manifest, split: int, deadline_ms: int) -> int:
    """The size of the largest InferRequest a frame of `split` makes: its cut tensors of the
    manifest's shapes and quantization, every number field at its widest (an id and a capture time
    of 2^63 - 1). Encoded, not estimated: a fixed allowance was off by a kilobyte for small cuts."""
    spec = manifest.split(split)
    req = offload_pb2.InferRequest(frame_id=2**63 - 1, model_digest=manifest.model_digest, split=split,
                                   capture_time_unix_ns=2**63 - 1, budget_ms=deadline_ms)
    req.tensors.extend(encode(np.zeros(t.shape, np.dtype(t.dtype)), name=t.name, quantization=t.quantization)
                       for t in spec.cut)
    return req.ByteSize()


def decode_outputs(resp: offload_pb2.InferResponse, manifest: Manifest) -> list[np.ndarray]:
    """Every output of a response as float32 of the manifest's shape, in the manifest's order.

    The server sends each output as plain float32 of the manifest's shape (batch axis 1),
    one tensor per output, matched by name; a response with one unnamed or differently named
    output (servers before several outputs) stands for the first. Anything else - a tensor too
    many, a name twice, another dtype, quantized, another shape even of the right size - is no
    answer of this bundle's server: TensorError naming what is wrong (the frame runs locally).
    """
    specs = manifest.outputs
    names = [t.name for t in resp.outputs]
    missing = [s.name for s in specs if s.name not in names] if len(specs) > 1 else []
    if missing:
        raise TensorError("outputs", names, f"output {missing[0]!r} is missing")
    if len(names) != len(specs):
        raise TensorError("outputs", names, f"{len(names)} output tensors, the model has {len(specs)}")
    by_name = {t.name: t for t in resp.outputs}
    chosen = [resp.outputs[0]] if len(specs) == 1 else [by_name[s.name] for s in specs]
    arrays = []
    for msg, spec in zip(chosen, specs, strict=True):
        field = f"outputs[{spec.name!r}]"
        x = decode(msg, field=field)
        if x.quantization is not None or x.array.dtype != np.float32:
            raise TensorError(field, "quantized" if x.quantization is not None else str(x.array.dtype),
                              "outputs are plain float32")
        if tuple(x.array.shape) != tuple(spec.shape):
            raise TensorError(field, list(x.array.shape), f"the manifest says shape {list(spec.shape)}")
        arrays.append(x.array)
    return arrays


def decode_detections(resp: offload_pb2.InferResponse, manifest: Manifest) -> np.ndarray:
    """A detector bundle's answer: its one tensor "detections", float32 (1, N, 6) with
    N <= max_detections and rows the decoder could give: finite, each class an integer the
    model has, scores in [0, 1], x0 <= x1 and y0 <= y1, each box centred inside the input
    (splitpoint/detection.py, from_compact). TensorError naming what is wrong otherwise."""
    names = [t.name for t in resp.outputs]
    if names != [COMPACT_NAME]:
        raise TensorError("outputs", names, f"a detector's answer is one tensor named {COMPACT_NAME!r}")
    field = f"outputs[{COMPACT_NAME!r}]"
    msg = decode(resp.outputs[0], field=field)
    if msg.quantization is not None:
        raise TensorError(field, "quantized", "detections are plain float32")
    assert manifest.detection is not None
    try:
        read_compact(msg.array, manifest)
    except ValueError as exc:
        raise TensorError(field, list(msg.array.shape), str(exc)) from None
    return msg.array


def timing_problem(timing: offload_pb2.ServerTiming) -> str | None:
    """Why an answer's server timing is unusable (None: it is not): each figure must be a finite
    number >= 0. The link estimate learns from them - transfer = round trip - total_ms, and the
    server's queue is an average of queue_ms - and one NaN left the queue estimate NaN for good
    (every later prediction NaN) and read the link as 4800 Mbps; a negative queue_ms made the
    cloud look faster than free for dozens of frames."""
    for name in ("queue_ms", "compute_ms", "total_ms"):
        value = getattr(timing, name)
        if not math.isfinite(value) or value < 0:
            return f"server timing {name} = {value!r}, not a finite number >= 0"
    return None


def local_outputs(out: HeadOutput, manifest: Manifest) -> list[np.ndarray]:
    """The k = K head's outputs dequantized, shaped as the manifest's outputs."""
    return [q.dequantize(a).astype(np.float32).reshape(spec.shape)
            for a, q, spec in zip(out.arrays, out.quantizations, manifest.outputs, strict=True)]
