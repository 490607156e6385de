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
            f"model_digest {_short(req.model_digest) if req.model_digest else '(empty)'!r} does not match the server's bundle "
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
                grpc.StatusCode.INVALID_ARGUMENT, f"{field}.shape = {_short(list(msg.shape))}: split {k} takes {list(want.shape)}"
            )
        try:
            t = decode(msg, max_bytes=max_tensor_bytes, field=field)
        except TensorError as exc:
            raise RequestError(exc.status_code, str(exc)) from None
        if want.quantization is not None and t.quantization is None:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{field}.quantization is missing: split {k} takes a quantized {want.dtype} tensor"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            x = t.dequantized()
        if not np.isfinite(x).all():
            if t.quantization is None:
                # the codec refused NaN and infinity, but a finite float64 (1e300) overflows float32
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{field}.data = {t.array.dtype.name} values: out of the float32 range (overflow to infinity)",
                )
            # finite int data and a finite scale can still overflow float32 (scale = 3e38)
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{field}.quantization.scale = {_short(list(t.quantization.scale))}: "
                "dequantized values overflow float32 (NaN or infinity)",
            )
        arrays.append(x)
    return spec, arrays[0]


def _short(value: object, limit: int = 120) -> str:
    """A peer's value for an error message, cut short: a 30 MB digest is not echoed back."""
    shown = value if isinstance(value, str) else repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _safe_dtype_name(value: int) -> str:
    try:
        return dtype_name(value)
    except TensorError:
        return f"unknown dtype {value}"
