"""Fuzzing request decoding and validation: over 10,000 generated messages per CI run.

Whatever arrives, validate_request either returns the tail input (right shape, float32,
finite) or refuses with one of the contract's status codes; nothing else escapes.

Examples per run (derandomized: the same examples every run). Byte strings protobuf
cannot parse are skipped. Each fuzzing test counts, in its own tally, the messages that
reached validate_request and what became of them, and checks its own minimum, so every test
proves its share of the 10,000+ whatever else ran (or in what order):

    near-valid requests (one valid frame, a few fields mutated)   6,000 (all validated)
    random structured requests                                    4,000 (all validated)
    valid serialized requests with bytes flipped/cut/inserted     6,000 (about 1,750 parse)
    arbitrary bytes parsed as InferRequest                        3,000 (about 90 parse)
"""

from __future__ import annotations

import warnings
import zlib
from collections import Counter

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_server.validation import validate_request
from splitpoint.bundle import Artifact, Manifest, Preprocessing, SplitSpec, TensorSpec
from splitpoint.codec import Quantization, encode
from splitpoint.errors import RequestError
from splitpoint.v1 import offload_pb2, tensor_pb2

DIGEST = "sha256:" + "f" * 64
MAX_BYTES = 64 * 1024
ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
           grpc.StatusCode.RESOURCE_EXHAUSTED}
ART = Artifact("x", "0", 0)
Q8 = Quantization.per_tensor(0.05, -3)
CUTS = {
    0: TensorSpec("input", (1, 8, 8, 1), "uint8", Quantization.per_tensor(1 / 255, 0)),
    2: TensorSpec("conv2", (1, 8, 8, 4), "int8", Q8),
    3: TensorSpec("features", (1, 16), "float32", None),  # a float cut: the NaN path is reachable
    4: TensorSpec("wide", (1, 128, 128, 8), "int8", Q8),  # 128 KiB, over MAX_BYTES: RESOURCE_EXHAUSTED
}
SPLITS = [SplitSpec(k, f"l{k}", [t], ART if k else None, 0, {}, None, ART, {}) for k, t in CUTS.items()]
SPLITS.append(SplitSpec(5, "out", [], ART, 0, {}, None, None, {}))  # k = K: no tail
SPEC = TensorSpec("input", (1, 8, 8, 1), "float32", None)
MANIFEST = Manifest("fuzz", DIGEST, 5, "test", [], SPEC, CUTS[0], Preprocessing(8, 8, 1, 1 / 255, 0.0),
                    TensorSpec("output", (1, 10), "float32", None), SPLITS, None)
DTYPES = [tensor_pb2.DTYPE_INT8, tensor_pb2.DTYPE_UINT8, tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_INT32,
          tensor_pb2.DTYPE_FLOAT16, tensor_pb2.DTYPE_FLOAT64, tensor_pb2.DTYPE_UNSPECIFIED, 99]
ENUM = {"uint8": tensor_pb2.DTYPE_UINT8, "int8": tensor_pb2.DTYPE_INT8, "float32": tensor_pb2.DTYPE_FLOAT32}
INT64 = st.integers(-(2**63), 2**63 - 1)
# scales: anything a float field holds, plus the ones that overflow float32 on dequantization
SCALES = st.one_of(st.floats(width=32), st.sampled_from([3.4e38, 1e38, 1e30, 1.4e-45, 0.0, -1.0]))


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


#: the parseable byte strings each test must validate at least (derandomized, today's counts
#: are 90 of 3,000 arbitrary and 1,752 of 6,000 mutated; a little slack for Hypothesis updates)
ARBITRARY_MIN = 80
MUTATED_MIN = 1500
#: every outcome validation can have: the tail input, or a refusal with one of ALLOWED
EVERY_OUTCOME = {"OK"} | {c.name for c in ALLOWED}


