"""Checking a request against the manifest before anything runs.

Every refusal is a RequestError with the status code the wire contract gives
it and a message that names the field and the bad value.
"""

from __future__ import annotations

import grpc
import numpy as np

from splitpoint.bundle import Manifest, SplitSpec, TensorSpec, split_ranges
from splitpoint.codec import decode, dtype_name
from splitpoint.errors import RequestError, TensorError
from splitpoint.v1 import offload_pb2, tensor_pb2
from splitpoint.wire_metadata import NO_SUCH_SPLIT_DETAILS, OTHER_BUNDLE_DETAILS


def validate_request(req: offload_pb2.InferRequest, manifest: Manifest, max_tensor_bytes: int) -> tuple[SplitSpec, np.ndarray]:
    """(split spec, float32 tail input of batch 1) or RequestError; the first input of a
    multi-tensor cut (validate_tensors gives them all)."""
    spec, arrays = validate_tensors(req, manifest, max_tensor_bytes)
    return spec, arrays[0]


def validate_tensors(req: offload_pb2.InferRequest, manifest: Manifest,
                     max_tensor_bytes: int) -> tuple[SplitSpec, list[np.ndarray]]:
    """(split spec, one float32 tail input of batch 1 per cut tensor, in the manifest's order)
    or RequestError naming the missing, extra or malformed tensor."""
    if req.model_digest != manifest.model_digest:
        raise RequestError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"model_digest {_short(req.model_digest) if req.model_digest else '(empty)'!r} does not match the server's bundle "
            f"{manifest.model_digest!r} ({manifest.model_name}): {OTHER_BUNDLE_DETAILS}",
        )
    k = req.split
    try:
        spec = manifest.split(k)
    except Exception:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"split {k} {NO_SUCH_SPLIT_DETAILS}; its splits: {split_ranges(manifest.split_ids)}") from None
    if spec.tail is None:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f"split {k} runs the whole model on the edge; there is no tail to run"
        )
    messages = _match_tensors(req, spec)
    arrays = []
    for i, msg, want in messages:
        field = f"tensors[{i}]" if len(spec.cut) == 1 else f"tensors[{i}] ({want.name!r})"
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
    return spec, arrays


def _match_tensors(req: offload_pb2.InferRequest, spec: SplitSpec) -> list[tuple[int, tensor_pb2.Tensor, TensorSpec]]:
    """(position in the request, tensor, what the manifest wants), in the manifest's order.

    The tensors of a multi-tensor cut are matched by name. A single-tensor cut, or a
    request whose tensors are all unnamed, is matched by position, as before cuts had
    several tensors (agents then named the tensor loosely).
    """
    k, want = spec.split, spec.cut
    names = ", ".join(repr(t.name) for t in want)
    if len(want) <= 1 or not any(m.name for m in req.tensors):
        if len(req.tensors) != len(want):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"tensors: {len(req.tensors)} given, split {k} takes {len(want)} ({names})")
        return [(i, m, w) for i, (m, w) in enumerate(zip(req.tensors, want, strict=True))]
    given: dict[str, int] = {}
    for i, m in enumerate(req.tensors):
        if m.name in given:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"tensors[{i}]: tensor {_short(m.name)!r} is given twice; split {k} takes {names}")
        given[m.name] = i
    wanted = {t.name for t in want}
    extra = [n for n in given if n not in wanted]
    if extra:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"tensors[{given[extra[0]]}]: tensor {_short(extra[0])!r} is not part of split {k}, "
                           f"which takes {names}")
    missing = [t.name for t in want if t.name not in given]
    if missing:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"tensors: tensor {missing[0]!r} is missing; split {k} takes {names}")
    return [(given[w.name], req.tensors[given[w.name]], w) for w in want]


def _short(value: object, limit: int = 120) -> str:
    """A peer's value for an error message, cut short: a 30 MB digest is not echoed back."""
    shown = value if isinstance(value, str) else repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _safe_dtype_name(value: int) -> str:
    try:
        return dtype_name(value)
    except TensorError:
        return f"unknown dtype {value}"
