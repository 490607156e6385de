"""The numpy detection decoder (peaks, threshold, NMS, source pixels) and detection agreement."""

from __future__ import annotations

import json
import os
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
    # the record's own label is its top detection's; a frame without one has none (was "-1")
    assert [(r["label"], r["label_name"], r["score"]) for r in logged] == [(1, "one", 0.9), (-1, None, 0.0),
                                                                          (0, "zero", 0.9)]

    classifier = Recorder(["zero", "one"], EdgeMetrics(CollectorRegistry()), on_fatal=lambda: None)
    classifier.open(str(tmp_path / "c.jsonl"), "jsonl", False, resume=False)
    classifier.ok(Frame(0, np.zeros((8, 8, 1), np.uint8), None, "f", 0), 2, "cloud", np.array([0.2, 0.8]), {}, None)()
    assert classifier.summary.detection_summary() is None and classifier.summary.frames == 1


# --------------------------------------------------------------------------- a detector of one's own


def test_box_formats_scale_the_size_map_to_input_pixels():
    out = maps([(2, 3, 1, 0.9, 2, 3)])  # at stride 4: centre (14, 10); a 16x16 grid covers 64x64 pixels
    assert decode_frame(out, config(box_format="size_pixels"))[0]["box"] == pytest.approx([13, 8.5, 15, 11.5])
    assert decode_frame(out, config(box_format="size_cells"))[0]["box"] == pytest.approx([10, 4, 18, 16])
    small = maps([(2, 3, 1, 0.9, 0.125, 0.25)])
    assert decode_frame(small, config(box_format="size_normalized"))[0]["box"] == pytest.approx([10, 2, 18, 18])
    old = {k: v for k, v in CFG.items() if k != "box_format"}  # a bundle written before box_format
    assert decode_frame(out, old) == decode_frame(out, CFG)


GOOD_TOML = """
kind = "centernet"
heatmap = 1
size = 0
stride = 8
box_format = "size_cells"
score_threshold = 0.4
nms_iou = 0.6
max_detections = 5
class_agnostic_nms = true
labels = ["car", "person"]
"""


def test_decoder_settings_from_toml_json_and_flags(tmp_path):
    from splitpoint.detection_config import build

    toml = tmp_path / "decoder.toml"
    toml.write_text(GOOD_TOML)
    cfg, labels, _ = build(str(toml), {}, None)
    assert cfg == {"kind": "centernet", "heatmap": 1, "size": 0, "stride": 8, "box_format": "size_cells",
                   "score_threshold": 0.4, "nms_iou": 0.6, "max_detections": 5, "class_agnostic_nms": True}
    assert labels == ["car", "person"]
    # the same in JSON, and under a [detection] table
    (tmp_path / "d.json").write_text(json.dumps(dict(cfg, labels=labels)))
    assert build(str(tmp_path / "d.json"), {}, None)[:2] == (cfg, labels)
    (tmp_path / "t.toml").write_text("[detection]\n" + GOOD_TOML)
    assert build(str(tmp_path / "t.toml"), {}, None)[:2] == (cfg, labels)
    # flags override the file; --labels overrides its labels
    flags = {"score_threshold": 0.25, "max_detections": 9, "nms_iou": None}
    cfg2, labels2, _ = build(str(toml), flags, ["a", "b"])
    assert (cfg2["score_threshold"], cfg2["max_detections"], cfg2["nms_iou"], labels2) == (0.25, 9, 0.6, ["a", "b"])
    # flags alone make a detector with the defaults; no file and no flags: not a detector
    assert build(None, {"box_format": "size_normalized"}, None)[0] == config(box_format="size_normalized")
    assert build(None, {"score_threshold": None}, ["x"])[:2] == (None, ["x"])


