"""Tests for splitpoint.codec: numpy arrays <-> splitpoint.v1.Tensor.

Round trips are property-tested over every wire dtype, shape (scalars and
0-size dimensions included), compression and quantization; every malformed
field a peer could send is checked to fail with a TensorError naming the
field and the value; and a fuzz test decodes arbitrary messages and checks
that nothing but a TensorError ever escapes.
"""

from __future__ import annotations

import math
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitpoint import codec
from splitpoint.codec import MAX_RANK, DecodedTensor, Quantization, decode, encode
from splitpoint.errors import SplitpointError, TensorError, TensorTooLargeError
from splitpoint.v1 import tensor_pb2

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13

NONE = tensor_pb2.COMPRESSION_NONE
ZLIB = tensor_pb2.COMPRESSION_ZLIB

#: the wire contract, written out independently of codec's own table
WIRE_DTYPES: dict[int, np.dtype] = {
    tensor_pb2.DTYPE_INT8: np.dtype("<i1"),
    tensor_pb2.DTYPE_UINT8: np.dtype("<u1"),
    tensor_pb2.DTYPE_INT16: np.dtype("<i2"),
    tensor_pb2.DTYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DTYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DTYPE_FLOAT64: np.dtype("<f8"),
}
ALL_DTYPES = [np.dtype(d).name for d in WIRE_DTYPES.values()]
QUANTIZED_DTYPES = ["int8", "uint8", "int16", "int32"]
FLOAT_DTYPES = ["float16", "float32", "float64"]

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def wire_roundtrip(msg: tensor_pb2.Tensor) -> tensor_pb2.Tensor:
    """What the peer sees: the message serialized and parsed again."""
    out = tensor_pb2.Tensor()
    out.ParseFromString(msg.SerializeToString())
    return out


def raw_tensor(dtype: str, shape, data: bytes, compression: int = NONE) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(
        dtype=codec.dtype_enum(dtype), shape=list(shape), data=data, compression=compression
    )


def assert_error(exc: TensorError, field: str, value_text: str) -> None:
    assert exc.field == field, f"field {exc.field!r}, expected {field!r} ({exc})"
    assert value_text in str(exc), f"{value_text!r} not in message {str(exc)!r}"


def assert_same_array(decoded: np.ndarray, original: np.ndarray) -> None:
    """Same dtype (as little-endian), shape and bit pattern (so -0.0 != 0.0)."""
    little = original.dtype.newbyteorder("<")
    assert decoded.dtype == little
    assert decoded.shape == original.shape
    assert decoded.tobytes() == original.astype(little).tobytes()


# --------------------------------------------------------------------------- strategies

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def plain_arrays(draw, dtypes=ALL_DTYPES):
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    elements = {"allow_nan": False, "allow_infinity": False} if dtype.kind == "f" else None
    return draw(hnp.arrays(dtype, draw(shapes), elements=elements))


def positive_scales() -> st.SearchStrategy[float]:
    # float32-representable (the wire field is `float`), finite and > 0
    return st.floats(
        min_value=0.0, exclude_min=True, max_value=float(np.finfo(np.float32).max), width=32
    )


def zero_points(dtype: np.dtype) -> st.SearchStrategy[int]:
    info = np.iinfo(dtype)
    return st.integers(int(info.min), int(info.max))


@st.composite
def quantized_arrays(draw):
    """(array, quantization): per tensor, or per axis with len(scale) == shape[axis]."""
    dtype = np.dtype(draw(st.sampled_from(QUANTIZED_DTYPES)))
    per_axis = draw(st.booleans())
    if per_axis:
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
        axis = draw(st.integers(0, len(shape) - 1))
        shape = shape[:axis] + (draw(st.integers(2, 5)),) + shape[axis + 1 :]
        n = shape[axis]
        scale = tuple(draw(st.lists(positive_scales(), min_size=n, max_size=n)))
        zp = tuple(draw(st.lists(zero_points(dtype), min_size=n, max_size=n)))
        q = Quantization(scale, zp, axis)
    else:
        shape = draw(shapes)
        q = Quantization.per_tensor(draw(positive_scales()), draw(zero_points(dtype)))
    return draw(hnp.arrays(dtype, shape)), q


