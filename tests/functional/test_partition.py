"""Partitioning real models into bundles: conversion, verification, manifest, tampering, CLI.

The digits bundle comes from the session fixture `digits_bundle` (tests/conftest.py);
anything that modifies a bundle works on a copy of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
layers = keras.layers

from splitpoint.bundle import MANIFEST, Preprocessing, load_bundle, split_ranges  # noqa: E402
from splitpoint.cli import main  # noqa: E402
from splitpoint.errors import BundleError, PartitionError, VerificationError  # noqa: E402
from splitpoint.models import ModelSource, reference_model  # noqa: E402
from splitpoint.partition import (  # noqa: E402
    PartitionOptions,
    as_functional,
    compile_edgetpu,
    find_cut_points,
    model_digest,
    partition,
)
from splitpoint.runtime.litert import HeadRunner  # noqa: E402

DIGITS_K = 7


class _Quiet:
    def update(self, label: str, advance: int = 1) -> None:
        pass


def quiet(total: int) -> _Quiet:
    return _Quiet()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bundle_copy(digits_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(digits_bundle, dst)
    return dst


# --------------------------------------------------------------------------- the digits bundle


def test_digits_manifest_records_agreement_for_every_split(digits_bundle: Path):
    m = load_bundle(digits_bundle).manifest
    assert m.split_ids == list(range(DIGITS_K + 1))
    for s in m.splits:
        v = s.verification
        assert v["samples"] == 360, s.split
        assert v["top1_agreement"] >= 0.98, (s.split, v)
        assert v["enforced"] is True and v["passed"] is True and v["min_agreement"] == 0.98


def test_digits_splits_recomputed_independently(digits_bundle: Path):
    """head (LiteRT) -> dequantize -> tail (Keras) matches the float model, computed here from the files."""
    bundle = load_bundle(digits_bundle)
    m = bundle.manifest
    raw, labels = bundle.validation_data()
    assert raw.dtype == np.uint8 and len(raw) == 360 and labels is not None
    x = m.preprocessing.apply_batch(raw)
    assert x.shape == (360, 8, 8, 1)
    float_model = keras.models.load_model(digits_bundle / "cloud" / "tail_0.keras", compile=False)
    reference = np.argmax(float_model.predict(x, verbose=0), axis=1)
    assert np.mean(reference == labels) >= 0.95
    in_q = m.input_wire.quantization
    assert in_q is not None and m.input_wire.dtype == "uint8"

    for s in m.splits:
        k = s.split
        if k == 0:
            wire = in_q.quantize(x, np.uint8)
            assert wire.dtype == np.uint8
            cut_q = s.cut[0].quantization
            assert cut_q == in_q
        else:
            runner = HeadRunner(bundle.path(s.head))
            assert runner.input_dtype == np.uint8
            assert runner.input_quantization == in_q  # every head takes the same quantized input
            wire = np.concatenate([runner.run(in_q.quantize(xi[None], np.uint8)) for xi in x])
            if k < DIGITS_K:
                (cut,) = s.cut
                assert runner.output_quantization == cut.quantization
                assert runner.output_shape == cut.shape and runner.output_dtype.name == cut.dtype == "int8"
                cut_q = cut.quantization
            else:
                assert s.cut == [] and s.tail is None
                cut_q = runner.output_quantization
        assert cut_q is not None
        deq = cut_q.dequantize(wire)
        if s.tail is not None:
            tail = keras.models.load_model(bundle.path(s.tail), compile=False)
            out = np.asarray(tail.predict(deq, verbose=0))
        else:
            out = deq
        pred = np.argmax(out.reshape(len(x), -1), axis=1)
        agreement = float(np.mean(pred == reference))
        assert agreement >= 0.98, (k, agreement)
        assert float(np.mean(pred == labels)) >= 0.95, k
        assert abs(agreement - s.verification["top1_agreement"]) <= 2 / len(x), k


def test_digits_manifest_fields(digits_bundle: Path):
    d = json.loads((digits_bundle / MANIFEST).read_text())
    assert d["format"] == "splitpoint-bundle" and d["schema_version"] == 1
    assert d["created_by"].startswith("splitpoint ")
    model = d["model"]
    assert model["name"] == "digits-cnn" and model["num_layers"] == DIGITS_K
    assert model["labels"] == [str(i) for i in range(10)]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", model["digest"])
    assert model["digest"] == model_digest(as_functional(reference_model("digits-cnn").model))

    inp = d["input"]
    assert inp["tensor"] == {"name": "input", "shape": [1, 8, 8, 1], "dtype": "float32", "quantization": None}
    assert inp["wire"]["shape"] == [1, 8, 8, 1] and inp["wire"]["dtype"] == "uint8"
    wq = inp["wire"]["quantization"]
    assert len(wq["scale"]) == 1 and wq["scale"][0] > 0 and len(wq["zero_point"]) == 1
    assert inp["preprocessing"] == {"resize": [8, 8], "channels": 1, "scale": 1.0 / 255.0, "offset": 0.0}
    assert d["output"]["shape"] == [1, 10] and d["output"]["dtype"] == "float32"

    part = d["partition"]
    assert part["candidate_splits"] == list(range(DIGITS_K + 1))
    assert part["min_agreement"] == 0.98 and part["agreement_enforced"] is True
    assert part["calibration"] == "builtin:256"
    assert part["edgetpu_compiler"] is None

    def check_artifact(art: dict, path: str) -> None:
        assert art["path"] == path
        assert re.fullmatch(r"[0-9a-f]{64}", art["sha256"])
        assert art["sha256"] == sha256(digits_bundle / path)
        assert art["bytes"] == (digits_bundle / path).stat().st_size

    check_artifact(d["validation"], "data/validation.npz")
    names = ["conv1", "conv2", "pool", "conv3", "flatten", "fc1", "predictions"]
    cut_shapes = {0: [1, 8, 8, 1], 1: [1, 8, 8, 16], 2: [1, 8, 8, 32], 3: [1, 4, 4, 32],
                  4: [1, 4, 4, 32], 5: [1, 512], 6: [1, 64]}
    prev_params = 0
    for k, s in enumerate(d["splits"]):
        assert s["split"] == k
        assert s["after_layer"] == (names[k - 1] if k else None)
        v = s["verification"]
        assert set(v) >= {"samples", "top1_agreement", "max_abs_error", "min_agreement", "enforced", "passed"}
        assert 0 <= v["max_abs_error"] < 1
        if k < DIGITS_K:
            (cut,) = s["cut"]
            assert cut["shape"] == cut_shapes[k]
            assert cut["dtype"] == ("uint8" if k == 0 else "int8")
            q = cut["quantization"]
            assert len(q["scale"]) == 1 and q["scale"][0] > 0
            info = np.iinfo(cut["dtype"])
            assert info.min <= q["zero_point"][0] <= info.max
            assert s["wire_bytes"] == int(np.prod(cut["shape"]))  # one byte per element
            check_artifact(s["tail"], f"cloud/tail_{k}.keras")
        else:
            assert s["cut"] == [] and s["wire_bytes"] == 0 and s["tail"] is None
        tpu = s["edgetpu"]
        assert tpu["status"] == "not compiled" and tpu["reason"] and tpu["head"] is None
        if k == 0:
            assert s["head"] is None and s["head_param_bytes"] == 0
            assert tpu["reason"] == "k = 0 has no head"
        else:
            check_artifact(s["head"], f"edge/head_{k}.tflite")
            assert "edgetpu_compiler" in tpu["reason"]
            assert s["head_param_bytes"] >= prev_params > 0 or k == 1
            assert s["head_param_bytes"] > 0 and s["head_fits_edgetpu_cache"] is True
            prev_params = s["head_param_bytes"]
    # Nothing stray is left behind.
    assert not (digits_bundle / ".work").exists()
    assert sorted(p.name for p in (digits_bundle / "edge").iterdir()) == sorted(
        f"head_{k}.tflite" for k in range(1, DIGITS_K + 1)
    )


# --------------------------------------------------------------------------- tampering


def test_modified_head_is_refused_naming_it(bundle_copy: Path):
    head = bundle_copy / "edge" / "head_3.tflite"
    data = bytearray(head.read_bytes())
    data[len(data) // 2] ^= 0x01
    head.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"head_3\.tflite.*modified"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match=r"head_3\.tflite"):
        load_bundle(bundle_copy, side="edge")
    load_bundle(bundle_copy, side="cloud")  # the cloud side does not use heads


def test_truncated_head_is_refused(bundle_copy: Path):
    head = bundle_copy / "edge" / "head_5.tflite"
    head.write_bytes(head.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"head_5\.tflite has \d+ bytes"):
        load_bundle(bundle_copy)


def test_missing_tail_is_refused_naming_it(bundle_copy: Path):
    (bundle_copy / "cloud" / "tail_2.keras").unlink()
    with pytest.raises(BundleError, match=r"tail_2\.keras is missing"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match=r"tail_2\.keras"):
        load_bundle(bundle_copy, side="cloud")


@pytest.mark.parametrize("target, said", [("self", "is a symlink loop, not a file"),
                                           ("nowhere", "is a broken symlink, not a file")])
def test_an_artifact_that_is_a_symlink_to_nothing_is_named_as_one(bundle_copy: Path, target: str, said: str):
    """It was 'missing from the bundle (partial copy?)', which sent the user looking for a copy fault."""
    npz = bundle_copy / "data" / "validation.npz"
    npz.unlink()
    npz.symlink_to(npz if target == "self" else bundle_copy / "nowhere.npz")
    with pytest.raises(BundleError, match=f"validation.npz {said}"):
        load_bundle(bundle_copy)


def test_truncated_manifest_is_refused(bundle_copy: Path):
    mpath = bundle_copy / MANIFEST
    text = mpath.read_text()
    mpath.write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match="unreadable manifest"):
        load_bundle(bundle_copy)


def _mangle_first_head(d: dict, key: str, value: object) -> None:
    head = next(s["head"] for s in d["splits"] if s["head"])
    head[key] = value


@pytest.mark.parametrize(("mangle", "said"), [
    # a manifest must not make the loader read, and a runner execute, a file outside the bundle
    (lambda d: _mangle_first_head(d, "path", "/etc/hostname"), 'artifact path "/etc/hostname" is not a path inside'),
    (lambda d: _mangle_first_head(d, "path", "../../outside.tflite"), "is not a path inside the bundle"),
    (lambda d: _mangle_first_head(d, "path", None), 'artifact path "" is not a path inside'),
    (lambda d: _mangle_first_head(d, "sha256", None), "sha256 null is not 64 hex digits"),
    (lambda d: _mangle_first_head(d, "bytes", "5"), 'bytes "5" is not a byte count'),
    (lambda d: d["splits"].__setitem__(slice(None), []), "no splits"),
    (lambda d: d["splits"].append(dict(d["splits"][1])), "splits listed twice: 1"),
    (lambda d: d["splits"][1].__setitem__("split", "1"), 'splits[1].split = "1": must be a whole number >= 0'),
    (lambda d: d["splits"][1].__setitem__("split", 999), "are not among 0-"),
    (lambda d: d["splits"].pop(), "with 7 (all on the edge) among them"),
    (lambda d: d["splits"][2].__setitem__("head", None), "split 2 has no head"),
    (lambda d: d["splits"][2].__setitem__("verification", [1]), "splits[2].verification = [1]: must be a JSON object"),
    (lambda d: d["model"].__setitem__("labels", ["one"]), "1 labels for 10 classes"),
    (lambda d: d["model"].__setitem__("labels", list("0123456701")), "model.labels = [\"0\", \"1\", \"2\", \"3\", "
     "\"4\", \"5\", \"6\", \"7\", \"0\", \"1\"]: '0' is given twice; each class needs a label of its own"),
    # these once loaded and ended in a traceback in `inspect` or `profile` (a number where a string
    # goes), or in an error blamed on the device (a head fed the wrong shape), or were never read
    (lambda d: d["model"].__setitem__("digest", 5), "model.digest = 5: must be a string"),
    (lambda d: d["model"].__setitem__("num_layers", "7"), 'model.num_layers = "7": must be a whole number >= 1'),
    (lambda d: d["model"].__setitem__("labels", "0123456789"), 'model.labels = "0123456789": must be a JSON list'),
    (lambda d: d["splits"][2].__setitem__("after_layer", 5), "splits[2].after_layer = 5: must be a string"),
    (lambda d: d["splits"][2]["edgetpu"].__setitem__("status", 5), "splits[2].edgetpu.status = 5: must be a string"),
    (lambda d: d["splits"][2]["verification"].__setitem__("max_abs_error", "x"),
     'splits[2].verification.max_abs_error = "x": must be a finite number'),
    (lambda d: d["splits"][2]["cut"][0].__setitem__("shape", [1, -8]), "splits[2].cut[0].shape[1] = -8: must be"),
    (lambda d: d["input"]["preprocessing"].__setitem__("channels", 7), "input.preprocessing.channels = 7: must be 1"),
    (lambda d: d["input"]["preprocessing"].__setitem__("resize", [0, 0]), "input.preprocessing.resize[0] = 0: must be"),
    (lambda d: d["input"]["preprocessing"].__setitem__("resize", [4, 4]),
     "input.preprocessing makes [1, 4, 4, 1] (resize 4x4, 1 channel(s)) but input.tensor.shape is [1, 8, 8, 1]"),
    (lambda d: d["input"]["wire"]["quantization"].__setitem__("scale", [0.0]),
     "input.wire.quantization.scale = 0.0: must be finite and > 0"),
    (lambda d: d["input"]["wire"].__setitem__("quantization", None), "input.wire must be the quantized input tensor"),
    (lambda d: d["input"]["wire"]["quantization"].__setitem__("scale", ["x"]),
     'input.wire.quantization = {"scale": ["x"], "zero_point": [0], "axis": 0}: must hold lists of numbers'),
])
def test_a_manifest_that_loads_but_is_wrong_is_refused(bundle_copy: Path, mangle: Any, said: str):
    """Each of these once loaded, `inspect` saying 'all artifacts present', and failed later
    (a bench traceback on no splits) or read a file outside the bundle."""
    mpath = bundle_copy / MANIFEST
    d = json.loads(mpath.read_text())
    mangle(d)
    mpath.write_text(json.dumps(d))
    with pytest.raises(BundleError, match="malformed manifest") as info:
        load_bundle(bundle_copy)
    assert said in str(info.value)


def test_a_schema_version_of_true_is_not_1(bundle_copy: Path):
    mpath = bundle_copy / MANIFEST
    mpath.write_text(mpath.read_text().replace('"schema_version": 1', '"schema_version": true'))
    with pytest.raises(BundleError, match="schema_version true is not supported"):
        load_bundle(bundle_copy)


def test_a_head_that_is_a_directory_is_not_called_missing(bundle_copy: Path):
    head = next(p for p in (bundle_copy / "edge").iterdir())
    head.unlink()
    head.mkdir()
    with pytest.raises(BundleError, match=r"is not a regular file \(a directory, a pipe or a device\)$"):
        load_bundle(bundle_copy)


def test_a_manifest_nested_too_deep_is_unreadable_not_a_recursion_traceback(bundle_copy: Path):
    (bundle_copy / MANIFEST).write_text("[" * 100_000)
    with pytest.raises(BundleError, match="unreadable manifest .RecursionError"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("mangle", ["top-level list", "split not a table"])
def test_a_manifest_of_the_wrong_shape_is_refused(bundle_copy: Path, mangle: str):
    """Valid JSON of another shape once ended in AttributeError tracebacks (cloud, loadtest, doctor)."""
    mpath = bundle_copy / MANIFEST
    d = json.loads(mpath.read_text())
    if mangle == "top-level list":
        d = [d]
    else:
        d["splits"] = ["a"]
    mpath.write_text(json.dumps(d))
    with pytest.raises(BundleError, match="not a splitpoint bundle manifest|malformed manifest"):
        load_bundle(bundle_copy)


def test_a_tail_that_is_not_a_keras_file_is_a_bundle_error(tmp_path: Path):
    """Exit 2 like any modified bundle, not 'File not found' for a file that is there (Keras' words)."""
    from splitpoint.runtime.tails import TailRunner

    bogus = tmp_path / "tail_2.keras"
    bogus.write_bytes(b"\x00not a zip archive" * 10)
    with pytest.raises(BundleError, match=r"tail_2\.keras: not a \.keras file \(not a zip archive\)$"):
        TailRunner(bogus, 2)


def test_missing_manifest_is_refused(bundle_copy: Path):
    (bundle_copy / MANIFEST).unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(bundle_copy)
    os.mkfifo(bundle_copy / MANIFEST)  # was "is missing" too, of a file that is there
    with pytest.raises(BundleError, match="manifest.json is not a regular file"):
        load_bundle(bundle_copy)


def test_edge_side_does_not_need_cloud_files(bundle_copy: Path):
    shutil.rmtree(bundle_copy / "cloud")
    bundle = load_bundle(bundle_copy, side="edge")
    assert bundle.manifest.split_ids == list(range(DIGITS_K + 1))
    with pytest.raises(BundleError, match=r"tail_0\.keras is missing"):
        load_bundle(bundle_copy)


# --------------------------------------------------------------------------- options and errors


def test_non_empty_output_without_force_is_refused(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PartitionError, match="not empty.*--force"):
        partition(reference_model("digits-cnn"), PartitionOptions(output=out, edgetpu_compiler=None), progress=quiet)
    with pytest.raises(PartitionError, match="not a splitpoint bundle"):
        partition(
            reference_model("digits-cnn"), PartitionOptions(output=out, force=True, edgetpu_compiler=None), progress=quiet
        )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_bad_splits_with_force_keeps_the_existing_bundle(bundle_copy: Path):
    before = (bundle_copy / MANIFEST).read_text()
    opts = PartitionOptions(output=bundle_copy, splits=[3, 99, 98], force=True, edgetpu_compiler=None)
    with pytest.raises(PartitionError, match=r"98-99 are not candidate splits of digits-cnn; candidates: 0-7$"):
        partition(reference_model("digits-cnn"), opts, progress=quiet)
    assert (bundle_copy / MANIFEST).read_text() == before
    load_bundle(bundle_copy)


@pytest.fixture(scope="module")
def mobilenet_src() -> ModelSource:
    return reference_model("mobilenetv2", input_size=32)


def test_non_candidate_split_lists_candidates(mobilenet_src: ModelSource, tmp_path: Path):
    cuts, _ = find_cut_points(as_functional(mobilenet_src.model))
    candidates = [c.split for c in cuts]
    inside = next(k for k in range(1, candidates[-1]) if k not in candidates)  # inside block 2
    out = tmp_path / "mb"
    opts = PartitionOptions(output=out, splits=[inside], calibration_random=8, edgetpu_compiler=None,
                            max_cut_tensors=1)  # single-tensor cut points: the block's inside is no candidate
    with pytest.raises(PartitionError) as info:
        partition(mobilenet_src, opts, progress=quiet)
    msg = str(info.value)
    assert f"--splits: {inside} is not a candidate split of mobilenetv2" in msg
    assert f"candidates: {split_ranges(candidates)}" in msg
    assert not out.exists()  # nothing was written for a bad request


@pytest.mark.slow
def test_mobilenetv2_selected_splits(mobilenet_src: ModelSource, tmp_path: Path):
    model = as_functional(mobilenet_src.model)
    cuts, num_layers = find_cut_points(model)
    by_name = {c.layer: c for c in cuts}
    mids = [by_name["block_2_add"], by_name["block_6_project_BN"]]
    out = tmp_path / "mb"
    opts = PartitionOptions(
        output=out, splits=[c.split for c in mids], calibration_random=8, edgetpu_compiler=None, max_cut_tensors=1
    )
    manifest = partition(mobilenet_src, opts, progress=quiet)

    bundle = load_bundle(out)
    m = bundle.manifest
    assert m.split_ids == [0, mids[0].split, mids[1].split, num_layers] == manifest.split_ids
    assert m.num_layers == num_layers == 155
    assert m.partition["candidate_splits"] == [c.split for c in cuts]
    assert m.partition["calibration"] == "random:8"
    assert m.partition["agreement_enforced"] is False
    assert m.input.shape == (1, 32, 32, 3) and m.output.shape == (1, 1000)
    for cut in mids:
        s = m.split(cut.split)
        assert s.after_layer == cut.layer
        (spec,) = s.cut
        assert spec.shape == (1, *cut.tensor.shape[1:]) and spec.dtype == "int8"
        assert s.wire_bytes == int(np.prod(spec.shape))
        assert s.verification["samples"] == 8 and s.verification["enforced"] is False
    assert sorted(p.name for p in (out / "edge").iterdir()) == sorted(
        f"head_{k}.tflite" for k in m.split_ids if k > 0
    )
    assert sorted(p.name for p in (out / "cloud").iterdir()) == sorted(
        f"tail_{k}.keras" for k in m.split_ids if k < num_layers
    )
    # The mid head really takes the image and emits the cut tensor.
    runner = HeadRunner(bundle.path(m.split(mids[0].split).head))
    assert runner.input_shape == (1, 32, 32, 3)
    assert runner.output_shape == m.split(mids[0].split).cut[0].shape


# --------------------------------------------------------------------------- edgetpu_compiler


FAKE_COMPILER = """#!{python}
import shutil, sys
from pathlib import Path
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(" ".join(args) + "\\n")
out = Path(args[args.index("-o") + 1])
head = Path(args[-1])
shutil.copyfile(head, out / (head.stem + "_edgetpu.tflite"))
print("Edge TPU Compiler version 16.0.384591705")
print()
print("Model compiled successfully in 12 ms.")
print()
print("Input model: " + str(head))
print("Output model: " + str(out / (head.stem + "_edgetpu.tflite")))
print("On-chip memory used for caching model parameters: 10.50KiB")
print("Number of operations that will run on Edge TPU: 5")
print("Number of operations that will run on CPU: 1")
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_compiler(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "compiler.log"
    return _script(tmp_path / "edgetpu_compiler", FAKE_COMPILER.format(python=sys.executable, log=str(log))), log


@pytest.mark.slow
def test_fake_edgetpu_compiler_is_recorded(fake_compiler: tuple[Path, Path], tmp_path: Path):
    compiler, log = fake_compiler
    out = tmp_path / "b"
    opts = PartitionOptions(output=out, splits=[3], edgetpu_compiler=str(compiler))
    partition(reference_model("digits-cnn"), opts, progress=quiet)
    calls = sorted(log.read_text().splitlines())
    # the bundle is built beside -o (.b.partial-*) and moved into place once verified
    staged = re.escape(str(tmp_path)) + r"/\.b\.partial-\d+-[0-9a-f]+"
    assert len(calls) == 2
    for call, k in zip(calls, (3, DIGITS_K), strict=True):
        assert re.fullmatch(f"-s -o ({staged})/edge \\1/edge/head_{k}\\.tflite", call), call

    d = json.loads((out / MANIFEST).read_text())
    assert d["partition"]["edgetpu_compiler"] == str(compiler)
    by_k = {s["split"]: s for s in d["splits"]}
    assert sorted(by_k) == [0, 3, DIGITS_K]
    assert by_k[0]["edgetpu"]["status"] == "not compiled"
    for k in (3, DIGITS_K):
        tpu = by_k[k]["edgetpu"]
        assert tpu["status"] == "compiled"
        assert tpu["compiler_version"] == "16.0.384591705"
        assert tpu["ops_on_edgetpu"] == 5 and tpu["ops_on_cpu"] == 1
        art = tpu["head"]
        assert art["path"] == f"edge/head_{k}_edgetpu.tflite"
        assert art["sha256"] == sha256(out / art["path"])
        assert art["bytes"] == (out / art["path"]).stat().st_size
    bundle = load_bundle(out, side="edge")
    assert bundle.manifest.split(3).edgetpu_head is not None
    # The compiled head is a bundle artifact like any other: tampering with it is caught.
    tpu_head = out / "edge" / "head_3_edgetpu.tflite"
    tpu_head.write_bytes(tpu_head.read_bytes()[:-1] + b"\x00")
    with pytest.raises(BundleError, match=r"head_3_edgetpu\.tflite"):
        load_bundle(out, side="edge")


@pytest.mark.slow
def test_failing_edgetpu_compiler_does_not_fail_partitioning(tmp_path: Path):
    compiler = _script(
        tmp_path / "edgetpu_compiler",
        "#!/bin/sh\necho 'Edge TPU Compiler version 16.0.384591705'\n"
        "echo \"ERROR: Didn't find op for builtin opcode 'FOO'\" >&2\nexit 1\n",
    )
    out = tmp_path / "b"
    opts = PartitionOptions(output=out, splits=[2], edgetpu_compiler=str(compiler))
    manifest = partition(reference_model("digits-cnn"), opts, progress=quiet)
    for k in (2, DIGITS_K):
        s = manifest.split(k)
        assert s.edgetpu["status"] == "failed"
        assert "exit 1" in s.edgetpu["reason"] and "FOO" in s.edgetpu["reason"]
        assert s.edgetpu_head is None
        assert s.verification["passed"] is True
    assert not list((out / "edge").glob("*_edgetpu.tflite"))
    load_bundle(out)
    # the table partition and inspect print says why, not only "failed" (the reason was in the manifest alone)
    from splitpoint.cli import _bundle_table

    (line,) = [x for x in _bundle_table(manifest).splitlines() if x.startswith("edge tpu:")]
    assert line.startswith(f"edge tpu: heads 2, {DIGITS_K} failed to compile (exit 1: ") and "FOO" in line, line


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("#!/bin/sh\necho 'Edge TPU Compiler version 16.0.384591705'\nexit 0\n", "exit 0"),  # no output file
        ("#!/bin/sh\necho 'Internal compiler error. Aborting!'\nexit 2\n", "Internal compiler error"),
        (None, "No such file"),
        # wrote a model and said nothing: it was recorded "compiled, 0/0 ops" and offered to the edge
        ('#!/bin/sh\nfor a; do h="$a"; done\ncp "$h" "$(dirname "$h")/head_1_edgetpu.tflite"\n',
         "wrote head_1_edgetpu.tflite but not edgetpu_compiler's operation counts (it printed: nothing)"),
    ],
    ids=["no-output", "exit-2", "missing", "silent"],
)
def test_compile_edgetpu_failures(digits_bundle: Path, tmp_path: Path, script: str | None, reason: str):
    head = tmp_path / "head_1.tflite"
    shutil.copyfile(digits_bundle / "edge" / "head_1.tflite", head)
    compiler = tmp_path / "edgetpu_compiler"
    if script is not None:
        _script(compiler, script)
    result = compile_edgetpu(str(compiler), head, tmp_path)
    assert result["status"] == "failed"
    assert reason in result["reason"], result
    assert not (tmp_path / "head_1_edgetpu.tflite").exists()


def test_a_compiler_that_hangs_is_not_run_again(digits_bundle: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each head waited the full timeout (600 s) of a compiler that hung, silently: after the
    first, the rest are failed at once, and the user is told."""
    from splitpoint import edgetpu_compile

    monkeypatch.setattr(edgetpu_compile, "COMPILE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(edgetpu_compile, "_TIMED_OUT", set())
    compiler = _script(tmp_path / "edgetpu_compiler", f"#!/bin/sh\necho run >> {tmp_path / 'runs'}\nexec sleep 30\n")
    head = tmp_path / "head_1.tflite"
    shutil.copyfile(digits_bundle / "edge" / "head_1.tflite", head)
    first = compile_edgetpu(str(compiler), head, tmp_path)
    second = compile_edgetpu(str(compiler), head, tmp_path)
    assert first["status"] == "failed" and "did not finish in" in first["reason"], first
    assert second["status"] == "failed" and "ran out of its" in second["reason"], second
    assert (tmp_path / "runs").read_text() == "run\n"  # run once


# --------------------------------------------------------------------------- verification


def _tied_logits_model() -> keras.Model:
    """Two logits 0.1% apart: the float model decides by x[0] vs x[1], int8 cannot tell them apart."""
    inp = keras.Input((4, 4, 1), name="image")
    x = layers.Flatten(name="flatten")(inp)
    dense = layers.Dense(2, name="logits")
    out = dense(x)
    w = np.ones((16, 2), np.float32)
    w[0, 1] += 1e-3
    w[1, 1] -= 1e-3
    dense.set_weights([w, np.zeros(2, np.float32)])
    return keras.Model(inp, out, name="tied")


def _tied_source() -> ModelSource:
    from splitpoint.bundle import Preprocessing

    return ModelSource(
        name="tied", source="test:tied", model=_tied_logits_model(),
        preprocessing=Preprocessing(4, 4, 1, 1.0 / 255.0, 0.0), labels=[], trained=False,
    )


@pytest.mark.slow
def test_verification_failure_writes_no_manifest(tmp_path: Path):
    out = tmp_path / "tied"
    opts = PartitionOptions(output=out, calibration_random=16, min_agreement=0.9, edgetpu_compiler=None)
    with pytest.raises(VerificationError) as info:
        partition(_tied_source(), opts, progress=quiet)
    msg = str(info.value)
    assert "k=2" in msg and "fewer than 90%" in msg and "No manifest was written" in msg
    assert list(tmp_path.iterdir()) == []  # built beside -o and removed: no partial bundle is left
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(out)


@pytest.mark.slow
def test_random_weights_agreement_is_recorded_not_enforced(tmp_path: Path):
    out = tmp_path / "tied"
    opts = PartitionOptions(output=out, calibration_random=16, edgetpu_compiler=None)
    manifest = partition(_tied_source(), opts, progress=quiet)
    v = manifest.split(2).verification
    assert v["enforced"] is False and v["passed"] is False and v["top1_agreement"] < 0.9
    assert manifest.split(0).verification["passed"] is True
    assert load_bundle(out).manifest.partition["agreement_enforced"] is False


# --------------------------------------------------------------------------- CLI


def test_cli_partition_missing_model(tmp_path: Path, capsys):
    bad = tmp_path / "nonexistent.keras"
    out = tmp_path / "out"
    assert main(["partition", str(bad), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert "splitpoint partition: error:" in captured.err
    assert str(bad) in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


@pytest.mark.filterwarnings("ignore:You are saving a model that has not yet been built")
def test_cli_partition_unbuilt_sequential(tmp_path: Path, capsys):
    path = tmp_path / "unbuilt.keras"
    keras.Sequential([layers.Conv2D(3, 3)], name="unbuilt").save(path)
    assert main(["partition", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'unbuilt' is not built" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("splits", "expected"),
    [("2,x", "'x' is not a split number"), ("99", "99 is not a candidate split of digits-cnn; candidates: 0-7")],
)
def test_cli_partition_bad_splits(tmp_path: Path, capsys, splits: str, expected: str):
    out = tmp_path / "out"
    assert main(["partition", "digits-cnn", "-o", str(out), "--splits", splits]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["1.5", "-0.1", "abc"])
def test_cli_min_agreement_out_of_range(tmp_path: Path, capsys, value: str):
    with pytest.raises(SystemExit) as info:
        main(["partition", "digits-cnn", "-o", str(tmp_path / "out"), "--min-agreement", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--min-agreement" in err and value in err
    assert not (tmp_path / "out").exists()


def test_cli_inspect(digits_bundle: Path, capsys):
    assert main(["inspect", str(digits_bundle)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("digits-cnn: 7 layers, digest sha256:")
    assert lines[1].split()[:3] == ["k", "after", "layer"]
    rows = [ln.split() for ln in lines[2:2 + DIGITS_K + 1]]
    assert [r[0] for r in rows] == [str(k) for k in range(DIGITS_K + 1)]
    assert rows[0][1:3] == ["(input)", "1x8x8x1"]
    assert rows[2][1:4] == ["conv2", "1x8x8x32", "2048"]
    assert "not compiled" in out and "100.0%" in out
    assert "all artifacts present and matching their sha256" in out


def test_cli_inspect_tampered(bundle_copy: Path, capsys):
    (bundle_copy / "cloud" / "tail_4.keras").unlink()
    assert main(["inspect", str(bundle_copy)]) == 2  # an input the user named is wrong: the usage/input exit code
    err = capsys.readouterr().err
    assert "tail_4.keras is missing" in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_partition_and_force(tmp_path: Path, capsys):
    out = tmp_path / "b"
    assert main(["partition", "digits-cnn", "-o", str(out), "--splits", "4"]) == 0
    captured = capsys.readouterr()
    assert f"bundle written to {out}" in captured.out and "(3 splits" in captured.out
    assert load_bundle(out).manifest.split_ids == [0, 4, DIGITS_K]
    # Without --force the bundle is not replaced; a bad request with --force does not destroy it.
    assert main(["partition", "digits-cnn", "-o", str(out)]) == 2
    assert "use --force" in capsys.readouterr().err
    assert main(["partition", "digits-cnn", "-o", str(out), "--splits", "99", "--force"]) == 2
    assert load_bundle(out).manifest.split_ids == [0, 4, DIGITS_K]


def compiled_at_3(fake_compiler: tuple[Path, Path], tmp_path: Path) -> Any:
    """digits-cnn partitioned at split 3 by the fake compiler: head 3 has an Edge TPU twin."""
    compiler, _ = fake_compiler
    out = tmp_path / "b"
    partition(reference_model("digits-cnn"), PartitionOptions(output=out, splits=[3], edgetpu_compiler=str(compiler)),
              progress=quiet)
    return load_bundle(out, side="edge")


def test_a_tpu_head_that_will_not_prepare_falls_back_to_the_cpu_head_only_when_allowed(
        fake_compiler: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The delegate loads but a compiled head fails to prepare (libedgetpu and LiteRT from different
    TensorFlow versions): an error that says so, or, with cpu_fallback, the same head on the CPU."""
    import types

    import edge_node.heads as heads_mod
    import splitpoint.runtime.litert as litert
    from splitpoint.errors import BackendUnavailableError
    from splitpoint.runtime.litert import Device

    bundle = compiled_at_3(fake_compiler, tmp_path)
    real_module, backend = litert.interpreter_module()
    opened: list[tuple[str, bool]] = []

    def interpreter(**kwargs: object) -> object:
        on_tpu = "experimental_delegates" in kwargs
        opened.append((Path(str(kwargs["model_path"])).name, on_tpu))
        if on_tpu:  # what LiteRT raises when libedgetpu was built against another TensorFlow
            raise RuntimeError("Internal: Unsupported data type in custom op handler: 0Node number 1 "
                               "(EdgeTpuDelegateForCustomOp) failed to prepare.")
        return real_module.Interpreter(**kwargs)

    monkeypatch.setattr(litert, "interpreter_module",
                        lambda: (types.SimpleNamespace(Interpreter=interpreter), backend))
    monkeypatch.setattr(heads_mod, "load_edgetpu_delegate", lambda device: object())
    with pytest.raises(BackendUnavailableError, match=r"head_3_edgetpu\.tflite.*different TensorFlow versions"):
        heads_mod.EdgeHeads(bundle, Device.parse("edgetpu"), cpu_fallback=False)
    opened.clear()
    heads = heads_mod.EdgeHeads(bundle, Device.parse("edgetpu"), cpu_fallback=True)
    assert ("head_3_edgetpu.tflite", True) in opened and ("head_3.tflite", False) in opened
    assert 3 in heads.splits
    x = heads.preprocess(np.zeros((8, 8, 1), np.uint8))
    assert heads.run(3, x).array.shape == tuple(bundle.manifest.split(3).cut[0].shape)


def test_a_tpu_head_that_prepares_but_will_not_run_falls_back_to_the_cpu_head_only_when_allowed(
        fake_compiler: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The head loads on the Edge TPU and its first run fails: one line saying so (it was a
    traceback), or, with cpu_fallback, the same head on the CPU."""
    import types

    import edge_node.heads as heads_mod
    import splitpoint.runtime.litert as litert
    from splitpoint.errors import BackendUnavailableError
    from splitpoint.runtime.litert import Device

    bundle = compiled_at_3(fake_compiler, tmp_path)
    real_module, backend = litert.interpreter_module()

    class DeadDevice:  # prepares as the real one, fails every run
        def __init__(self, real: object) -> None:
            self._real = real

        def __getattr__(self, name: str) -> object:
            return getattr(self._real, name)

        def invoke(self) -> None:
            raise RuntimeError("Node number 3 (EdgeTpuDelegateForCustomOp) failed to invoke.")

    def interpreter(**kwargs: object) -> object:
        on_tpu = kwargs.pop("experimental_delegates", None) is not None
        real = real_module.Interpreter(**kwargs)
        return DeadDevice(real) if on_tpu else real

    monkeypatch.setattr(litert, "interpreter_module",
                        lambda: (types.SimpleNamespace(Interpreter=interpreter), backend))
    monkeypatch.setattr(heads_mod, "load_edgetpu_delegate", lambda device: object())
    with pytest.raises(BackendUnavailableError) as info:
        heads_mod.EdgeHeads(bundle, Device.parse("edgetpu:usb:0"), cpu_fallback=False)
    assert str(info.value) == ("head 3 was loaded on edgetpu:usb:0 but its first run failed: RuntimeError('Node "
                               "number 3 (EdgeTpuDelegateForCustomOp) failed to invoke.'); check the device with "
                               "`splitpoint doctor`")
    heads = heads_mod.EdgeHeads(bundle, Device.parse("edgetpu:usb:0"), cpu_fallback=True)
    assert not heads._runners[3].on_edgetpu
    x = heads.preprocess(np.zeros((8, 8, 1), np.uint8))
    assert heads.run(3, x).array.shape == tuple(bundle.manifest.split(3).cut[0].shape)


def test_delegate_errors_get_a_hint_that_names_the_fix() -> None:
    from splitpoint.runtime.litert import _delegate_hint

    assert "edgetpu_compiler -m" in _delegate_hint(
        "Failed precondition: Package requires runtime version (14), which is newer than this runtime version (13).")
    assert "cpu_fallback" in _delegate_hint("Node number 1 (EdgeTpuDelegateForCustomOp) failed to prepare.")
    assert _delegate_hint("some other failure") == ""


# --------------------------------------------------------------------------- Edge TPU: several outputs

#: A stand-in for edgetpu_compiler 16 that answers as the real one does (stdout, and the operation
#: log next to the compiled model): MODE=all maps every operation, so the real compiler prints only
#: the total; MODE=partial leaves a DEQUANTIZE on the CPU and prints the per-device counts;
#: MODE=lose-output writes a compiled model with one output fewer than the head.
REAL_FORMAT_COMPILER = """#!{python}
import os, shutil, sys
from pathlib import Path
args = sys.argv[1:]
with open({calls!r}, "a") as f:
    f.write(" ".join(args) + "\\n")
out = Path(args[args.index("-o") + 1])
head = Path(args[-1])
compiled = out / (head.stem + "_edgetpu.tflite")
mode = os.environ.get("FAKE_EDGETPU_MODE", "all")
shutil.copyfile({single!r} if mode == "lose-output" else head, compiled)
rows = [("QUANTIZE", 1, "Mapped to Edge TPU"), ("CONV_2D", 4, "Mapped to Edge TPU"), ("ADD", 1, "Mapped to Edge TPU")]
if mode == "partial":
    rows.append(("DEQUANTIZE", 2, "Operation is working on an unsupported data type"))
table = ["Operator                       Count      Status", ""]
table += [f"{{op:<31}}{{n:<11}}{{status}}" for op, n, status in rows]
total = sum(n for _, n, _ in rows)
print("Edge TPU Compiler version 16.0.384591198")
print("Started a compilation timeout timer of 180 seconds.")
print()
print("Model compiled successfully in 47 ms.")
print()
print("Input model: " + str(head))
print("Input size: 21.30KiB")
print("Output model: " + str(compiled))
print("Output size: 96.41KiB")
print("On-chip memory used for caching model parameters: 14.25KiB")
print("On-chip memory remaining for caching model parameters: 7.98MiB")
print("Off-chip memory used for streaming uncached model parameters: 0.00B")
print("Number of Edge TPU subgraphs: 1")
print(f"Total number of operations: {{total}}")
print("Operation log: " + compiled.stem + ".log")
print()
if mode == "partial":
    print("Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of "
          "the model will instead run on the CPU, which is slower. If possible, consider updating your model "
          "to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.")
    print(f"Number of operations that will run on Edge TPU: {{total - 2}}")
    print("Number of operations that will run on CPU: 2")
    print()
else:
    print("See the operation log file for individual operation details.")
print("\\n".join(table))
(out / (compiled.stem + ".log")).write_text(
    "Edge TPU Compiler version 16.0.384591198\\nInput: " + str(head) + "\\nOutput: " + str(compiled) + "\\n\\n"
    + "\\n".join(table) + "\\n")
print("Compilation child process completed within timeout period.")
print("Compilation succeeded! ")
"""


def _two_output_pyramid() -> keras.Model:
    """A tiny FPN with two outputs: its cuts after the taps are two tensors, its last head two outputs."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((16, 16, 1), name="image")
    c1 = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c1")(inp)
    c2 = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c2")(c1)
    lat = layers.Conv2D(4, 1, activation="relu", name="lat")(c1)
    p = layers.Add(name="p")([layers.UpSampling2D(name="up")(layers.Conv2D(4, 1, name="top")(c2)), lat])
    heat = layers.Conv2D(3, 1, activation="sigmoid", name="heatmap")(p)
    size = layers.Conv2D(2, 1, activation="relu", name="size")(p)
    return keras.Model(inp, [heat, size], name="two_outputs")


@pytest.mark.parametrize("mode", ["all", "partial"])
def test_edgetpu_compile_of_multi_output_and_multi_tensor_heads(
        digits_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """edgetpu_compiler found on PATH compiles every head of a two-output model, those of multi-tensor
    cuts (one output per cut tensor) among them; the manifest's op counts are the compiler's, read
    from its real output format, whether it prints the per-device lines (some ops on the CPU) or not."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    _script(bin_dir / "edgetpu_compiler", REAL_FORMAT_COMPILER.format(
        python=sys.executable, calls=str(calls), single=str(digits_bundle / "edge" / "head_1.tflite")))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_EDGETPU_MODE", mode)
    src = ModelSource(name="two_outputs", source="test:two_outputs", model=_two_output_pyramid(),
                      preprocessing=Preprocessing(16, 16, 1, 1.0 / 255.0, 0.0), labels=[], trained=False)
    out = tmp_path / "b"
    opts = PartitionOptions(output=out, calibration_random=8)  # the compiler: whatever PATH finds
    assert opts.edgetpu_compiler == str(bin_dir / "edgetpu_compiler")
    manifest = partition(src, opts, progress=quiet)

    K = manifest.num_layers
    heads = [s for s in manifest.splits if s.split > 0]
    assert any(len(s.cut) > 1 for s in heads), "no multi-tensor cut among the splits"
    assert len(calls.read_text().splitlines()) == len(heads)
    for s in heads:
        tpu = s.edgetpu
        assert tpu["status"] == "compiled", (s.split, tpu)
        assert tpu["compiler_version"] == "16.0.384591198" and tpu["edgetpu_subgraphs"] == 1
        if mode == "all":  # no "will run on" lines: every one of the 6 operations is on the Edge TPU
            assert (tpu["ops_on_edgetpu"], tpu["ops_on_cpu"]) == (6, 0) and "cpu_operators" not in tpu
        else:
            assert (tpu["ops_on_edgetpu"], tpu["ops_on_cpu"]) == (6, 2)
            assert tpu["cpu_operators"] == {"DEQUANTIZE": 2}
        assert s.edgetpu_head is not None and s.edgetpu_head.path == f"edge/head_{s.split}_edgetpu.tflite"
    # the compiled heads keep every output: the all-edge head its two maps, a multi-tensor cut its tensors
    bundle = load_bundle(out, side="edge")
    for s in (manifest.split(K), next(s for s in heads if len(s.cut) > 1)):
        runner = HeadRunner(bundle.path(s.edgetpu_head))
        want = [tuple(o.shape) for o in (manifest.outputs if s.split == K else s.cut)]
        assert sorted(runner.output_shapes) == sorted(want), s.split
    assert main(["inspect", str(out)]) == 0


def test_a_compiled_head_that_lost_an_output_is_refused(digits_bundle: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled model whose outputs are not the head's (here: one instead of two) would have the edge
    read the wrong tensors: the split records why and offers no Edge TPU head."""
    from splitpoint.runtime.tf import import_tensorflow

    compiler = _script(tmp_path / "edgetpu_compiler", REAL_FORMAT_COMPILER.format(
        python=sys.executable, calls=str(tmp_path / "calls.log"), single=str(digits_bundle / "edge" / "head_1.tflite")))
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "lose-output")
    from splitpoint.convert import convert_head

    model = _two_output_pyramid()
    head = tmp_path / "head_9.tflite"
    head.write_bytes(convert_head(import_tensorflow(), model, np.random.default_rng(0).random((4, 16, 16, 1),
                                                                                             np.float32)))
    result = compile_edgetpu(str(compiler), head, tmp_path)
    assert result["status"] == "failed"
    assert "head_9_edgetpu.tflite has inputs [(1, 8, 8, 1)]" in result["reason"], result
    assert "(1, 8, 8, 3)" in result["reason"] and "(1, 8, 8, 2)" in result["reason"]
    assert not (tmp_path / "head_9_edgetpu.tflite").exists()


def test_compiler_output_parsing_matches_the_real_formats() -> None:
    from splitpoint.edgetpu_compile import parse_compiler_output

    all_mapped = ("Edge TPU Compiler version 15.0.340273435\n\nModel compiled successfully in 787 ms.\n\n"
                  "Input model: m.tflite\nNumber of Edge TPU subgraphs: 1\nTotal number of operations: 31\n"
                  "Operation log: m_edgetpu.log\nSee the operation log file for individual operation details.\n")
    assert parse_compiler_output(all_mapped) == {"compiler_version": "15.0.340273435", "ops_on_edgetpu": 31,
                                                 "ops_on_cpu": 0, "edgetpu_subgraphs": 1}
    partial = ("Edge TPU Compiler version 16.0.384591198\nNumber of Edge TPU subgraphs: 2\n"
               "Total number of operations: 294\n"
               "Number of operations that will run on Edge TPU: 289\nNumber of operations that will run on CPU: 5\n\n"
               "Operator                       Count      Status\n\n"
               "RESIZE_NEAREST_NEIGHBOR        2          Mapped to Edge TPU\n"
               "CONCATENATION                  1          Operation is otherwise supported, but not mapped due to "
               "some unspecified limitation\n"
               "CONCATENATION                  17         Mapped to Edge TPU\n"
               "TRANSPOSE                      4          Operation is otherwise supported, but not mapped due to "
               "some unspecified limitation\n")
    assert parse_compiler_output(partial) == {
        "compiler_version": "16.0.384591198", "ops_on_edgetpu": 289, "ops_on_cpu": 5, "edgetpu_subgraphs": 2,
        "cpu_operators": {"CONCATENATION": 1, "TRANSPOSE": 4}}


# --------------------------------------------------------------------------- a detector of one's own


@pytest.fixture(scope="module")
def own_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("own") / "my_detector.keras"
    _two_output_pyramid().save(path)  # 16x16 input, an 8x8x3 heatmap and an 8x8x2 size map: stride 2
    return path


def test_partition_a_detector_of_ones_own_with_a_decoder_file(own_detector: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    decoder = tmp_path / "decoder.toml"
    decoder.write_text('kind = "centernet"\nheatmap = 0\nsize = 1\nstride = 2\nbox_format = "size_cells"\n'
                       'score_threshold = 0.6\nnms_iou = 0.4\nlabels = ["car", "person", "cow"]\n')
    out = tmp_path / "b"
    argv = ["partition", str(own_detector), "-o", str(out), "--calibration-random", "8", "--min-agreement", "0",
            "--detection", str(decoder), "--max-detections", "7", "--splits", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    m = load_bundle(out).manifest
    assert m.detection == {"kind": "centernet", "heatmap": 0, "size": 1, "stride": 2, "box_format": "size_cells",
                           "score_threshold": 0.6, "nms_iou": 0.4, "max_detections": 7, "class_agnostic_nms": False}
    assert m.labels == ["car", "person", "cow"]
    v = m.split(1).verification  # verified as a detector: detection agreement, not top-1
    assert "detection_recall" in v and "detection_precision" in v
    assert m.partition["min_agreement"] == 0.0


@pytest.mark.parametrize(("extra", "names"), [
    (["--score-threshold", "1.5"], ["--score-threshold = 1.5", "(0, 1)"]),
    (["--max-detections", "0"], ["--max-detections = 0", "integer >= 1"]),
    (["--box-format", "xyxy"], ['--box-format = "xyxy"', "size_pixels"]),
    (["--detection-kind", "ssd"], ['--detection-kind = "ssd"', "supported: centernet"]),
    (["--detection-kind", "centernet"], ["stride (the default; a --detection file sets it) = 4",
                                         "covers 32x32 pixels, but the input is 16x16"]),
    (["--detection", "WIDE"], ["WIDE: stride = 4: a 8x8 heatmap at stride 4 covers 32x32 pixels"]),
    (["--detection-kind", "centernet", "--stride-typo"], ["unrecognized arguments: --stride-typo"]),
    (["--score-threshold", "high"], ["argument --score-threshold: 'high' is not a number"]),
    (["--detection", "GOOD", "--labels", "car,person"], ["--labels = [\"car\", \"person\"]", "3 classes"]),
    (["--detection", "BAD", "--labels", "a,b,c"], ["BAD: size = 0", "another output"]),
])
def test_bad_decoder_settings_exit_2_naming_the_value(own_detector: Path, tmp_path: Path, extra: list[str],
                                                       names: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    files = {"BAD": tmp_path / "bad.toml", "GOOD": tmp_path / "good.toml", "WIDE": tmp_path / "wide.toml"}
    files["BAD"].write_text("heatmap = 0\nsize = 0\n")
    files["WIDE"].write_text("stride = 4\n")  # the docs' example: named as the file's key
    files["GOOD"].write_text("stride = 2\n")  # fits the model: the labels are what is wrong
    extra = [str(files[e]) if e in files else e for e in extra]
    names = [n.replace("BAD", str(files["BAD"])).replace("WIDE", str(files["WIDE"])) for n in names]
    out = tmp_path / "b"
    with contextlib.suppress(SystemExit):  # argparse's own errors exit 2 by SystemExit
        assert main(["partition", str(own_detector), "-o", str(out), "--calibration-random", "8", *extra]) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in names), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # refused before anything was written


def test_split_0_does_not_wait_for_the_accelerator(digits_bundle: Path) -> None:
    """k = 0 only quantizes the input (CPU work): it goes to the link while a local run holds the
    accelerator, as the planner assumes (scheduler/paths.py); a real head waits for it."""
    import threading

    from edge_node.heads import EdgeHeads
    from splitpoint.runtime.litert import Device

    heads = EdgeHeads(load_bundle(digits_bundle, side="edge"), Device("cpu"))
    x = heads.preprocess(np.zeros((8, 8, 1), np.uint8))
    done: dict[int, threading.Event] = {k: threading.Event() for k in (0, 3)}

    def run(k: int) -> None:
        heads.run(k, x)
        done[k].set()

    with heads._accelerator:  # a local run in progress on the executor
        for k in done:
            threading.Thread(target=run, args=(k,), daemon=True).start()
        assert done[0].wait(10.0), "k = 0 waited for the accelerator"
        assert not done[3].wait(0.2)  # head 3 waits for the run to end
    assert done[3].wait(10.0)


def test_detection_flags_on_a_classifier_are_named_as_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It once said '--detection: size = 1: the model has 1 output(s)', a flag never given."""
    out = tmp_path / "b"
    assert main(["partition", "digits-cnn", "-o", str(out), "--score-threshold", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "detection settings: digits-cnn has one output, a classifier's" in err and "--score-threshold" in err
    assert "--detection:" not in err and not out.exists()


def test_detection_flags_adjust_a_built_in_detectors_own_settings(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`partition digits-detector --score-threshold 0.5` replaced the detector's own block by the
    defaults with that one change: its class_agnostic_nms = true silently became false."""
    from splitpoint.models import detector

    out = tmp_path / "b"
    argv = ["partition", "digits-detector", "-o", str(out), "--splits", "16", "--score-threshold", "0.5",
            "--min-agreement", "0"]
    assert main(argv) == 0, capsys.readouterr().err
    assert load_bundle(out).manifest.detection == dict(detector.DETECTION, score_threshold=0.5)


def test_labels_that_do_not_match_a_two_output_classifiers_classes_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A classifier with an auxiliary output took '--labels a,b' for its 5 classes: the records
    then named classes 2-4 '2', '3', '4'. The first output is the one records label."""
    inp = keras.Input((16, 16, 1))
    x = layers.Flatten()(layers.Conv2D(4, 3, strides=4)(inp))
    path = tmp_path / "aux.keras"
    keras.Model(inp, [layers.Dense(5, activation="softmax", name="main")(x),
                      layers.Dense(3, activation="softmax", name="aux")(x)]).save(path)
    out = tmp_path / "b"
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "8", "--labels", "a,b"]) == 2
    err = capsys.readouterr().err
    assert '--labels = ["a", "b"]: aux has 5 classes in its first output; give one label per class' in err, err
    assert not out.exists()


def test_labels_for_a_multi_output_model_whose_first_output_is_a_map_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a detector, first output 8x8x3: '--labels a,b' was taken and never used, the records
    saying label 47, named "47" (the argmax of the flattened map)."""
    inp = keras.Input((16, 16, 1))
    x = layers.Conv2D(3, 3, strides=2, padding="same", name="map")(inp)
    path = tmp_path / "maps.keras"
    keras.Model(inp, [x, layers.Dense(2, name="extra")(layers.Flatten()(x))]).save(path)
    out = tmp_path / "b"
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "8", "--labels", "a,b"]) == 2
    err = capsys.readouterr().err
    assert ('--labels = ["a", "b"]: maps\'s first output is 8x8x3, not one score per class, so it has no classes '
            "to name") in err, err
    assert not out.exists()


def test_a_head_litert_cannot_prepare_is_named_by_its_bundle_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The error named the head by its path in the staging directory, removed by the time it was read."""
    import splitpoint.runtime.litert as litert
    from splitpoint.errors import BackendUnavailableError

    real = litert.HeadRunner

    def refusing(path: Path, *args: object, **kwargs: object) -> object:
        if Path(path).name == "head_2.tflite" and ".partial" in str(path):
            raise BackendUnavailableError(f"cannot load head {path}: Failed to prepare XNNPACK delegate")
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(litert, "HeadRunner", refusing)
    rc = main(["partition", "digits-cnn", "-o", str(tmp_path / "b"), "--splits", "2", "--jobs", "1"])
    err = capsys.readouterr().err
    assert rc != 0 and "cannot load head edge/head_2.tflite (split 2): Failed to prepare XNNPACK" in err, err
    assert ".partial" not in err and "Traceback" not in err, err
