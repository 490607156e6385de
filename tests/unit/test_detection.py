"""The numpy detection decoder (peaks, threshold, NMS, source pixels) and detection agreement."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from splitpoint.bundle import Preprocessing
from splitpoint.detection import config, decode_batch, decode_frame, detection_records, nms
from splitpoint.verify import detection_agreement, iou, verify_outputs

CFG = config(stride=4, score_threshold=0.3, nms_iou=0.5, max_detections=10)


def maps(objects, h=16, w=16, classes=3):
    """Heatmap and size maps with a peak per (row, col, class, score, width, height)."""
    heat = np.zeros((1, h, w, classes), np.float32)
    size = np.zeros((1, h, w, 2), np.float32)
    for r, c, k, s, bw, bh in objects:
        heat[0, r, c, k] = s
        size[0, r, c] = (bw, bh)
    return [heat, size]


def test_peaks_become_boxes_centred_on_their_cell():
    dets = decode_frame(maps([(2, 3, 1, 0.9, 8, 12), (10, 10, 0, 0.6, 4, 4)]), CFG)
    assert [d["class"] for d in dets] == [1, 0]
    assert dets[0]["score"] == pytest.approx(0.9)
    # cell (row 2, col 3) at stride 4: centre (14, 10); 8 wide, 12 high
    assert dets[0]["box"] == pytest.approx([10.0, 4.0, 18.0, 16.0])
    assert dets[1]["box"] == pytest.approx([40.0, 40.0, 44.0, 44.0])


def test_threshold_and_max_detections():
    objs = [(r, r, 0, 0.31 + 0.02 * r, 4, 4) for r in range(0, 16, 2)]
    objs.append((1, 14, 2, 0.29, 4, 4))  # under the threshold
    dets = decode_frame(maps(objs), CFG)
    assert all(d["score"] >= 0.3 for d in dets)
    assert 2 not in {d["class"] for d in dets}
    assert len(dets) == 8
    few = decode_frame(maps(objs), config(max_detections=3))
    assert [round(d["score"], 2) for d in few] == [0.59, 0.55, 0.51]


def test_neighbouring_cells_of_one_object_give_one_detection():
    heat, size = maps([(5, 5, 0, 0.9, 20, 20)])
    heat[0, 5, 6, 0] = 0.9  # a plateau: both cells are 3x3 maxima
    size[0, 5, 6] = (20, 20)
    dets = decode_frame([heat, size], CFG)
    assert len(dets) == 1  # NMS merged them (IoU of the two boxes is 0.67)
    # the same two peaks of different classes are two objects
    heat[0, 5, 6, 0], heat[0, 5, 6, 1] = 0.0, 0.9
    assert len(decode_frame([heat, size], CFG)) == 2
    # ... unless objects never overlap: then the lower-scored class at the same place goes
    heat[0, 5, 6, 1] = 0.8
    assert [d["class"] for d in decode_frame([heat, size], config(class_agnostic_nms=True))] == [0]


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5) == [1, 2]
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.9) == [1, 2, 0]


def test_iou():
    a = np.array([[0, 0, 10, 10]])
    assert iou(a, np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))[0] == pytest.approx([1, 1 / 3, 0])


def test_records_are_in_source_image_pixels():
    m = SimpleNamespace(detection=CFG, preprocessing=Preprocessing(64, 64, 1, 1 / 255, 0), labels=["zero", "one", "two"],
                        model_name="det")
    recs = detection_records(maps([(2, 3, 1, 0.9, 8, 12)]), m, source_size=(640, 320))
    assert recs == [{"class": 1, "label_name": "one", "score": 0.9, "box": [100.0, 20.0, 180.0, 80.0]}]
    with pytest.raises(ValueError, match="not a detector"):
        detection_records([], SimpleNamespace(detection=None, model_name="cnn"), (1, 1))


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="score_threshold"):
        config(score_threshold=1.5)
    with pytest.raises(ValueError, match="unknown key"):
        config(anchors=3)


def test_detection_agreement_both_ways():
    a = {"class": 0, "score": 0.9, "box": [0, 0, 10, 10]}
    shifted = {"class": 0, "score": 0.8, "box": [1, 0, 11, 10]}  # IoU 0.82
    far = {"class": 0, "score": 0.8, "box": [6, 0, 16, 10]}  # IoU 0.25
    other = {"class": 1, "score": 0.8, "box": [0, 0, 10, 10]}
    assert detection_agreement([[a]], [[shifted]]) == (1.0, 1.0, 1)
    assert detection_agreement([[a]], [[far]]) == (0.0, 0.0, 1)
    assert detection_agreement([[a]], [[other]]) == (0.0, 0.0, 1)
    recall, precision, _ = detection_agreement([[a], []], [[shifted, other], []])
    assert (recall, precision) == (1.0, 0.5)  # the extra detection costs precision, not recall
    assert detection_agreement([[]], [[]]) == (1.0, 1.0, 0)


def test_verification_of_a_detector_uses_detection_agreement():
    ref = [np.concatenate([m]) for m in maps([(2, 3, 1, 0.9, 8, 12), (10, 10, 0, 0.6, 4, 4)])]
    lost = [m.copy() for m in ref]
    lost[0][0, 10, 10, 0] = 0.1  # the split misses one of two objects
    v = verify_outputs(lost, ref, CFG)
    assert (v["detection_recall"], v["detection_precision"], v["agreement"]) == (0.5, 1.0, 0.5)
    assert verify_outputs(ref, ref, CFG)["agreement"] == 1.0
    assert len(decode_batch(ref, CFG)) == 1


def test_the_run_summary_counts_what_the_results_log_holds(tmp_path):
    """The agent's recorder counts a detector's detections from the records it writes:
    frames with detections, the total and per label; a classifier's summary has none."""
    from prometheus_client import CollectorRegistry

    from edge_node.recorder import Recorder
    from edge_node.results import read_results
    from edge_node.run_report import EdgeMetrics
    from edge_node.sources import Frame

    rec = Recorder(["zero", "one"], EdgeMetrics(CollectorRegistry()), on_fatal=lambda: None)
    rec.open(str(tmp_path / "r.jsonl"), "jsonl", False, resume=False)

    def det(k, name):
        return {"class": k, "label_name": name, "score": 0.9, "box": [0.0, 0.0, 4.0, 4.0]}

    per_frame = [[det(1, "one"), det(0, "zero"), det(1, "one")], [], [det(0, "zero")]]
    for i, dets in enumerate(per_frame):
        frame = Frame(i, np.zeros((8, 8, 1), np.uint8), None, f"f{i}", 0)
        rec.ok(frame, 2, "cloud", np.zeros(2), {}, None, detections=dets)()
    rec.close()
    s = rec.summary
    assert (s.detector_frames, s.frames_with_detections, s.detections) == (3, 2, 4)
    assert s.detections_by_label == {"one": 2, "zero": 2}
    assert s.detection_summary() == "4 detections in 2 of 3 frames (one: 2, zero: 2)"
    logged = sorted(read_results(str(tmp_path / "r.jsonl")), key=lambda r: r["frame_id"])
    assert sum(len(r["detections"]) for r in logged) == s.detections

    classifier = Recorder(["zero", "one"], EdgeMetrics(CollectorRegistry()), on_fatal=lambda: None)
    classifier.open(str(tmp_path / "c.jsonl"), "jsonl", False, resume=False)
    classifier.ok(Frame(0, np.zeros((8, 8, 1), np.uint8), None, "f", 0), 2, "cloud", np.array([0.2, 0.8]), {}, None)()
    assert classifier.summary.detection_summary() is None and classifier.summary.frames == 1