# --------------------------------------------------------------------------- round trips


@FAST
@given(array=plain_arrays(), compression=st.sampled_from([NONE, ZLIB]), name=st.text(max_size=10))
def test_roundtrip_is_exact(array, compression, name):
    msg = encode(array, name=name, compression=compression)
    assert msg.compression == compression
    decoded = decode(wire_roundtrip(msg))
    assert isinstance(decoded, DecodedTensor)
    assert decoded.name == name
    assert decoded.quantization is None
    assert_same_array(decoded.array, array)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("compression", [NONE, ZLIB])
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (0, 0), (1,), (2, 3)])
def test_roundtrip_every_dtype_and_edge_shape(dtype, compression, shape):
    """The property test samples these; this makes sure every combination is seen."""
    array = (np.arange(math.prod(shape)) % 100 - 50).astype(dtype).reshape(shape)
    if dtype.startswith("u"):
        array = (np.arange(math.prod(shape)) % 200).astype(dtype).reshape(shape)
    msg = encode(array, compression=compression)
    assert msg.dtype == codec.dtype_enum(dtype)
    assert list(msg.shape) == list(shape)
    decoded = decode(wire_roundtrip(msg))
    assert_same_array(decoded.array, array)
    assert decoded.array.shape == shape


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_extreme_values_roundtrip(dtype):
    dt = np.dtype(dtype)
    info = np.finfo(dt) if dt.kind == "f" else np.iinfo(dt)
    values = [info.min, info.max, 0]
    if dt.kind == "f":
        values += [info.tiny, -info.tiny, info.smallest_subnormal, -0.0]
    array = np.array(values, dtype=dt)
    for compression in (NONE, ZLIB):
        assert_same_array(
            decode(wire_roundtrip(encode(array, compression=compression))).array, array
        )


@FAST
@given(data=quantized_arrays(), compression=st.sampled_from([NONE, ZLIB]))
def test_quantized_roundtrip(data, compression):
    array, q = data
    msg = encode(array, name="cut", quantization=q, compression=compression)
    assert msg.HasField("quantization")
    decoded = decode(wire_roundtrip(msg))
    assert_same_array(decoded.array, array)
    assert decoded.quantization == q
    with np.errstate(over="ignore"):  # huge scales legitimately overflow float32
        dq = decoded.dequantized()
    assert dq.dtype == np.float32 and dq.shape == array.shape


@FAST
@given(
    array=plain_arrays(dtypes=["int16", "int32", "int64", "float16", "float32", "float64"]),
    compression=st.sampled_from([NONE, ZLIB]),
)
def test_big_endian_encodes_to_the_same_bytes(array, compression):
    little = array.astype(array.dtype.newbyteorder("<"))
    big = array.astype(array.dtype.newbyteorder(">"))
    assert big.dtype.byteorder == ">"
    wire_little = encode(little, name="t", compression=compression).SerializeToString()
    wire_big = encode(big, name="t", compression=compression).SerializeToString()
    assert wire_big == wire_little
    decoded = decode(wire_roundtrip(encode(big, compression=compression))).array
    assert decoded.dtype.byteorder in ("<", "=")  # native little-endian on the test hosts
    assert_same_array(decoded, big)


def test_big_endian_known_bytes():
    array = np.array([1, 256], dtype=">i4")
    assert encode(array).data == b"\x01\x00\x00\x00\x00\x01\x00\x00"


@FAST
@given(array=plain_arrays())
def test_non_contiguous_input_is_sent_in_c_order(array):
    strided = np.swapaxes(np.flip(array, 0), 0, -1) if array.ndim else array
    decoded = decode(wire_roundtrip(encode(strided))).array
    assert np.ascontiguousarray(strided).tobytes() == decoded.tobytes()
    assert decoded.shape == strided.shape


