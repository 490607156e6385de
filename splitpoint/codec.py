"""Tensor codec: numpy arrays <-> splitpoint.v1.Tensor.

Decoding validates everything a peer could get wrong or forge (dtype, shape,
element count against byte length, size bounds, quantization parameters) and
raises TensorError naming the field and the bad value. Decoding is zero-copy
for uncompressed data: the array is a read-only view of the message's bytes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from splitpoint.errors import TensorError, TensorTooLargeError
from splitpoint.v1 import tensor_pb2

#: default upper bound on one decoded tensor (bytes after decompression)
DEFAULT_MAX_TENSOR_BYTES = 64 * 1024 * 1024
MAX_RANK = 8

_DTYPES: dict[int, np.dtype] = {
    tensor_pb2.DTYPE_INT8: np.dtype("<i1"),
    tensor_pb2.DTYPE_UINT8: np.dtype("<u1"),
    tensor_pb2.DTYPE_INT16: np.dtype("<i2"),
    tensor_pb2.DTYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DTYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DTYPE_FLOAT64: np.dtype("<f8"),
}
# the wire's enum values by numpy name, typed as the enum the generated message fields take
_ENUM_BY_NAME: dict[str, tensor_pb2.DType] = {
    np.dtype(v).name: tensor_pb2.DType.Value(tensor_pb2.DType.Name(k)) for k, v in _DTYPES.items()
}
_QUANTIZED_DTYPES = {"int8", "uint8", "int16", "int32"}


def dtype_name(enum_value: int) -> str:
    """'int8' for DTYPE_INT8 and so on; the manifest and configs use these names."""
    if enum_value not in _DTYPES:
        raise TensorError("dtype", enum_value, f"unknown dtype; known: {sorted(_ENUM_BY_NAME)}")
    return _DTYPES[enum_value].name


def dtype_enum(name: str | np.dtype) -> tensor_pb2.DType:
    key = np.dtype(name).name
    if key not in _ENUM_BY_NAME:
        raise TensorError("dtype", key, f"not supported on the wire; supported: {sorted(_ENUM_BY_NAME)}")
    return _ENUM_BY_NAME[key]


@dataclass(frozen=True)
class Quantization:
    """real = scale * (q - zero_point); per tensor (one value) or per `axis`."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int) -> Quantization:
        return cls((float(scale),), (int(zero_point),), 0)

    def to_dict(self) -> dict:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.axis}

    @classmethod
    def from_dict(cls, d: dict) -> Quantization:
        return cls(tuple(float(s) for s in d["scale"]), tuple(int(z) for z in d["zero_point"]), int(d.get("axis", 0)))

    def validate(self, dtype: np.dtype, shape: Sequence[int], field: str = "quantization") -> None:
        if not self.scale:
            raise TensorError(f"{field}.scale", list(self.scale), "empty")
        if len(self.zero_point) != len(self.scale):
            raise TensorError(
                f"{field}.zero_point", list(self.zero_point), f"has {len(self.zero_point)} values for {len(self.scale)} scales"
            )
        for s in self.scale:
            if not (math.isfinite(s) and s > 0):
                raise TensorError(f"{field}.scale", s, "must be finite and > 0")
        if dtype.name not in _QUANTIZED_DTYPES:
            raise TensorError(f"{field.rsplit('.', 1)[0]}.dtype" if "." in field else "dtype", dtype.name, f"quantized tensors must be one of {sorted(_QUANTIZED_DTYPES)}")
        info = np.iinfo(dtype)
        for z in self.zero_point:
            if not info.min <= z <= info.max:
                raise TensorError(f"{field}.zero_point", z, f"outside the {dtype.name} range [{info.min}, {info.max}]")
        if len(self.scale) > 1:
            if not 0 <= self.axis < len(shape):
                raise TensorError(f"{field}.axis", self.axis, f"not an axis of shape {list(shape)}")
            if shape[self.axis] != len(self.scale):
                raise TensorError(
                    f"{field}.scale", f"{len(self.scale)} values",
                    f"per-axis quantization needs shape[{self.axis}] = {shape[self.axis]} values",
                )

    def _broadcast(self, values: Sequence[float], ndim: int) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float32)
        if arr.size == 1:
            return arr.reshape(())
        shape = [1] * ndim
        shape[self.axis] = arr.size
        return arr.reshape(shape)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        scale = self._broadcast(self.scale, q.ndim)
        zp = self._broadcast(self.zero_point, q.ndim)
        return (q.astype(np.float32) - zp) * scale

    def quantize(self, x: np.ndarray, dtype: npt.DTypeLike) -> np.ndarray:
        dtype = np.dtype(dtype)
        info = np.iinfo(dtype)
        scale = self._broadcast(self.scale, x.ndim)
        zp = self._broadcast(self.zero_point, x.ndim)
        q = np.round(np.asarray(x, dtype=np.float32) / scale) + zp
        # clip in float64: float32(int32 max) rounds up to 2**31, which wraps to int32 min
        return np.clip(q.astype(np.float64), info.min, info.max).astype(dtype)


