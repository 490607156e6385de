"""Fuzzing request decoding and validation: well over 10,000 generated messages per CI run.

Whatever arrives, validate_request either returns the tail input (right shape, float32,
finite) or refuses with one of the contract's status codes; nothing else escapes.
"""

from __future__ import annotations

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_server.validation import validate_request
from splitpoint.bundle import Artifact, Manifest, Preprocessing, SplitSpec, TensorSpec
from splitpoint.codec import Quantization
from splitpoint.errors import RequestError
from splitpoint.v1 import offload_pb2, tensor_pb2

DIGEST = "sha256:fuzz"
MAX_BYTES = 64 * 1024
ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
           grpc.StatusCode.RESOURCE_EXHAUSTED}
ART = Artifact("x", "0", 0)
Q8 = Quantization.per_tensor(0.05, -3)
CUTS = {
    0: TensorSpec("input", (1, 8, 8, 1), "uint8", Quantization.per_tensor(1 / 255, 0)),
    2: TensorSpec("conv2", (1, 8, 8, 4), "int8", Q8),
    3: TensorSpec("features", (1, 16), "float32", None),  # a float cut: the NaN path
}
SPLITS = [SplitSpec(k, f"l{k}", [t], ART if k else None, 0, {}, None, ART, {}) for k, t in CUTS.items()]
SPLITS.append(SplitSpec(5, "out", [], ART, 0, {}, None, None, {}))
SPEC = TensorSpec("input", (1, 8, 8, 1), "float32", None)
MANIFEST = Manifest("fuzz", DIGEST, 5, "test", [], SPEC, CUTS[0], Preprocessing(8, 8, 1, 1 / 255, 0.0),
                    TensorSpec("output", (1, 10), "float32", None), SPLITS, None)
DTYPES = [tensor_pb2.DTYPE_INT8, tensor_pb2.DTYPE_UINT8, tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_INT32,
          tensor_pb2.DTYPE_FLOAT16, tensor_pb2.DTYPE_UNSPECIFIED, 99]
FUZZ = settings(max_examples=4000, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def check(req: offload_pb2.InferRequest) -> None:
    try:
        spec, x = validate_request(req, MANIFEST, MAX_BYTES)
    except RequestError as err:
        assert err.status_code in ALLOWED, (err.status_code, str(err))
        assert str(err)
        return
    want = CUTS[spec.split]
    assert x.dtype == np.float32 and x.shape == want.shape
    assert np.isfinite(x).all()


@st.composite
def near_valid(draw: st.DrawFn) -> offload_pb2.InferRequest:
    """Start from a valid frame of a random split, then mutate a few fields."""
    k = draw(st.sampled_from(sorted(CUTS)))
    want = CUTS[k]
    count = int(np.prod(want.shape))
    raw = draw(st.binary(min_size=count * np.dtype(want.dtype).itemsize, max_size=count * np.dtype(want.dtype).itemsize))
    t = tensor_pb2.Tensor(name=want.name, dtype={"uint8": 2, "int8": 1, "float32": 7}[want.dtype],
                          shape=list(want.shape), data=raw)
    if want.quantization:
        t.quantization.scale.extend(want.quantization.scale)
        t.quantization.zero_point.extend(want.quantization.zero_point)
    req = offload_pb2.InferRequest(frame_id=draw(st.integers(0, 2**64 - 1)), model_digest=DIGEST, split=k)
    req.tensors.append(t)
    for mutation in draw(st.lists(st.integers(0, 11), max_size=3)):
        if not req.tensors and mutation not in (0, 1, 8):
            continue  # the tensor was deleted by an earlier mutation
        if mutation == 0:
            req.model_digest = draw(st.text(max_size=20))
        elif mutation == 1:
            req.split = draw(st.integers(-(2**31), 2**31 - 1))
        elif mutation == 2:
            req.tensors[0].dtype = draw(st.sampled_from(DTYPES))
        elif mutation == 3:
            del req.tensors[0].shape[:]
            req.tensors[0].shape.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=10)))
        elif mutation == 4:
            req.tensors[0].data = draw(st.binary(max_size=2 * len(req.tensors[0].data) + 8))
        elif mutation == 5:
            q = req.tensors[0].quantization
            del q.scale[:]
            q.scale.extend(draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=3)))
        elif mutation == 6:
            q = req.tensors[0].quantization
            del q.zero_point[:]
            q.zero_point.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)))
        elif mutation == 7:
            req.tensors[0].compression = draw(st.sampled_from([0, 1, 7]))
        elif mutation == 8:
            req.tensors.append(tensor_pb2.Tensor(name="extra"))
        elif mutation == 9:
            del req.tensors[:]
        elif mutation == 10:
            req.tensors[0].quantization.axis = draw(st.integers(-(2**31), 2**31 - 1))
        elif mutation == 11 and want.dtype == "float32" and len(req.tensors[0].data) % 4 == 0 and req.tensors[0].data:
            arr = np.frombuffer(req.tensors[0].data, np.float32).copy()
            arr[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            req.tensors[0].data = arr.tobytes()
    return req


@FUZZ
@given(near_valid())
def test_near_valid_requests(req: offload_pb2.InferRequest) -> None:
    check(req)


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    try:
        req = offload_pb2.InferRequest.FromString(data)
    except DecodeError:
        return
    check(req)


@settings(max_examples=2500, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.builds(
    offload_pb2.InferRequest,
    model_digest=st.sampled_from([DIGEST, "", "sha256:x"]),
    split=st.sampled_from([0, 2, 3, 5, 9, -1]),
    tensors=st.lists(st.builds(
        tensor_pb2.Tensor, dtype=st.sampled_from(DTYPES),
        shape=st.lists(st.integers(-3, 2**40), max_size=5),
        data=st.binary(max_size=1100), compression=st.sampled_from([0, 1, 5]),
    ), max_size=2),
))
def test_random_structured_requests(req: offload_pb2.InferRequest) -> None:
    check(req)


def test_nan_in_a_float_cut_is_refused_naming_the_field() -> None:
    data = np.zeros(16, np.float32)
    data[3] = np.nan
    req = offload_pb2.InferRequest(model_digest=DIGEST, split=3)
    req.tensors.append(tensor_pb2.Tensor(name="features", dtype=tensor_pb2.DTYPE_FLOAT32, shape=[1, 16], data=data.tobytes()))
    try:
        validate_request(req, MANIFEST, MAX_BYTES)
    except RequestError as err:
        assert err.status_code == grpc.StatusCode.INVALID_ARGUMENT
        assert "tensors[0].data" in str(err) and "NaN" in str(err)
    else:
        raise AssertionError("NaN accepted")