def test_encode_accepts_lists_and_scalars():
    assert_same_array(decode(encode([[1, 2], [3, 4]])).array, np.array([[1, 2], [3, 4]]))
    scalar = decode(encode(np.float32(2.5))).array
    assert scalar.shape == () and scalar.dtype == np.float32 and scalar[()] == 2.5


def test_zlib_actually_compresses():
    array = np.zeros((64, 64), dtype=np.float32)
    plain, packed = encode(array), encode(array, compression=ZLIB)
    assert len(plain.data) == array.nbytes
    assert len(packed.data) < array.nbytes // 10
    assert zlib.decompress(packed.data) == array.tobytes()


# --------------------------------------------------------------------------- zero copy


@pytest.mark.parametrize("dtype", ["uint8", "float32", "int64"])
def test_uncompressed_decode_is_a_read_only_view(dtype):
    msg = wire_roundtrip(encode(np.arange(12, dtype=dtype).reshape(3, 4)))
    array = decode(msg).array
    assert array.base is not None
    assert not array.flags.owndata
    assert not array.flags.writeable
    root = array
    while isinstance(root, np.ndarray):
        root = root.base
    assert isinstance(root, bytes)  # a view of the message's bytes, not a copy
    assert bytes(root) == msg.data
    with pytest.raises(ValueError):
        array[0, 0] = 1


def test_compressed_decode_is_read_only_too():
    array = decode(wire_roundtrip(encode(np.ones((2, 3), np.float32), compression=ZLIB))).array
    assert not array.flags.writeable and not array.flags.owndata


def test_dequantized_of_float_tensor_does_not_copy():
    array = decode(encode(np.arange(4, dtype=np.float32))).array
    decoded = DecodedTensor("x", array, None)
    assert decoded.dequantized() is array


# --------------------------------------------------------------------------- quantize/dequantize

EPS32 = float(np.finfo(np.float32).eps)


def _tolerance(x, scale, zp):
    """scale/2 plus the float32 rounding of x / scale + zp and of (q - zp) * scale."""
    return scale / 2 + 8 * EPS32 * (np.abs(x) + scale * (abs(zp) + 1))


@st.composite
def in_range_values(draw):
    dtype = np.dtype(draw(st.sampled_from(QUANTIZED_DTYPES)))
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    if dtype == np.int32:  # keep q where float32 (the compute type) is exact enough
        lo, hi = -(2**20), 2**20
    zp = draw(st.integers(lo, hi))
    scale = draw(st.floats(min_value=2**-10, max_value=2**10, width=32))
    units = draw(
        st.lists(
            st.floats(min_value=lo - zp, max_value=hi - zp, allow_nan=False),
            min_size=1,
            max_size=20,
        )
    )
    x = (np.float64(scale) * np.array(units)).astype(np.float32)
    return dtype, Quantization.per_tensor(scale, zp), x


@settings(max_examples=200, deadline=None)
@given(case=in_range_values())
def test_dequantize_quantize_is_within_half_a_step(case):
    dtype, q, x = case
    wire = q.quantize(x, dtype)
    assert wire.dtype == dtype and wire.shape == x.shape
    back = q.dequantize(wire)
    assert back.dtype == np.float32
    scale, zp = q.scale[0], q.zero_point[0]
    err = np.abs(back.astype(np.float64) - x.astype(np.float64))
    assert (err <= _tolerance(x.astype(np.float64), scale, zp)).all(), (x, wire, back, err)


@pytest.mark.parametrize("dtype", QUANTIZED_DTYPES)
def test_quantize_saturates_out_of_range_values(dtype):
    info = np.iinfo(dtype)
    q = Quantization.per_tensor(1.0, 0)
    x = np.array(
        [1e30, -1e30, float(info.max) * 4, float(info.min) * 4 - 10, 0.0], dtype=np.float32
    )
    wire = q.quantize(x, dtype)
    assert wire.tolist() == [info.max, info.min, info.max, info.min, 0]


