"""Several tensors on the wire, without a server: the agent-side helpers (edge_node/outputs.py)
and the server's matching of a multi-tensor cut (cloud_server/validation.py)."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from cloud_server.validation import validate_tensors
from edge_node.heads import HeadOutput
from edge_node.outputs import cut_request_tensors, decode_outputs, local_outputs
from splitpoint.bundle import TensorSpec
from splitpoint.codec import Quantization, encode
from splitpoint.errors import RequestError, TensorError
from splitpoint.v1 import offload_pb2

Q = Quantization((0.5,), (-3,), 0)
CUT = [TensorSpec("p3", (1, 2, 2, 3), "int8", Q), TensorSpec("p4", (1, 1, 1, 4), "int8", Q)]
OUTPUTS = [TensorSpec("heatmap", (1, 2, 2, 3), "float32", None), TensorSpec("size", (1, 2, 2, 2), "float32", None)]
SPEC = SimpleNamespace(split=5, cut=CUT, tail=object())
MANIFEST = SimpleNamespace(model_digest="sha256:x", model_name="m", split_ids=[0, 5, 9], outputs=OUTPUTS,
                           split=lambda k: SPEC if k == 5 else (_ for _ in ()).throw(KeyError(k)))


def _head() -> HeadOutput:
    arrays = [np.arange(12, dtype=np.int8).reshape(1, 2, 2, 3), np.array([[[[1, 2, 3, 4]]]], np.int8)]
    return HeadOutput(5, arrays[0], Q, 0.1, arrays, [Q, Q])


def _request(tensors) -> offload_pb2.InferRequest:
    req = offload_pb2.InferRequest(frame_id=1, model_digest="sha256:x", split=5)
    req.tensors.extend(tensors)
    return req


def test_cut_tensors_round_trip_through_validation_in_manifest_order():
    tensors = cut_request_tensors(_head(), SPEC)
    assert [t.name for t in tensors] == ["p3", "p4"]
    spec, arrays = validate_tensors(_request(reversed(tensors)), MANIFEST, 1 << 20)  # any order: by name
    assert spec is SPEC
    np.testing.assert_array_equal(arrays[0], Q.dequantize(_head().arrays[0]))
    np.testing.assert_array_equal(arrays[1], Q.dequantize(_head().arrays[1]))


def test_unnamed_tensors_are_matched_by_position():
    tensors = cut_request_tensors(_head(), SPEC)
    for t in tensors:
        t.name = ""
    _, arrays = validate_tensors(_request(tensors), MANIFEST, 1 << 20)
    assert [a.shape for a in arrays] == [(1, 2, 2, 3), (1, 1, 1, 4)]


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda ts: ts[:1], "'p4' is missing"),
    (lambda ts: [*ts, encode(np.zeros((1, 1), np.int8), name="p5")], "'p5' is not part of split 5"),
    (lambda ts: [ts[0], ts[0], ts[1]], "'p3' is given twice"),
])
def test_missing_extra_and_repeated_tensors_are_named(mutate, needle):
    with pytest.raises(RequestError) as info:
        validate_tensors(_request(mutate(cut_request_tensors(_head(), SPEC))), MANIFEST, 1 << 20)
    assert info.value.status_code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in str(info.value)


def test_head_with_the_wrong_number_of_tensors_is_refused_before_sending():
    with pytest.raises(ValueError, match="gave 1 tensors, split 5 takes 2"):
        cut_request_tensors(HeadOutput(5, _head().array, Q, 0.1), SPEC)


def _response(*named):
    resp = offload_pb2.InferResponse(frame_id=1, split=5)
    for name, arr in named:
        resp.outputs.append(encode(np.asarray(arr, np.float32), name=name))
    return resp


def test_decode_outputs_by_name_and_checks_sizes():
    heat, size = np.full((1, 2, 2, 3), 0.5), np.full((1, 2, 2, 2), 7.0)
    got = decode_outputs(_response(("size", size), ("heatmap", heat)), MANIFEST)
    assert [g.shape for g in got] == [(1, 2, 2, 3), (1, 2, 2, 2)]
    assert got[0].max() == 0.5 and got[1].max() == 7.0
    with pytest.raises(TensorError, match="'size' is missing"):
        decode_outputs(_response(("heatmap", heat)), MANIFEST)
    with pytest.raises(TensorError, match="manifest says shape"):
        decode_outputs(_response(("heatmap", heat), ("size", np.zeros((1, 3)))), MANIFEST)


def test_one_output_is_taken_whatever_its_name():
    one = SimpleNamespace(outputs=[TensorSpec("output", (1, 3), "float32", None)])
    assert decode_outputs(_response(("", [[1, 2, 3]])), one)[0].tolist() == [[1, 2, 3]]


ONE = SimpleNamespace(outputs=[TensorSpec("output", (1, 3), "float32", None)])
SCORES = np.array([[0.1, 0.7, 0.2]], np.float32)


@pytest.mark.parametrize(("tensors", "manifest", "needle"), [
    # a classifier's answer is one plain float32 tensor per output, of the manifest's shape
    ([encode(SCORES, name="output")] * 2, ONE, "2 output tensors, the model has 1"),
    ([encode(SCORES.astype(np.float64), name="output")], ONE, "float64"),
    ([encode(np.array([[1, 7, 2]], np.int32), name="output")], ONE, "int32"),
    ([encode(np.array([[1, 7, 2]], np.int8), name="output", quantization=Q)], ONE, "quantized"),
    ([encode(SCORES.reshape(3, 1, 1), name="output")], ONE, "= [3, 1, 1]: the manifest says shape [1, 3]"),
    ([encode(SCORES.reshape(3), name="output")], ONE, "the manifest says shape [1, 3]"),
    ([encode(np.zeros((1, 2, 2, 3), np.float32), name="heatmap")] * 2 + [encode(np.zeros((1, 2, 2, 2), np.float32),
                                                                              name="size")],
     MANIFEST, "3 output tensors, the model has 2"),
    ([encode(np.zeros((1, 2, 2, 3), np.float32), name="heatmap")] * 2, MANIFEST, "'size' is missing"),
])
def test_an_answer_that_is_not_this_bundles_outputs_is_refused(tensors, manifest, needle):
    """Before, a second tensor, float64 or int32 scores, or scores of another shape but the
    right size were recorded as the cloud's result; the server sends none of these."""
    resp = offload_pb2.InferResponse(frame_id=1)
    resp.outputs.extend(tensors)
    with pytest.raises(TensorError) as info:
        decode_outputs(resp, manifest)
    assert needle in str(info.value), info.value


def test_local_outputs_are_dequantized_in_manifest_shapes():
    arrays = [np.zeros((1, 2, 2, 3), np.int8), np.ones((1, 2, 2, 2), np.int8)]
    out = HeadOutput(9, arrays[0], Q, 0.1, arrays, [Q, Q])
    got = local_outputs(out, MANIFEST)
    assert got[0].dtype == np.float32 and got[0].max() == pytest.approx(1.5) and got[1].max() == pytest.approx(2.0)
