"""Checking a request against the manifest before anything runs.

Every refusal is a RequestError with the status code the wire contract gives
it and a message that names the field and the bad value.
"""

from __future__ import annotations

import grpc
import numpy as np

from splitpoint.bundle import Manifest, SplitSpec
from splitpoint.codec import decode, dtype_name
from splitpoint.errors import RequestError, TensorError
from splitpoint.v1 import offload_pb2


def validate_request(req: offload_pb2.InferRequest, manifest: Manifest, max_tensor_bytes: int) -> tuple[SplitSpec, np.ndarray]:
    """(split spec, float32 tail input of batch 1) or RequestError."""
    if req.model_digest != manifest.model_digest:
        raise RequestError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"model_digest {req.model_digest or '(empty)'!r} does not match the server's bundle "
            f"{manifest.model_digest!r} ({manifest.model_name}): agent and server run different bundles",
        )
    k = req.split
    try:
        spec = manifest.split(k)
    except Exception:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"split {k} is not in the bundle; splits: {manifest.split_ids}") from None
    if spec.tail is None:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f"split {k} runs the whole model on the edge; there is no tail to run"
        )
    if len(req.tensors) != len(spec.cut):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"tensors: {len(req.tensors)} given, split {k} takes {len(spec.cut)} ({', '.join(t.name for t in spec.cut)})",
        )
    arrays = []
    for i, (msg, want) in enumerate(zip(req.tensors, spec.cut, strict=True)):
        field = f"tensors[{i}]"
        # Cheap header checks first, so a forged shape is refused before its data is touched.
        if msg.dtype and _safe_dtype_name(msg.dtype) != want.dtype:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{field}.dtype = {_safe_dtype_name(msg.dtype)}: split {k} takes {want.dtype}",
            )
        if tuple(msg.shape) != want.shape:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{field}.shape = {list(msg.shape)}: split {k} takes {list(want.shape)}"
            )
        try:
            t = decode(msg, max_bytes=max_tensor_bytes, field=field)
        except TensorError as exc:
            raise RequestError(exc.status_code, str(exc)) from None
        if want.quantization is not None and t.quantization is None:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{field}.quantization is missing: split {k} takes a quantized {want.dtype} tensor"
            )
        arrays.append(t.dequantized())
    return spec, arrays[0]


def _safe_dtype_name(value: int) -> str:
    try:
        return dtype_name(value)
    except TensorError:
        return f"unknown dtype {value}"