def test_quantize_known_values():
    q = Quantization.per_tensor(0.5, 10)
    wire = q.quantize(np.array([0.0, 0.5, -0.5, 1.24, 100.0, -100.0]), "uint8")
    assert wire.tolist() == [10, 11, 9, 12, 210, 0]
    assert q.dequantize(wire).tolist() == [0.0, 0.5, -0.5, 1.0, 100.0, -5.0]


@FAST
@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4),
    data=st.data(),
)
def test_per_axis_broadcasting(shape, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    dtype = np.dtype(data.draw(st.sampled_from(["int8", "uint8", "int16"])))
    scales = data.draw(st.lists(st.floats(2**-7, 16.0, width=32), min_size=n, max_size=n))
    zps = data.draw(st.lists(zero_points(dtype), min_size=n, max_size=n))
    q = Quantization(tuple(scales), tuple(zps), axis)
    q.validate(dtype, shape)
    x = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e3, 1e3, width=32)))
    wire = q.quantize(x, dtype)
    back = q.dequantize(wire)
    assert wire.shape == back.shape == shape
    for i in range(n):
        # each slice along `axis` behaves exactly like per-tensor quantization with its own parameters
        single = Quantization.per_tensor(scales[i], zps[i])
        assert np.array_equal(np.take(wire, i, axis), single.quantize(np.take(x, i, axis), dtype))
        assert np.array_equal(np.take(back, i, axis), single.dequantize(np.take(wire, i, axis)))


def test_per_axis_known_values():
    q = Quantization((1.0, 0.5, 0.25), (0, 1, -1), axis=1)
    x = np.array([[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]], dtype=np.float32)
    wire = q.quantize(x, "int8")
    assert wire.tolist() == [[1, 3, 3], [-2, -3, -9]]
    assert q.dequantize(wire).tolist() == x.tolist()


def test_decoded_dequantized_uses_the_quantization():
    q = Quantization.per_tensor(0.25, -4)
    decoded = decode(wire_roundtrip(encode(np.array([-4, 0, 4], np.int8), quantization=q)))
    assert decoded.dequantized().tolist() == [0.0, 1.0, 2.0]


def test_quantization_dict_roundtrip():
    q = Quantization((0.5, 0.25), (3, -2), axis=1)
    assert Quantization.from_dict(q.to_dict()) == q
    assert Quantization.from_dict({"scale": [1], "zero_point": [0]}) == Quantization.per_tensor(
        1, 0
    )


# --------------------------------------------------------------------------- dtype names


def test_dtype_name_and_enum_agree():
    for enum, dt in WIRE_DTYPES.items():
        assert codec.dtype_name(enum) == dt.name
        assert codec.dtype_enum(dt.name) == enum
        assert codec.dtype_enum(dt.newbyteorder(">")) == enum


@pytest.mark.parametrize("bad", [tensor_pb2.DTYPE_UNSPECIFIED, 9, -1, 1000])
def test_dtype_name_rejects_unknown_enum(bad):
    with pytest.raises(TensorError) as info:
        codec.dtype_name(bad)
    assert_error(info.value, "dtype", repr(bad))


@pytest.mark.parametrize("bad", ["bool", "complex64", "uint16", "uint32", "object"])
def test_unsupported_dtypes_are_not_encoded(bad):
    with pytest.raises(TensorError) as info:
        encode(np.zeros(2, dtype=bad))
    assert_error(info.value, "dtype", repr(bad))


def test_encode_rejects_unknown_compression():
    with pytest.raises(TensorError) as info:
        encode(np.zeros(2, np.int8), compression=7)
    assert_error(info.value, "compression", "7")


def test_encode_validates_quantization():
    with pytest.raises(TensorError) as info:
        encode(np.zeros(2, np.int8), quantization=Quantization.per_tensor(1.0, 200))
    assert_error(info.value, "quantization.zero_point", "200")
    with pytest.raises(TensorError):
        encode(np.zeros(2, np.float32), quantization=Quantization.per_tensor(1.0, 0))


# --------------------------------------------------------------------------- malformed tensors


def good_int32() -> tensor_pb2.Tensor:
    """A valid (2, 3) int32 tensor that each malformed case below breaks in one place."""
    return encode(np.arange(6, dtype=np.int32).reshape(2, 3), name="x")


