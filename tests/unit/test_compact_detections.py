"""A detector's cloud answer: compact detections made on the server's worker
(cloud_server/servicer.py, executor.py), checked by the agent (edge_node/outputs.py via
CloudPaths.outputs) and recorded as a local run's would be (splitpoint/detection.py)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from cloud_server.executor import TailExecutor
from cloud_server.servicer import detections_postprocess
from edge_node.cloud_paths import CloudPaths
from edge_node.outputs import decode_detections
from splitpoint.bundle import Preprocessing, TensorSpec
from splitpoint.codec import Quantization, encode
from splitpoint.detection import COMPACT_NAME, compact_records, config, detection_records
from splitpoint.v1 import offload_pb2

CFG = config(stride=4, score_threshold=0.3, nms_iou=0.5, max_detections=10)
OUTPUTS = [TensorSpec("heatmap", (1, 16, 16, 3), "float32", None), TensorSpec("size", (1, 16, 16, 2), "float32", None)]
MANIFEST = SimpleNamespace(detection=CFG, outputs=OUTPUTS, labels=["zero", "one", "two"], model_name="det",
                           preprocessing=Preprocessing(64, 64, 1, 1 / 255, 0))
TIMEOUT_S = 10.0


def maps(objects, batch=1):
    """Heatmap and size maps (batch, 16, 16, ...) with a peak per (row, col, class, score, w, h)."""
    heat = np.zeros((batch, 16, 16, 3), np.float32)
    size = np.zeros((batch, 16, 16, 2), np.float32)
    for r, c, k, s, bw, bh in objects:
        heat[:, r, c, k] = s
        size[:, r, c] = (bw, bh)
    return [heat, size]


def answer(*tensors) -> offload_pb2.InferResponse:
    resp = offload_pb2.InferResponse(frame_id=1, split=3)
    resp.outputs.extend(tensors)
    return resp


def rows(*r) -> np.ndarray:
    return np.asarray(r, np.float32).reshape(1, len(r), 6)


def check(resp: offload_pb2.InferResponse):
    """What the agent makes of an answer: (outputs, problem), problem None when accepted."""
    return CloudPaths.outputs(SimpleNamespace(manifest=MANIFEST), resp)  # type: ignore[arg-type]


class _Runner:
    def run_all(self, batches):
        return maps([(2, 3, 1, 0.9, 8, 12), (10, 10, 0, 0.6, 4, 4)], batch=len(batches[0]))


def test_the_servers_worker_answers_with_the_decoded_detections_a_local_run_records():
    ex = TailExecutor(SimpleNamespace(get=lambda k: _Runner()), workers=1,
                      postprocess=detections_postprocess(CFG))
    try:
        fut = ex.submit(3, np.zeros((1, 4), np.float32), time.monotonic())
        result = fut.result(timeout=TIMEOUT_S)
    finally:
        ex.close(timeout=TIMEOUT_S)
    (dets,) = result.outputs
    assert dets.dtype == np.float32 and dets.shape == (2, 6)
    np.testing.assert_allclose(dets[0], [10, 4, 18, 16, 0.9, 1], rtol=1e-6)
    resp = answer(encode(dets[None], name=COMPACT_NAME))  # as the servicer encodes it
    outputs, problem = check(resp)
    assert problem is None
    # the cloud's record equals the one a local run of the same maps gives (label, score, boxes)
    assert compact_records(outputs[0], MANIFEST, (640, 320)) == detection_records(
        maps([(2, 3, 1, 0.9, 8, 12), (10, 10, 0, 0.6, 4, 4)]), MANIFEST, (640, 320))


def test_a_frame_without_detections_is_an_empty_answer():
    (none,) = detections_postprocess(CFG)(maps([]))[0]
    assert none.shape == (0, 6) and none.dtype == np.float32
    outputs, problem = check(answer(encode(none[None], name=COMPACT_NAME)))
    assert problem is None and outputs[0].shape == (1, 0, 6)
    assert compact_records(outputs[0], MANIFEST, (64, 64)) == []


def test_a_good_answer_is_accepted():
    outputs, problem = check(answer(encode(rows([1, 2, 30, 40, 0.8, 2], [5, 5, 9, 9, 0.4, 0]), name=COMPACT_NAME)))
    assert problem is None
    np.testing.assert_array_equal(outputs[0][0, :, 5], [2, 0])


def test_boxes_the_decoder_gives_at_the_edges_are_accepted():
    """A peak in a corner cell with a box larger than the cell reaches past the input (the
    records clip it), scores are 0..1 inclusive and a box may have no size."""
    outputs, problem = check(answer(encode(rows([-10, -10, 14, 14, 1.0, 2], [62, 62, 62, 62, 0.0, 0]),
                                           name=COMPACT_NAME)))
    assert problem is None, problem
    assert compact_records(outputs[0], MANIFEST, (64, 64))[0]["box"] == [0.0, 0.0, 14.0, 14.0]


TEN = np.tile(np.asarray([1, 2, 3, 4, 0.5, 1], np.float32), (11, 1))[None]


@pytest.mark.parametrize(("tensors", "needle"), [
    ([encode(rows([1, 2, 3, 4, 0.5, 1]), name="heatmap")], "one tensor named 'detections'"),
    ([encode(rows([1, 2, 3, 4, 0.5, 1]), name=COMPACT_NAME), encode(rows([1, 2, 3, 4, 0.5, 1]), name="x")],
     "one tensor named 'detections'"),
    ([], "one tensor named 'detections'"),
    ([encode(np.zeros((1, 16, 16, 3), np.float32), name=COMPACT_NAME)], "expected [1, N, 6]"),
    ([encode(np.zeros((2, 1, 6), np.float32), name=COMPACT_NAME)], "expected [1, N, 6]"),
    ([encode(np.zeros((1, 6), np.float32), name=COMPACT_NAME)], "expected [1, N, 6]"),
    ([encode(rows([1, 2, 3, 4, 0.5, 1]).astype(np.float64), name=COMPACT_NAME)], "expected float32"),
    ([encode(rows([1, 2, 3, 4, 0.5, 1]).astype(np.float16), name=COMPACT_NAME)], "expected float32"),
    ([encode(np.zeros((1, 1, 6), np.int8), name=COMPACT_NAME, quantization=Quantization((1.0,), (0,), 0))],
     "plain float32"),
    ([encode(rows([1, 2, np.nan, 4, 0.5, 1]), name=COMPACT_NAME)], "non-finite"),
    ([encode(rows([1, 2, 3, 4, np.inf, 1]), name=COMPACT_NAME)], "non-finite"),
    ([encode(rows([1, 2, 3, 4, 0.5, 3]), name=COMPACT_NAME)], "not an integer in [0, 3)"),
    ([encode(rows([1, 2, 3, 4, 0.5, -1]), name=COMPACT_NAME)], "not an integer in [0, 3)"),
    ([encode(rows([1, 2, 3, 4, 0.5, 1.5]), name=COMPACT_NAME)], "not an integer in [0, 3)"),
    ([encode(TEN, name=COMPACT_NAME)], "11 detections, over max_detections = 10"),
    # rows no decoder gives (a sigmoid peak's score, a box of size >= 0 centred on a heatmap cell)
    ([encode(rows([1, 2, 3, 4, 1.5, 1]), name=COMPACT_NAME)], "score 1.5 is not in [0, 1]"),
    ([encode(rows([1, 2, 3, 4, 0.5, 1], [1, 2, 3, 4, -0.25, 1]), name=COMPACT_NAME)], "score -0.25 is not in [0, 1]"),
    ([encode(rows([1, 2, 3, 4, 0.25, 1], [1, 2, 3, 4, 0.5, 1]), name=COMPACT_NAME)],
     "not highest score first (row 1: 0.5 after 0.25)"),
    ([encode(rows([30, 2, 3, 4, 0.5, 1]), name=COMPACT_NAME)], "box [30.0, 2.0, 3.0, 4.0] has x0 > x1 or y0 > y1"),
    ([encode(rows([1, 40, 3, 4, 0.5, 1]), name=COMPACT_NAME)], "has x0 > x1 or y0 > y1"),
    ([encode(rows([1e6, 1e6, 2e6, 2e6, 0.5, 1]), name=COMPACT_NAME)], "is centred outside the 64x64 input"),
    ([encode(rows([-30, 2, -10, 4, 0.5, 1]), name=COMPACT_NAME)], "is centred outside the 64x64 input"),
])
def test_a_malformed_answer_is_refused_so_the_frame_runs_locally(tensors, needle):
    outputs, problem = check(answer(*tensors))
    assert outputs == [] and problem is not None
    assert problem.startswith("detections unreadable") and needle in problem, problem
    with pytest.raises(Exception, match="outputs"):  # the agent-side helper names the field
        decode_detections(answer(*tensors), MANIFEST)


def test_a_postprocess_that_fails_fails_its_frames_not_the_worker():
    def broken(outs):
        raise RuntimeError("boom")

    ex = TailExecutor(SimpleNamespace(get=lambda k: _Runner()), workers=1, postprocess=broken)
    try:
        fut = ex.submit(3, np.zeros((1, 4), np.float32), time.monotonic())
        with pytest.raises(Exception, match="tail 3 failed: RuntimeError"):
            fut.result(timeout=TIMEOUT_S)
        # the worker is still alive: a good postprocess now serves the next frame
        ex.postprocess = detections_postprocess(CFG)
        assert ex.submit(3, np.zeros((1, 4), np.float32), time.monotonic()).result(timeout=TIMEOUT_S).outputs
        assert any(t.name.startswith("tail-worker") and t.is_alive() for t in threading.enumerate())
    finally:
        ex.close(timeout=TIMEOUT_S)


def test_only_a_detector_bundle_gets_the_decoder():
    from prometheus_client import CollectorRegistry

    from cloud_server.executor import per_frame
    from cloud_server.servicer import CloudMetrics, OffloadServicer

    for manifest, decodes in [(SimpleNamespace(splits=[], outputs=OUTPUTS), False),  # no detection attribute
                              (SimpleNamespace(splits=[], outputs=OUTPUTS, detection=None), False),
                              (SimpleNamespace(splits=[], outputs=OUTPUTS, detection=CFG), True)]:
        ex = TailExecutor(SimpleNamespace(get=lambda k: _Runner()), workers=1)
        try:
            servicer = OffloadServicer(manifest, ex, 1 << 20, 1 << 20, CloudMetrics(CollectorRegistry()))
            assert (ex.postprocess is not per_frame) is decodes
            assert servicer._answer_names == ([COMPACT_NAME] if decodes else ["heatmap", "size"])
        finally:
            ex.close(timeout=TIMEOUT_S)