def check(req: offload_pb2.InferRequest, tally: Counter[str]) -> None:
    """Validate one message, assert the contract, and count its outcome in `tally`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy overflow warning is a missed check, not noise
        try:
            spec, x = validate_request(req, MANIFEST, MAX_BYTES)
        except RequestError as err:
            assert err.status_code in ALLOWED, (err.status_code, str(err))
            tally[err.status_code.name] += 1
            assert str(err) and len(str(err)) < 1000, "error messages must not echo a peer's payload"
            return
    want = CUTS[spec.split]
    assert want.nbytes <= MAX_BYTES, "a tensor over the size limit was accepted"
    assert x.dtype == np.float32 and x.shape == want.shape
    assert np.isfinite(x).all()
    tally["OK"] += 1


def valid_request(k: int, raw: bytes) -> offload_pb2.InferRequest:
    want = CUTS[k]
    t = tensor_pb2.Tensor(name=want.name, dtype=ENUM[want.dtype], shape=list(want.shape), data=raw)
    if want.quantization:
        t.quantization.scale.extend(want.quantization.scale)
        t.quantization.zero_point.extend(want.quantization.zero_point)
    req = offload_pb2.InferRequest(frame_id=7, model_digest=DIGEST, split=k)
    req.tensors.append(t)
    return req


WIDE_ZLIB = zlib.compress(bytes(128 * 128 * 8))


def cut_bytes(k: int) -> int:
    want = CUTS[k]
    return int(np.prod(want.shape)) * np.dtype(want.dtype).itemsize


@st.composite
def near_valid(draw: st.DrawFn) -> offload_pb2.InferRequest:
    """Start from a valid frame of a random split, then mutate a few fields."""
    k = draw(st.sampled_from(sorted(CUTS)))
    n = cut_bytes(k)
    if n > MAX_BYTES:  # only compressed data fits a message: the declared size is refused
        raw = WIDE_ZLIB
    elif CUTS[k].dtype == "float32":  # finite floats (raw bytes would be NaN half the time)
        raw = np.array(draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=n // 4, max_size=n // 4)), np.float32).tobytes()
    else:
        raw = draw(st.binary(min_size=n, max_size=n))
    req = valid_request(k, raw)
    if raw is WIDE_ZLIB:
        req.tensors[0].compression = tensor_pb2.COMPRESSION_ZLIB
    req.frame_id = draw(st.integers(0, 2**64 - 1))
    for mutation in draw(st.lists(st.integers(0, 13), max_size=3)):
        if not req.tensors and mutation not in (0, 1, 8):
            continue  # the tensor was deleted by an earlier mutation
        t = req.tensors[0] if req.tensors else None
        if mutation == 0:
            req.model_digest = draw(st.one_of(st.text(max_size=20), st.just(DIGEST[:-1]), st.just(DIGEST + " ")))
        elif mutation == 1:
            req.split = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 6, -1]), st.integers(-(2**31), 2**31 - 1)))
        elif mutation == 2:
            t.dtype = draw(st.sampled_from(DTYPES))
        elif mutation == 3:
            del t.shape[:]
            t.shape.extend(draw(st.one_of(
                st.lists(INT64, max_size=10),
                st.lists(st.sampled_from([0, 1, 4, 8, 16, 2**31, 2**40, 2**62, -1]), max_size=9),
            )))
        elif mutation == 4:
            t.data = draw(st.binary(max_size=2 * len(t.data) + 8))
        elif mutation == 5:
            del t.quantization.scale[:]
            t.quantization.scale.extend(draw(st.lists(SCALES, max_size=4)))
        elif mutation == 6:
            del t.quantization.zero_point[:]
            t.quantization.zero_point.extend(draw(st.lists(st.one_of(INT64, st.integers(-130, 260)), max_size=4)))
        elif mutation == 7:
            t.compression = draw(st.sampled_from([0, 1, 7]))
            if t.compression == tensor_pb2.COMPRESSION_ZLIB and draw(st.booleans()):
                t.data = encode(np.frombuffer(t.data, np.uint8), compression=tensor_pb2.COMPRESSION_ZLIB).data
        elif mutation == 8:
            req.tensors.append(draw(st.sampled_from([tensor_pb2.Tensor(name="extra"), req.tensors[0] if req.tensors
                                                     else tensor_pb2.Tensor()])))
        elif mutation == 9:
            del req.tensors[:]
        elif mutation == 10:
            t.quantization.axis = draw(st.integers(-(2**31), 2**31 - 1))
        elif mutation == 11 and CUTS[k].dtype == "float32" and len(t.data) % 4 == 0 and t.data:
            arr = np.frombuffer(t.data, np.float32).copy()
            arr[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            t.data = arr.tobytes()
        elif mutation == 12:
            t.ClearField("quantization")
        elif mutation == 13:  # per-axis quantization: right or wrong number of scales
            axis = draw(st.integers(-1, 4))
            count = draw(st.sampled_from([1, 2, 4, 8]))
            del t.quantization.scale[:]
            del t.quantization.zero_point[:]
            t.quantization.scale.extend([draw(SCALES) for _ in range(count)])
            t.quantization.zero_point.extend([0] * count)
            t.quantization.axis = axis
    return req


def test_near_valid_requests() -> None:
    tally: Counter[str] = Counter()

    @fuzz_settings(6000)
    @given(near_valid())
    def fuzz(req: offload_pb2.InferRequest) -> None:
        check(req, tally)

    fuzz()
    assert tally.total() >= 6000, tally
    # mutations of valid frames reach every outcome: the fuzzer gets past the first check
    assert set(tally) == EVERY_OUTCOME, tally


def parse(data: bytes) -> offload_pb2.InferRequest | None:
    try:
        return offload_pb2.InferRequest.FromString(data)
    except DecodeError:
        return None  # not a message: nothing to validate (the gRPC layer refuses it)


def test_arbitrary_bytes() -> None:
    tally: Counter[str] = Counter()

    @fuzz_settings(3000)
    @given(st.binary(max_size=512))
    def fuzz(data: bytes) -> None:
        if (req := parse(data)) is not None:
            check(req, tally)

    fuzz()
    assert tally.total() >= ARBITRARY_MIN, tally


SEEDS = [valid_request(0, bytes(range(64))), valid_request(2, bytes(256)),
         valid_request(3, np.linspace(-1, 1, 16, dtype=np.float32).tobytes())]
SEED_BYTES = [r.SerializeToString() for r in SEEDS]


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    """A valid serialized request with a few bytes flipped, cut, inserted or duplicated."""
    buf = bytearray(draw(st.sampled_from(SEED_BYTES)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 3]))  # mostly flips: cuts rarely still parse
        i = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == 0 and buf:
            buf[i] = draw(st.integers(0, 255))
        elif op == 1:
            del buf[i:i + draw(st.integers(1, 16))]
        elif op == 2:
            buf[i:i] = draw(st.binary(min_size=1, max_size=12))
        else:
            buf[i:i] = buf[i:i + draw(st.integers(1, 32))]
    return bytes(buf)


def test_mutated_valid_messages() -> None:
    tally: Counter[str] = Counter()

    @fuzz_settings(6000)
    @given(mutated_bytes())
    def fuzz(data: bytes) -> None:
        if (req := parse(data)) is not None:
            check(req, tally)

    fuzz()
    assert tally.total() >= MUTATED_MIN, tally


STRUCTURED = st.builds(
    offload_pb2.InferRequest,
    model_digest=st.sampled_from([DIGEST, "", "sha256:x"]),
    split=st.sampled_from([0, 2, 3, 5, 9, -1]),
    tensors=st.lists(st.builds(
        tensor_pb2.Tensor, dtype=st.sampled_from(DTYPES),
        shape=st.lists(st.integers(-3, 2**40), max_size=5),
        data=st.binary(max_size=1100), compression=st.sampled_from([0, 1, 5]),
    ), max_size=2),
)


def test_random_structured_requests() -> None:
    tally: Counter[str] = Counter()

    @fuzz_settings(4000)
    @given(STRUCTURED)
    def fuzz(req: offload_pb2.InferRequest) -> None:
        check(req, tally)

    fuzz()
    assert tally.total() >= 4000, tally


# ---------------------------------------------------------------- specific cases the fuzzers must reach


def refused(req: offload_pb2.InferRequest) -> RequestError:
    with pytest.raises(RequestError) as info:
        validate_request(req, MANIFEST, MAX_BYTES)
    return info.value


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_in_a_float_cut_is_refused_naming_the_field(bad: float) -> None:
    data = np.zeros(16, np.float32)
    data[3] = bad
    err = refused(valid_request(3, data.tobytes()))
    assert err.status_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensors[0].data" in str(err) and "NaN or infinity" in str(err)


def test_a_valid_float_cut_is_accepted() -> None:
    data = np.linspace(-3, 3, 16, dtype=np.float32)
    spec, x = validate_request(valid_request(3, data.tobytes()), MANIFEST, MAX_BYTES)
    assert spec.split == 3 and x.dtype == np.float32 and x.shape == (1, 16)
    np.testing.assert_array_equal(x.ravel(), data)


def test_a_scale_that_overflows_float32_is_refused() -> None:
    req = valid_request(0, b"\xff" * 64)
    req.tensors[0].quantization.scale[0] = 3e38  # finite, > 0: passes the codec; 255 * 3e38 = inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        err = refused(req)
    assert err.status_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensors[0].quantization.scale" in str(err) and "overflow" in str(err)


def test_error_messages_do_not_echo_huge_values() -> None:
    req = valid_request(0, bytes(64))
    req.model_digest = "x" * 1_000_000
    err = refused(req)
    assert err.status_code == grpc.StatusCode.FAILED_PRECONDITION and len(str(err)) < 400
    req = valid_request(0, bytes(64))
    del req.tensors[0].shape[:]
    req.tensors[0].shape.extend([1] * 100_000)
    err = refused(req)
    assert err.status_code == grpc.StatusCode.INVALID_ARGUMENT and "tensors[0].shape" in str(err) and len(str(err)) < 400


def test_a_declared_size_over_the_limit_is_resource_exhausted() -> None:
    req = valid_request(4, WIDE_ZLIB)
    req.tensors[0].compression = tensor_pb2.COMPRESSION_ZLIB
    err = refused(req)
    assert err.status_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"declares {128 * 128 * 8} bytes, over the limit of {MAX_BYTES}" in str(err)


def test_a_float64_value_beyond_float32_is_refused() -> None:
    # A float64 cut: the codec refuses NaN and infinity, but 1e300 is finite in float64 and
    # becomes infinity in the float32 tail input.
    wide = TensorSpec("wide", (1, 4), "float64", None)
    m = Manifest("fuzz64", DIGEST, 2, "test", [], SPEC, CUTS[0], Preprocessing(8, 8, 1, 1 / 255, 0.0),
                 TensorSpec("output", (1, 10), "float32", None), [SplitSpec(1, "l1", [wide], ART, 0, {}, None, ART, {})],
                 None)

    def request(values: list[float]) -> offload_pb2.InferRequest:
        req = offload_pb2.InferRequest(model_digest=DIGEST, split=1)
        req.tensors.append(encode(np.array([values], np.float64), name="wide"))
        return req

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either: the check runs quietly
        with pytest.raises(RequestError) as info:
            validate_request(request([0.5, 1e300, 0.0, -1.0]), m, MAX_BYTES)
        spec, x = validate_request(request([0.5, 3e38, 0.0, -1.0]), m, MAX_BYTES)
    assert info.value.status_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensors[0].data" in str(info.value) and "float32 range" in str(info.value)
    assert spec.split == 1 and x.dtype == np.float32 and x.shape == (1, 4) and np.isfinite(x).all()