def good_quantized(scale=(0.5,), zp=(0,), axis=0, dtype="int8", shape=(2, 3)) -> tensor_pb2.Tensor:
    msg = raw_tensor(dtype, shape, bytes(math.prod(shape) * np.dtype(dtype).itemsize))
    msg.quantization.scale.extend(scale)
    msg.quantization.zero_point.extend(zp)
    msg.quantization.axis = axis
    return msg


def decode_error(msg: tensor_pb2.Tensor, **kwargs) -> TensorError:
    with pytest.raises(TensorError) as info:
        decode(wire_roundtrip(msg), **kwargs)
    assert isinstance(info.value, SplitpointError)
    return info.value


@pytest.mark.parametrize("bad", [tensor_pb2.DTYPE_UNSPECIFIED, 9, 42, -3, 2**31 - 1])
def test_unknown_dtype(bad):
    msg = good_int32()
    msg.dtype = bad
    assert_error(decode_error(msg), "tensor.dtype", repr(bad))


@pytest.mark.parametrize("shape, index", [([-1], 0), ([2, -3], 1), ([4, 0, -(2**63)], 2)])
def test_negative_dimension(shape, index):
    msg = good_int32()
    msg.ClearField("shape")
    msg.shape.extend(shape)
    assert_error(decode_error(msg), f"tensor.shape[{index}]", repr(shape[index]))


def test_rank_over_the_limit():
    shape = [1] * (MAX_RANK + 1)
    msg = raw_tensor("int8", shape, b"\0")
    err = decode_error(msg)
    assert_error(err, "tensor.shape", repr(shape))
    assert str(MAX_RANK) in err.reason
    # the limit itself is fine
    assert decode(raw_tensor("int8", [1] * MAX_RANK, b"\0")).array.shape == (1,) * MAX_RANK


@pytest.mark.parametrize("length", [0, 20, 23, 25, 28, 1000])
def test_data_length_does_not_match_shape(length):
    msg = good_int32()
    msg.data = bytes(length)
    err = decode_error(msg)
    assert_error(err, "tensor.data", f"{length} bytes")
    assert "24" in err.reason  # what the shape needs


def test_data_for_a_scalar_and_for_an_empty_tensor():
    assert_error(decode_error(raw_tensor("float32", [], b"")), "tensor.data", "0 bytes")
    assert_error(decode_error(raw_tensor("float32", [0, 3], b"\0" * 4)), "tensor.data", "4 bytes")