@dataclass(frozen=True)
class DecodedTensor:
    name: str
    array: np.ndarray
    quantization: Quantization | None

    def dequantized(self) -> np.ndarray:
        """float32 values: dequantized when quantized, else the array as float32."""
        if self.quantization is None:
            return self.array.astype(np.float32, copy=False)
        return self.quantization.dequantize(self.array)


def encode(
    array: np.ndarray,
    name: str = "",
    quantization: Quantization | None = None,
    compression: tensor_pb2.Compression = tensor_pb2.COMPRESSION_NONE,
) -> tensor_pb2.Tensor:
    array = np.asarray(array)
    enum = dtype_enum(array.dtype)
    little = array.astype(_DTYPES[enum], copy=False)  # no copy when already little-endian
    if quantization is not None:
        quantization.validate(little.dtype, little.shape)
    data = little.tobytes(order="C")  # protobuf needs a bytes object: the one copy
    if compression == tensor_pb2.COMPRESSION_ZLIB:
        data = zlib.compress(data, 1)
    elif compression != tensor_pb2.COMPRESSION_NONE:
        raise TensorError("compression", compression, "unknown compression")
    msg = tensor_pb2.Tensor(name=name, dtype=enum, shape=list(little.shape), data=data, compression=compression)
    if quantization is not None:
        msg.quantization.scale.extend(quantization.scale)
        msg.quantization.zero_point.extend(quantization.zero_point)
        msg.quantization.axis = quantization.axis
    return msg


def decode(msg: tensor_pb2.Tensor, max_bytes: int = DEFAULT_MAX_TENSOR_BYTES, field: str = "tensor") -> DecodedTensor:
    if msg.dtype not in _DTYPES:
        raise TensorError(f"{field}.dtype", msg.dtype, f"unknown dtype; known: {sorted(_ENUM_BY_NAME)}")
    dtype = _DTYPES[msg.dtype]
    shape = list(msg.shape)
    if len(shape) > MAX_RANK:
        raise TensorError(f"{field}.shape", shape, f"rank {len(shape)} is over the limit of {MAX_RANK}")
    for i, dim in enumerate(shape):
        if dim < 0:
            raise TensorError(f"{field}.shape[{i}]", dim, "dimensions must be >= 0")
        if dim > max_bytes:  # even with a zero elsewhere: numpy cannot work on such a shape
            raise TensorTooLargeError(f"{field}.shape", shape, f"dimension {i} is over the size limit of {max_bytes}")
    count = 1
    for dim in shape:
        count *= dim  # Python ints: no overflow, so a forged huge shape is caught below
    nbytes = count * dtype.itemsize
    if nbytes > max_bytes:
        raise TensorTooLargeError(f"{field}.shape", shape, f"declares {nbytes} bytes, over the limit of {max_bytes}")
    data = msg.data
    if msg.compression == tensor_pb2.COMPRESSION_ZLIB:
        try:
            inflater = zlib.decompressobj()
            data = inflater.decompress(data, nbytes + 1)  # bounded: a zip bomb stops here
        except zlib.error as exc:
            raise TensorError(f"{field}.data", f"{len(msg.data)} bytes", f"not valid zlib data ({exc})") from None
        if len(data) == nbytes and not inflater.eof:
            raise TensorError(f"{field}.data", f"{len(msg.data)} bytes", "truncated zlib stream (no end marker)")
        if inflater.unused_data:
            # Bytes after the end marker are not part of the tensor: accepting them would let a
            # peer smuggle data past the size checks, and they mean a broken or forged encoder.
            raise TensorError(f"{field}.data", f"{len(msg.data)} bytes",
                              f"{len(inflater.unused_data)} bytes of trailing data after the zlib stream")
    elif msg.compression != tensor_pb2.COMPRESSION_NONE:
        raise TensorError(f"{field}.compression", msg.compression, "unknown compression")
    if len(data) != nbytes:
        raise TensorError(
            f"{field}.data", f"{len(data)} bytes", f"shape {shape} of {dtype.name} needs {nbytes} bytes"
        )
    try:
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
    except ValueError as exc:  # e.g. [0, 2**40, 2**40]: no elements, but numpy cannot represent it
        raise TensorTooLargeError(f"{field}.shape", shape, f"not a representable array shape ({exc})") from None
    quantization = None
    if msg.HasField("quantization") and len(msg.quantization.scale) > 0:
        quantization = Quantization(
            tuple(msg.quantization.scale), tuple(msg.quantization.zero_point), msg.quantization.axis
        )
        quantization.validate(dtype, shape, f"{field}.quantization")
    elif msg.HasField("quantization") and len(msg.quantization.zero_point) > 0:
        raise TensorError(f"{field}.quantization.scale", [], "zero points without scales")
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise TensorError(f"{field}.data", "non-finite values", "NaN or infinity in a float tensor")
    return DecodedTensor(msg.name, array, quantization)
