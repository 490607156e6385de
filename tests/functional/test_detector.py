"""The digits detector end to end: partition, then `splitpoint demo --model digits-detector`
as a real process (which starts `splitpoint cloud` as another), over every split.

Checked: at least 6 splits spread through the detector, multi-tensor cuts among them,
every split's detection agreement with the float model >= 0.95 both ways, accuracy
against the synthetic ground truth in the manifest; and every split's detections as
served over gRPC agree with the float model's (same rule) in the results log, whose
boxes are in source-image pixels; the server answers with compact detections (the
decoder's result of the split's own tail), far smaller on the wire than the raw maps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitpoint.bundle import load_bundle
from splitpoint.detection import decode_frame, to_source_pixels
from splitpoint.verify import detection_agreement

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from splitpoint.models import reference_model
    from splitpoint.partition import PartitionOptions, partition

    out = tmp_path_factory.mktemp("bundles") / "detector"
    partition(reference_model("digits-detector"), PartitionOptions(output=out, edgetpu_compiler=None),
              progress=lambda n: _Quiet())
    return out


class _Quiet:
    def update(self, label: str, advance: int = 1) -> None:
        pass


def test_detector_partitions_into_verified_splits_through_its_depth(detector_bundle: Path):
    m = load_bundle(detector_bundle).manifest
    assert m.detection is not None and len(m.outputs) == 2
    inner = [s for s in m.splits if 0 < s.split < m.num_layers]
    assert len(inner) >= 6, m.split_ids
    assert any(len(s.cut) > 1 for s in inner), "no multi-tensor cut"
    # spread: splits in the backbone, in the pyramid and in the head
    after = {s.after_layer for s in inner}
    assert after & {"stem", "stage2", "stage2_b"} and after & {"lateral3", "lateral2", "fpn3"} and after & {"fpn2", "head"}
    for s in m.splits:
        v = s.verification
        assert v["detection_recall"] >= 0.95 and v["detection_precision"] >= 0.95, (s.split, v)
        assert v["passed"] and v["enforced"]
    acc = m.partition["accuracy"]
    assert acc["objects"] > 100 and 0.5 < acc["recall"] <= 1 and 0.5 < acc["precision"] <= 1


def test_demo_serves_every_split_with_the_float_models_detections(detector_bundle: Path, tmp_path: Path):
    import keras

    shutil.copytree(detector_bundle, tmp_path / "bundle-detector")  # the demo reuses a valid bundle
    bundle = load_bundle(detector_bundle)
    m = bundle.manifest
    raw, _ = bundle.validation_data()
    # the demo takes turns over the splits: each split sees len(raw) / gcd of the held-out canvases
    frames = int(np.lcm(len(raw), len(m.splits)))
    proc = subprocess.run(
        [sys.executable, "-m", "splitpoint", "demo", "--model", "digits-detector", "--workdir", str(tmp_path),
         "--frames", str(frames)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "using the bundle" in proc.stdout
    records = [json.loads(line) for line in (tmp_path / "results-detector.jsonl").read_text().splitlines()]
    assert len(records) == frames
    assert {r["split"] for r in records} == set(m.split_ids)
    assert {r["where"] for r in records} == {"cloud", "edge"}

    model = keras.models.load_model(detector_bundle / "cloud" / "tail_0.keras", compile=False)
    outs = model.predict(m.preprocessing.apply_batch(raw), verbose=0)
    size = (m.preprocessing.width, m.preprocessing.height)
    for k in m.split_ids:
        mine = [r for r in records if r["split"] == k]
        want = [to_source_pixels(decode_frame([o[r["frame_id"] % len(raw)] for o in outs], m.detection), size, size,
                                 m.labels) for r in mine]
        got = [r["detections"] for r in mine]
        recall, precision, n = detection_agreement(want, got)
        assert n > 0 and recall >= 0.95 and precision >= 0.95, (k, recall, precision)
        for dets in got:
            for d in dets:
                assert set(d) == {"class", "label_name", "score", "box"}
                x0, y0, x1, y1 = d["box"]
                assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
                assert d["label_name"] == str(d["class"]) and d["score"] >= m.detection["score_threshold"]
    assert np.isfinite([r["e2e_ms"] for r in records]).all()
    # run again: its own earlier results are replaced (anything else at that name is refused)
    again = subprocess.run(
        [sys.executable, "-m", "splitpoint", "demo", "--model", "digits-detector", "--workdir", str(tmp_path),
         "--frames", "1"], capture_output=True, text=True, timeout=600, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert len((tmp_path / "results-detector.jsonl").read_text().splitlines()) == 1


def test_the_agent_records_detections_for_single_and_multi_tensor_splits(detector_bundle: Path, tmp_path: Path):
    """The edge agent itself (not the demo's loop): a multi-tensor cut's every tensor on the
    wire, the compact detections back, and the detections in the results log, for a cloud split and
    for the whole model on the edge."""
    import keras

    from cloud_server.config import CloudConfig
    from cloud_server.server import CloudServer
    from edge_node.agent import EdgeAgent
    from edge_node.config import EdgeConfig
    from edge_node.results import read_results
    from edge_node.source_spec import open_source

    bundle = load_bundle(detector_bundle)
    m = bundle.manifest
    raw, _ = bundle.validation_data()
    multi = next(s.split for s in m.splits if len(s.cut) > 1)
    model = keras.models.load_model(detector_bundle / "cloud" / "tail_0.keras", compile=False)
    outs = model.predict(m.preprocessing.apply_batch(raw), verbose=0)
    size = (m.preprocessing.width, m.preprocessing.height)
    server = CloudServer(CloudConfig(bundle=str(detector_bundle), listen="127.0.0.1:0", insecure=True,
                                     grace_s=2.0)).start()
    try:
        for k in (multi, m.num_layers):
            conf = EdgeConfig(bundle=str(detector_bundle), source=f"synthetic:{len(raw)}", cloud=server.address,
                              split=k, insecure=True, results=str(tmp_path / f"r{k}.jsonl"))
            agent = EdgeAgent.from_config(conf)
            with open_source(conf.source, m.preprocessing, agent.bundle) as source:
                summary = agent.run(source)
            records = sorted(read_results(conf.results), key=lambda r: r["frame_id"])
            assert len(records) == len(raw) and summary.failed == 0
            assert {r["where"] for r in records} == ({"cloud"} if k < m.num_layers else {"local"}), k
            want = [to_source_pixels(decode_frame([o[r["frame_id"]] for o in outs], m.detection), size, size,
                                     m.labels) for r in records]
            recall, precision, n = detection_agreement(want, [r["detections"] for r in records])
            assert n > 0 and recall >= 0.95 and precision >= 0.95, (k, recall, precision)
    finally:
        server.stop()


#: (width, height) of the source images: larger and smaller than the 64x64 input, none square
SOURCE_SIZES = [(160, 96), (100, 140), (56, 48), (48, 60)]


def test_boxes_are_in_the_original_images_pixels_through_real_processes(detector_bundle: Path, tmp_path: Path):
    """Canvases saved as images of other sizes than the model's input, streamed by `splitpoint edge`
    (a real process) through `splitpoint cloud` (another) at a multi-tensor split: every known digit
    comes back with its box in the saved image's pixels, and the agent's summary counts the detections."""
    import keras
    from conftest import CloudProcess
    from PIL import Image

    from edge_node.results import read_results
    from splitpoint.images import read_frame_file_sized

    bundle = load_bundle(detector_bundle)
    m = bundle.manifest
    pre = m.preprocessing
    raw, _ = bundle.validation_data()
    with np.load(bundle.path(m.validation)) as z:  # type: ignore[arg-type]
        rows = z["boxes"]
    truth: list[list[dict]] = [[] for _ in range(len(raw))]
    for row in rows:
        truth[int(row[0])].append({"class": int(row[1]), "score": 1.0, "box": [float(v) for v in row[2:]]})
    model = keras.models.load_model(detector_bundle / "cloud" / "tail_0.keras", compile=False)

    # Write each size's image from the first canvas the float model reads right once resized there and
    # back (the resampling is not what is tested): its digits are the known objects.
    source = tmp_path / "frames"
    source.mkdir()
    expected: dict[str, tuple[list[dict], tuple[int, int]]] = {}
    candidates = iter(range(len(raw)))
    for n, (w, h) in enumerate(SOURCE_SIZES):
        for i in candidates:
            path = source / f"{n:02d}_{w}x{h}.png"
            Image.fromarray(raw[i][..., 0]).resize((w, h), Image.Resampling.BILINEAR).save(path)
            fitted, _ = read_frame_file_sized(path, pre)
            outs = model.predict(pre.apply_batch(fitted[None]), verbose=0)
            found = decode_frame([o[0] for o in outs], m.detection)
            recall, precision, _ = detection_agreement([truth[i]], [found])
            if truth[i] and recall == 1.0 and precision == 1.0:
                sx, sy = w / pre.width, h / pre.height
                known = [{"class": o["class"], "score": 1.0,
                          "box": [o["box"][0] * sx, o["box"][1] * sy, o["box"][2] * sx, o["box"][3] * sy]}
                         for o in truth[i]]
                expected[path.name] = (known, (w, h))
                break
            path.unlink()
    assert len(expected) == len(SOURCE_SIZES), "too few canvases survive resizing"

    multi = next(s.split for s in m.splits if len(s.cut) > 1 and s.tail is not None)
    server = CloudProcess(detector_bundle, "127.0.0.1:0", tmp_path / "cloud.log", [])
    try:
        results = tmp_path / "results.jsonl"
        proc = subprocess.run(
            [sys.executable, "-m", "splitpoint", "edge", "--insecure", "--bundle", str(detector_bundle),
             "--source", str(source), "--cloud", server.address, "--split", str(multi),
             "--results", str(results), "--log-level", "warning"],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
        )
    finally:
        assert server.stop() == 0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = {r["origin"]: r for r in read_results(results)}
    assert set(records) == set(expected)
    for name, (known, (w, h)) in expected.items():
        r = records[name]
        assert (r["status"], r["where"], r["split"]) == ("ok", "cloud", multi)
        recall, _, n = detection_agreement([known], [r["detections"]])
        assert n == len(known) and recall == 1.0, (name, known, r["detections"])
        for d in r["detections"]:
            x0, y0, x1, y1 = d["box"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (name, d)
    # the end-of-run summary counts what the log holds
    total = sum(len(r["detections"]) for r in records.values())
    with_dets = sum(bool(r["detections"]) for r in records.values())
    assert f"{total} detections in {with_dets} of {len(expected)} frames (" in proc.stdout, proc.stdout


def test_the_cloud_answers_with_compact_detections_smaller_than_the_raw_maps(detector_bundle: Path):
    """Every cloud split of the digits detector over a real gRPC server: the answer is one
    "detections" tensor holding what the decoder makes of the split's tail run here on the
    same tensors, and its wire size is a small fraction of the raw maps' it replaces."""
    import grpc
    import keras
    from helpers import running_server

    from edge_node.heads import EdgeHeads
    from edge_node.outputs import cut_request_tensors, decode_detections
    from splitpoint.codec import encode
    from splitpoint.detection import read_compact
    from splitpoint.runtime.litert import Device
    from splitpoint.v1 import offload_pb2, offload_pb2_grpc

    bundle = load_bundle(detector_bundle)
    m = bundle.manifest
    heads = EdgeHeads(bundle, Device("cpu"))
    raw, _ = bundle.validation_data()
    frames = raw[:3]
    sizes: list[tuple[int, int]] = []
    with running_server(detector_bundle) as server, grpc.insecure_channel(server.address) as ch:
        stub = offload_pb2_grpc.OffloadStub(ch)
        for s in m.splits:
            if s.tail is None:
                continue
            tail = keras.models.load_model(bundle.path(s.tail), compile=False)
            for i, frame in enumerate(frames):
                out = heads.run(s.split, heads.preprocess(frame))
                req = offload_pb2.InferRequest(frame_id=i, model_digest=m.model_digest, split=s.split)
                req.tensors.extend(cut_request_tensors(out, s))
                resp = stub.InferFrame(req, timeout=60)
                assert [t.name for t in resp.outputs] == ["detections"], s.split
                compact = decode_detections(resp, m)
                got = read_compact(compact, m)
                feed = [q.dequantize(a) for a, q in zip(out.arrays, out.quantizations, strict=True)]
                maps = [np.asarray(o) for o in tail(feed if len(feed) > 1 else feed[0], training=False)]
                want = decode_frame(maps, m.detection)
                recall, precision, _ = detection_agreement([want], [got])
                assert len(got) == len(want) and (recall, precision) == (1.0, 1.0), (s.split, want, got)
                raw_maps = [encode(np.asarray(o, np.float32), name=t.name) for o, t in zip(maps, m.outputs, strict=True)]
                sizes.append((sum(t.ByteSize() for t in resp.outputs), sum(t.ByteSize() for t in raw_maps)))
    assert sizes
    for answer, maps_bytes in sizes:  # e.g. ~100-500 bytes against 12 KB of maps
        assert answer * 10 < maps_bytes, (answer, maps_bytes)


@pytest.mark.parametrize(("mangle", "said"), [
    (lambda d: d["detection"].__setitem__("heatmap", 5), "detection.heatmap = 5: the model has 2 output(s)"),
    (lambda d: d["detection"].__setitem__("stride", 8), "detection.stride = 8: a 16x16 heatmap at stride 8 covers 128x128"),
    (lambda d: d["detection"].__setitem__("kind", "yolo"), "detection.kind = 'yolo': unsupported"),
    (lambda d: d["detection"].__setitem__("score_threshold", "x"), "detection.score_threshold = 'x'"),
    (lambda d: d["model"].__setitem__("labels", ["a"]), 'labels = ["a"]: the heatmap has 10 classes'),
    # partition refuses labels given twice; a hand-edited manifest loaded with them
    (lambda d: d["model"]["labels"].__setitem__(1, d["model"]["labels"][0]), "model.labels = [\"0\", \"0\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\"]: '0' is given twice"),
    (lambda d: d.__setitem__("detection", [1]), "detection = [1]: must be a JSON object"),
])
def test_a_detection_block_the_decoder_cannot_use_is_refused_at_load(detector_bundle: Path, tmp_path: Path,
                                                                      mangle: Any, said: str):
    """Each once loaded ('inspect': all artifacts present); the agent then hung on its first frame."""
    from splitpoint.errors import BundleError

    copy = tmp_path / "b"
    shutil.copytree(detector_bundle, copy)
    d = json.loads((copy / "manifest.json").read_text())
    mangle(d)
    (copy / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match="malformed manifest") as info:
        load_bundle(copy)
    assert said in str(info.value)


@pytest.mark.parametrize("case", ["heatmap out of range", "stride left out"])
def test_the_agent_on_a_hand_edited_detection_block(detector_bundle: Path, tmp_path: Path, case: str):
    """`splitpoint edge` (a real process) on a bundle whose detection block was edited: it hung with
    an IndexError (or KeyError) traceback per frame from its local-run thread until killed. Now a
    block it cannot decode with is exit 2 naming the key before any frame, and a key left out takes
    the default as partition's own --detection file does."""
    copy = tmp_path / "b"
    shutil.copytree(detector_bundle, copy)
    d = json.loads((copy / "manifest.json").read_text())
    if case == "heatmap out of range":
        d["detection"]["heatmap"] = 5
    else:
        del d["detection"]["stride"]
    (copy / "manifest.json").write_text(json.dumps(d))
    k = d["model"]["num_layers"]
    proc = subprocess.run(
        [sys.executable, "-m", "splitpoint", "edge", "--bundle", str(copy), "--source", "synthetic:3",
         "--split", str(k), "--results", str(tmp_path / "r.jsonl")],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if case == "heatmap out of range":
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "malformed manifest" in proc.stderr and "detection.heatmap = 5" in proc.stderr
        assert not (tmp_path / "r.jsonl").exists()
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
        assert len(records) == 3 and all(r["status"] == "ok" and r["detections"] for r in records)


def test_inspect_shows_a_detectors_agreement_and_every_cut_tensor(detector_bundle: Path,
                                                                  capsys: pytest.CaptureFixture[str]):
    """`splitpoint inspect` (and partition's table) said 'top-1 agree 0.0%' for every split of a
    detector, which has no top-1 agreement, and showed only the first tensor of a multi-tensor cut
    beside the wire bytes of all of them."""
    from splitpoint.cli import main

    m = load_bundle(detector_bundle).manifest
    assert main(["inspect", str(detector_bundle)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "det. agree" in lines[1] and "top-1" not in lines[1]
    rows = {int(line.split()[0]): line for line in lines[2:2 + len(m.splits)]}
    for s in m.splits:
        assert f"{s.verification['agreement']:.1%}" in rows[s.split], rows[s.split]
        assert (f"+{len(s.cut) - 1} more" in rows[s.split]) == (len(s.cut) > 1), rows[s.split]