@pytest.mark.parametrize("shape", [[2**40, 2**40], [2**63 - 1], [2**21] * MAX_RANK, [65536, 1025]])
def test_huge_declared_shape_is_too_large_without_allocating(shape):
    msg = raw_tensor("float32", shape, b"\0" * 16)
    tracemalloc.start()
    try:
        err = decode_error(msg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(err, TensorTooLargeError)
    assert err.status_code != TensorError.status_code
    assert_error(err, "tensor.shape", repr(shape))
    assert peak < 1 << 20, f"decode allocated {peak} bytes for a rejected tensor"


def test_max_bytes_is_inclusive():
    msg = encode(np.zeros(10, np.float64))
    assert decode(msg, max_bytes=80).array.shape == (10,)
    err = decode_error(msg, max_bytes=79)
    assert isinstance(err, TensorTooLargeError)
    assert "80" in err.reason and "79" in err.reason


@pytest.mark.parametrize(
    "shape", [[0, 2**40, 2**40], [2**62, 0, 2**62], [0, 2**63 - 1, 2**63 - 1], [0, 2**31, 2**31], [0, 2**40]]
)
def test_empty_tensor_with_unrepresentable_shape(shape):
    # no elements and no bytes, but numpy cannot build an array of that shape
    err = decode_error(raw_tensor("int8", shape, b""))
    assert isinstance(err, TensorTooLargeError)
    assert_error(err, "tensor.shape", repr(shape))


def test_empty_tensor_with_large_dims_within_the_limit_is_fine():
    array = decode(raw_tensor("int8", [0, 2**20], b"")).array
    assert array.shape == (0, 2**20) and array.size == 0
    assert decode(raw_tensor("int8", [0, 2**20], b"")).dequantized().shape == (0, 2**20)


@pytest.mark.parametrize(
    "payload",
    [b"", b"not zlib at all", zlib.compress(bytes(24))[:-6] + b"\xff" * 6, b"\x78\x9c" + bytes(10)],
)
def test_invalid_zlib_data(payload):
    msg = good_int32()
    msg.compression = ZLIB
    msg.data = payload
    err = decode_error(msg)
    assert_error(err, "tensor.data", f"{len(payload)} bytes")


def test_zlib_with_a_wrong_checksum():
    payload = bytearray(zlib.compress(np.arange(6, dtype=np.int32).tobytes()))
    payload[-1] ^= 0xFF
    msg = good_int32()
    msg.compression = ZLIB
    msg.data = bytes(payload)
    assert "zlib" in decode_error(msg).reason


@pytest.mark.parametrize("inflated", [25, 4096, 16 << 20])
def test_zlib_bomb_is_rejected_without_inflating_it(inflated):
    bomb = zlib.compress(bytes(inflated), 9)
    msg = good_int32()  # declares 24 bytes
    msg.compression = ZLIB
    msg.data = bomb
    tracemalloc.start()
    try:
        err = decode_error(msg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_error(err, "tensor.data", "25 bytes")  # stopped one byte past the declared size
    assert peak < (1 << 20) + 4 * len(bomb), f"decode inflated {peak} bytes"


def test_zlib_that_inflates_to_too_little():
    msg = good_int32()
    msg.compression = ZLIB
    msg.data = zlib.compress(bytes(20))
    assert_error(decode_error(msg), "tensor.data", "20 bytes")


@pytest.mark.parametrize("bad", [2, 99, -1])
def test_unknown_compression(bad):
    msg = good_int32()
    msg.compression = bad
    assert_error(decode_error(msg), "tensor.compression", repr(bad))


@pytest.mark.parametrize("bad", [0.0, -0.0, -1.0, -0.25, math.nan, math.inf, -math.inf])
def test_bad_scale(bad):
    err = decode_error(good_quantized(scale=(bad,)))
    assert_error(err, "tensor.quantization.scale", repr(bad))


def test_bad_scale_among_per_axis_scales():
    err = decode_error(good_quantized(scale=(1.0, 0.5, -0.25), zp=(0, 0, 0), axis=1))
    assert_error(err, "tensor.quantization.scale", "-0.25")


def test_scale_that_underflows_float32_on_the_wire():
    # 1e-50 is a positive float64 but the wire field is `float`: it arrives as 0.0
    err = decode_error(good_quantized(scale=(1e-50,)))
    assert_error(err, "tensor.quantization.scale", "0.0")


@pytest.mark.parametrize(
    "dtype, bad",
    [
        ("int8", 128),
        ("int8", -129),
        ("uint8", -1),
        ("uint8", 256),
        ("int16", 2**15),
        ("int32", 2**31),
        ("int32", -(2**31) - 1),
        ("int8", 2**63 - 1),
    ],
)
def test_zero_point_out_of_range(dtype, bad):
    err = decode_error(good_quantized(zp=(bad,), dtype=dtype))
    assert_error(err, "tensor.quantization.zero_point", repr(bad))
    assert dtype in err.reason


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32"])
def test_zero_point_at_the_range_limits_is_fine(dtype):
    info = np.iinfo(dtype)
    for zp in (int(info.min), int(info.max)):
        assert decode(good_quantized(zp=(zp,), dtype=dtype)).quantization.zero_point == (zp,)


@pytest.mark.parametrize(
    "scale, zp", [((1.0, 1.0), (0,)), ((1.0,), ()), ((1.0,), (0, 0)), ((1.0, 1.0, 1.0), (0, 0))]
)
def test_scale_and_zero_point_lengths_differ(scale, zp):
    err = decode_error(good_quantized(scale=scale, zp=zp, axis=1))
    assert_error(err, "tensor.quantization.zero_point", repr(list(zp)))
    assert str(len(scale)) in err.reason


@pytest.mark.parametrize("axis", [2, 3, -1, 2**31 - 1, -(2**31)])
def test_per_axis_axis_out_of_range(axis):
    err = decode_error(good_quantized(scale=(1.0, 1.0, 1.0), zp=(0, 0, 0), axis=axis))
    assert_error(err, "tensor.quantization.axis", repr(axis))


def test_per_axis_on_a_scalar():
    msg = good_quantized(scale=(1.0, 1.0), zp=(0, 0), axis=0, shape=())
    assert_error(decode_error(msg), "tensor.quantization.axis", "0")


@pytest.mark.parametrize("axis, n", [(0, 3), (1, 2), (1, 4), (0, 6)])
def test_per_axis_count_does_not_match_the_dimension(axis, n):
    err = decode_error(good_quantized(scale=(1.0,) * n, zp=(0,) * n, axis=axis))  # shape (2, 3)
    assert_error(err, "tensor.quantization.scale", f"{n} values")
    assert f"shape[{axis}]" in err.reason


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int64"])
def test_quantization_on_an_unquantizable_dtype(dtype):
    err = decode_error(good_quantized(dtype=dtype))
    # codec names this field "dtype" without the "tensor." prefix; accept either spelling
    assert err.field.split(".")[-1] == "dtype", err.field
    assert repr(dtype) in str(err)


def test_zero_points_without_scales():
    err = decode_error(good_quantized(scale=(), zp=(3,)))
    assert_error(err, "tensor.quantization.scale", "[]")
    assert "zero point" in err.reason


def test_empty_quantization_message_means_not_quantized():
    msg = good_quantized(scale=(), zp=(), axis=5)
    assert msg.HasField("quantization")
    assert decode(wire_roundtrip(msg)).quantization is None


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("compression", [NONE, ZLIB])
def test_non_finite_float_values(dtype, bad, compression):
    array = np.array([[1.0, 2.0], [bad, 3.0]], dtype=dtype)
    data = array.tobytes()
    msg = raw_tensor(
        dtype, array.shape, zlib.compress(data) if compression == ZLIB else data, compression
    )
    assert_error(decode_error(msg), "tensor.data", "non-finite values")


def test_errors_carry_the_field_prefix_the_caller_gives():
    msg = good_int32()
    msg.shape[1] = -7
    with pytest.raises(TensorError) as info:
        decode(msg, field="request.tensors[2]")
    assert_error(info.value, "request.tensors[2].shape[1]", "-7")


def test_long_values_are_shortened_in_the_message():
    shape = [1] * 200
    err = decode_error(raw_tensor("int8", shape, b"\0"))
    assert err.value == shape  # the full value is kept on the exception
    assert len(str(err)) < 300


# --------------------------------------------------------------------------- fuzzing decode

HUGE_DIMS = [2**31, 2**32, 2**40, 2**62, 2**63 - 1]


@st.composite
def arbitrary_tensors(draw):
    """Tensors built from random field values, biased so that every check gets reached."""
    msg = tensor_pb2.Tensor(name=draw(st.text(max_size=5)))
    # a plain one_of would mostly pick the big range (hypothesis seeks novel values), so choose first
    if draw(st.integers(0, 3)):
        msg.dtype = draw(st.sampled_from(sorted(WIRE_DTYPES)))
    else:
        msg.dtype = draw(st.one_of(st.integers(-1, 10), st.integers(-(2**31), 2**31 - 1)))
    dim = st.one_of(
        st.integers(0, 4),
        st.integers(-3, -1),
        st.sampled_from(HUGE_DIMS),
        st.integers(-(2**63), 2**63 - 1),
    )
    kind = draw(st.integers(0, 3))
    if kind == 0:
        shape = draw(st.lists(dim, max_size=MAX_RANK + 2))
    elif kind == 1:  # no elements, but huge other dimensions
        shape = draw(
            st.lists(st.sampled_from([0, 1, 3, *HUGE_DIMS]), min_size=1, max_size=MAX_RANK - 1)
        )
        shape.insert(draw(st.integers(0, len(shape))), 0)
    else:
        shape = draw(st.lists(st.integers(0, 4), max_size=4))
    msg.shape.extend(shape)

    # the payload: the right size for the declared shape (when there is one), or anything
    itemsize = WIRE_DTYPES[msg.dtype].itemsize if msg.dtype in WIRE_DTYPES else 1
    needed = math.prod(shape) * itemsize if all(d >= 0 for d in shape) else -1
    choice = draw(st.integers(0, 4))
    if 0 <= needed <= 512 and choice:
        n = needed if choice > 1 else draw(st.sampled_from([max(needed - 1, 0), needed + 1]))
    else:
        n = draw(st.integers(0, 64))
    payload = draw(st.binary(min_size=n, max_size=n))

    if draw(st.integers(0, 5)):
        compression = draw(st.sampled_from([NONE, ZLIB]))
    else:
        compression = draw(st.integers(-(2**31), 2**31 - 1))
    msg.compression = compression
    if compression == ZLIB:
        how = draw(st.sampled_from(["compressed", "compressed", "truncated", "bomb", "raw"]))
        if how == "compressed":
            payload = zlib.compress(payload)
        elif how == "truncated":
            packed = zlib.compress(payload)
            payload = packed[: draw(st.integers(0, len(packed)))]
        elif how == "bomb":
            payload = zlib.compress(bytes(draw(st.integers(0, 1 << 16))) + payload)
    msg.data = payload

    if draw(st.booleans()):
        small_dims = [d for d in shape if 0 <= d <= 8] or [1]
        n_scales = draw(st.one_of(st.integers(0, 3), st.sampled_from(small_dims)))
        any_float32 = st.floats(width=32)
        scale = draw(
            st.lists(
                st.one_of(positive_scales(), any_float32), min_size=n_scales, max_size=n_scales
            )
        )
        n_zps = draw(st.sampled_from([n_scales, n_scales, 0, 1, n_scales + 1]))
        zps = draw(
            st.lists(
                st.one_of(st.integers(-3, 3), st.integers(-(2**63), 2**63 - 1)),
                min_size=n_zps,
                max_size=n_zps,
            )
        )
        msg.quantization.scale.extend(scale)
        msg.quantization.zero_point.extend(zps)
        msg.quantization.axis = draw(
            st.one_of(st.integers(-1, 4), st.integers(-(2**31), 2**31 - 1))
        )
    return msg


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=arbitrary_tensors(), small_limit=st.integers(0, 9), data=st.data())
def test_decode_returns_a_valid_tensor_or_raises_tensor_error(msg, small_limit, data):
    msg = wire_roundtrip(msg)
    max_bytes = codec.DEFAULT_MAX_TENSOR_BYTES
    if small_limit == 0:  # now and then, a limit the payload is near
        max_bytes = data.draw(st.integers(0, 600), label="max_bytes")
    try:
        decoded = decode(msg, max_bytes=max_bytes)
    except TensorError as exc:
        event(f"rejected: {exc.field.split('[')[0]}")
        assert exc.field.startswith("tensor.") or exc.field == "dtype"
        return
    event("decoded")
    assert isinstance(decoded, DecodedTensor)
    assert decoded.array.shape == tuple(msg.shape)
    assert decoded.array.dtype == WIRE_DTYPES[msg.dtype]
    assert decoded.array.nbytes <= max_bytes
    assert not decoded.array.flags.writeable
    if decoded.array.dtype.kind == "f":
        assert np.isfinite(decoded.array).all()
    if decoded.quantization is not None:
        assert decoded.array.dtype.name in QUANTIZED_DTYPES
        decoded.quantization.validate(decoded.array.dtype, decoded.array.shape)
        with np.errstate(over="ignore"):  # huge scales legitimately overflow float32
            assert decoded.dequantized().shape == decoded.array.shape