@pytest.mark.parametrize(("text", "flags", "where", "value", "reason"), [
    ('kind = "yolo"', {}, "decoder.toml: kind", '"yolo"', "supported: centernet"),
    ("score_threshold = 1.5", {}, "decoder.toml: score_threshold", "1.5", "(0, 1)"),
    ("score_threshold = 0", {}, "decoder.toml: score_threshold", "0", "(0, 1)"),
    ("nms_iou = -0.1", {}, "decoder.toml: nms_iou", "-0.1", "(0, 1]"),
    ("max_detections = 0", {}, "decoder.toml: max_detections", "0", "integer >= 1"),
    ("max_detections = 2.5", {}, "decoder.toml: max_detections", "2.5", "integer >= 1"),
    ('stride = "4"', {}, "decoder.toml: stride", '"4"', "integer >= 1"),
    ("stride = 4.0", {}, "decoder.toml: stride", "4", "integer >= 1 written without a decimal point"),
    ("heatmap = -1", {}, "decoder.toml: heatmap", "-1", "integer >= 0"),
    ("heatmap = 1\nsize = 1", {}, "decoder.toml: size", "1", "another output"),
    ('box_format = "xyxy"', {}, "decoder.toml: box_format", '"xyxy"', "size_pixels, size_cells, size_normalized"),
    ('class_agnostic_nms = "yes"', {}, "decoder.toml: class_agnostic_nms", '"yes"', "true or false"),
    ("anchors = 9", {}, "decoder.toml: anchors", "9", "unknown key"),
    ('labels = "car"', {}, "decoder.toml: labels", '"car"', "list of non-empty strings"),
    ('labels = ["car", ""]', {}, "decoder.toml: labels", '["car", ""]', "list of non-empty strings"),
    ("", {"score_threshold": float("nan")}, "--score-threshold", "nan", "(0, 1)"),
    ("", {"max_detections": -3}, "--max-detections", "-3", "integer >= 1"),
    ("", {"max_detections": 10**12}, "--max-detections", "1000000000000", "at most 10000"),
    ("max_detections = 10001", {}, "decoder.toml: max_detections", "10001", "at most 10000"),
    ("", {"detection_kind": "ssd"}, "--detection-kind", '"ssd"', "supported: centernet"),
    ("", {"box_format": "cxcywh"}, "--box-format", '"cxcywh"', "must be one of"),
    ("", {"nms_iou": 2.0}, "--nms-iou", "2", "(0, 1]"),
    ("stride = [", {}, "--detection", "decoder.toml", "not valid TOML"),
])
def test_each_bad_decoder_setting_is_named(tmp_path, text, flags, where, value, reason):
    from splitpoint.detection_config import build
    from splitpoint.errors import ConfigError

    toml = tmp_path / "decoder.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError) as info:
        build(str(toml), flags, None)
    msg = str(info.value)
    assert where in msg and value in msg and reason in msg, msg
    assert info.value.exit_code == 2


def test_decoder_files_and_labels_that_cannot_be_read(tmp_path):
    from splitpoint.detection_config import build, parse_labels
    from splitpoint.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--detection = \".*nope.toml\": no such file"):
        build(str(tmp_path / "nope.toml"), {}, None)
    (tmp_path / "d.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a table"):
        build(str(tmp_path / "d.json"), {}, None)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        build(str(tmp_path / "bad.json"), {}, None)
    assert parse_labels("car, person ,cow") == ["car", "person", "cow"]
    (tmp_path / "labels.txt").write_text("car\n\nperson\n")
    assert parse_labels(str(tmp_path / "labels.txt")) == ["car", "person"]
    with pytest.raises(ConfigError, match=r"--labels = \"car,,cow\": .*none of them empty"):
        parse_labels("car,,cow")
    # two classes of one name were accepted, and the end-of-run counts then merged them
    with pytest.raises(ConfigError, match=r"--labels = \"car,cow,car\": 'car' is given twice"):
        parse_labels("car,cow,car")
    (tmp_path / "twice.json").write_text('{"labels": ["a", "b", "a"]}')
    with pytest.raises(ConfigError, match=r"twice.json: labels = .*'a' is given twice; each class needs a label"):
        build(str(tmp_path / "twice.json"), {}, None)


def test_decoder_and_labels_files_as_users_write_them(tmp_path):
    """A directory was 'no such file'; a missing labels.txt or a directory given to --labels became
    one label of that name; a Notepad file's byte-order mark began the first label; `labels` beside
    a [detection] table was 'detection = {...}: unknown key'."""
    from splitpoint.detection_config import build, parse_labels
    from splitpoint.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--detection = \".*\": is a directory, not a regular file"):
        build(str(tmp_path), {}, None)
    with pytest.raises(ConfigError, match=r"--labels = \".*\": is a directory, not a regular file"):
        parse_labels(str(tmp_path))
    os.mkfifo(tmp_path / "pipe.toml")  # was 'no such file' for a file that is there
    with pytest.raises(ConfigError, match=r"--detection = \".*pipe.toml\": is a named pipe, not a regular file"):
        build(str(tmp_path / "pipe.toml"), {}, None)
    with pytest.raises(ConfigError, match=r"--labels = \"/dev/null\": is a character device, not a regular file"):
        parse_labels("/dev/null")
    with pytest.raises(ConfigError, match=r"--labels = \"labels.txt\": no such file"):
        parse_labels("labels.txt")
    with pytest.raises(ConfigError, match=r"--labels = \".*/classes\": no such file"):
        parse_labels(str(tmp_path / "classes"))
    (tmp_path / "empty.names").write_text("\n\n")
    with pytest.raises(ConfigError, match="the file holds no labels"):
        parse_labels(str(tmp_path / "empty.names"))
    assert parse_labels("person") == ["person"]
    (tmp_path / "bom.txt").write_bytes("\ufeffcar\r\nperson\r\n".encode())
    assert parse_labels(str(tmp_path / "bom.txt")) == ["car", "person"]
    (tmp_path / "bom.toml").write_bytes("\ufeffstride = 8\n".encode())
    assert build(str(tmp_path / "bom.toml"), {}, None)[0]["stride"] == 8
    (tmp_path / "beside.toml").write_text('labels = ["car", "person"]\n[detection]\nstride = 8\n')
    cfg, labels, _ = build(str(tmp_path / "beside.toml"), {}, None)
    assert (cfg["stride"], labels) == (8, ["car", "person"])
    (tmp_path / "outside.toml").write_text('stride = 8\n[detection]\nnms_iou = 0.4\n')
    with pytest.raises(ConfigError, match=r"outside.toml: stride = 8: is outside the \[detection\] table"):
        build(str(tmp_path / "outside.toml"), {}, None)
    (tmp_path / "twice.toml").write_text('labels = ["a"]\n[detection]\nlabels = ["b"]\n')
    with pytest.raises(ConfigError, match=r'twice.toml: labels = \["a"\]: given both in and beside \[detection\]'):
        build(str(tmp_path / "twice.toml"), {}, None)


@pytest.mark.parametrize(("text", "flags", "labels", "shapes", "said"), [
    ("stride = 8", {}, None, [(None, 16, 16, 3), (None, 16, 16, 2)],
     "--detection decoder.toml: stride = 8: a 16x16 heatmap at stride 8 covers 128x128 pixels, but the input is 64x64"),
    ("heatmap = 0", {}, None, [(None, 16, 16, 3), (None, 8, 8, 2)],
     "--detection decoder.toml: size = 1: output 1 has shape [None, 8, 8, 2]"),
    ('labels = ["a", "b"]', {}, None, [(None, 16, 16, 3), (None, 16, 16, 2)],
     '--detection decoder.toml: labels = ["a", "b"]: the heatmap has 3 classes'),
    ('labels = ["a", "b", "c"]', {}, ["a", "b"], [(None, 16, 16, 3), (None, 16, 16, 2)],
     '--labels = ["a", "b"]: the heatmap has 3 classes'),
    (None, {"score_threshold": 0.5}, None, [(None, 8, 8, 3), (None, 8, 8, 2)],
     "stride (the default; a --detection file sets it) = 4: a 8x8 heatmap at stride 4 covers 32x32"),
])
def test_decoder_settings_that_do_not_fit_the_model_name_their_origin(tmp_path, text, flags, labels, shapes, said):
    """They were all '--detection: KEY' (the file's name left out, as was the --labels flag, and a
    default blamed on a --detection never given)."""
    from splitpoint.detection_config import build, check_against_model
    from splitpoint.errors import ConfigError

    file = None
    if text is not None:
        file = str(tmp_path / "decoder.toml")
        (tmp_path / "decoder.toml").write_text(text)
    cfg, labels, origins = build(file, flags, labels)
    with pytest.raises(ConfigError) as info:
        check_against_model(cfg, labels, shapes, (64, 64), origins)
    assert str(info.value).replace(str(tmp_path) + "/", "").startswith(said), str(info.value)


@pytest.mark.parametrize(("cfg", "labels", "key", "reason"), [
    (config(heatmap=2, size=1), None, "heatmap = 2", "the model has 2 output(s), numbered 0 to 1"),
    (config(heatmap=1, size=0), None, "heatmap = 1", "not a map"),
    (config(stride=8), None, "stride = 8", "covers 128x128 pixels, but the input is 64x64"),
    (config(), ["a", "b"], "labels", "the heatmap has 3 classes"),
])
def test_decoder_settings_that_do_not_fit_the_model(cfg, labels, key, reason):
    from splitpoint.detection_config import check_against_model
    from splitpoint.errors import ConfigError

    shapes = [(None, 16, 16, 3), (None, 16, 16, 2)] if cfg["heatmap"] != 1 else [(None, 16, 16, 2), (None, 3)]
    with pytest.raises(ConfigError) as info:
        check_against_model(cfg, labels, shapes, (64, 64))
    assert key in str(info.value) and reason in str(info.value), str(info.value)
    check_against_model(config(), ["a", "b", "c"], [(None, 16, 16, 3), (None, 16, 16, 2)], (64, 64))  # fits
    with pytest.raises(ConfigError, match=r"size = 1: output 1 has shape \[None, 8, 8, 2\]"):
        check_against_model(config(), None, [(None, 16, 16, 3), (None, 8, 8, 2)], (64, 64))


def test_partition_help_gives_a_detectors_own_min_agreement_default(capsys):
    """--help said 'default 0.98' alone, but a detector's default is 0.95 (README, the run's own error)."""
    from splitpoint import cli
    from splitpoint.partition import DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_DETECTION_AGREEMENT

    with pytest.raises(SystemExit):
        cli.main(["partition", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {DEFAULT_MIN_AGREEMENT}, a detector's {DEFAULT_MIN_DETECTION_AGREEMENT};" in text, text


def test_a_binary_classifiers_record_decides_at_one_half(tmp_path):
    """One sigmoid score and two labels: labels[1] from 0.5 up, scored as a 2-way softmax would
    be. The record's label was the argmax of one value - 0, 'neg', for every frame."""
    from prometheus_client import CollectorRegistry

    from edge_node.recorder import Recorder, top_class
    from edge_node.results import read_results
    from edge_node.run_report import EdgeMetrics
    from edge_node.sources import Frame

    rec = Recorder(["neg", "pos"], EdgeMetrics(CollectorRegistry()), on_fatal=lambda: None)
    rec.open(str(tmp_path / "r.jsonl"), "jsonl", False, resume=False)
    for i, p in enumerate([0.8, 0.3, 0.5, float("nan")]):
        rec.ok(Frame(i, np.zeros((8, 8, 1), np.uint8), 1, f"f{i}", 0), 2, "cloud", np.array([p], np.float32), {}, None)()
    rec.close()
    logged = sorted(read_results(str(tmp_path / "r.jsonl")), key=lambda r: r["frame_id"])
    assert [(r["label"], r["label_name"], r["score"]) for r in logged] == [
        (1, "pos", pytest.approx(0.8)), (0, "neg", pytest.approx(0.7)), (1, "pos", 0.5), (0, "neg", None)]
    assert rec.summary.frames == 4
    # one value without two labels (a regressor's) is reported as it is; several scores: the argmax
    assert top_class(np.array([3.5]), 0) == (0, 3.5)
    assert top_class(np.array([0.1, 0.7, 0.2]), 3) == (1, pytest.approx(0.7))


def test_max_detections_up_to_its_cap_is_taken():
    from splitpoint.detection import MAX_DETECTIONS

    assert config(max_detections=MAX_DETECTIONS)["max_detections"] == MAX_DETECTIONS == 10_000
