"""What `splitpoint partition` refuses, and what a refusal or a failure leaves behind.

Each case is a hostile or mistaken input from an audit of the command: it must end in exit 2
and one line naming the bad value, flag or file - never a traceback, never exit 0 with a
bundle that is wrong - and it must not leave (or, with --force, destroy) anything.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
layers = keras.layers

from splitpoint.bundle import load_bundle  # noqa: E402
from splitpoint.cli import main  # noqa: E402


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run `splitpoint partition ARGV`; it must exit 2 with one error line and no traceback: that line.
    (Progress and warnings, logged before the refusal, may come first.)"""
    code = 0
    try:
        code = main(["partition", *argv])
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert "Traceback" not in err and len(errors) == 1 and err.strip().endswith(errors[0]), err
    return errors[0]


# --------------------------------------------------------------------------- calibration sets


def test_all_black_calibration_frames_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Constant frames once gave an input scale of 7.8e-09 and a bundle that 'verified' on two black
    frames but agreed with the float model on 10.5% of real digits."""
    from PIL import Image

    frames = tmp_path / "black"
    frames.mkdir()
    for i in range(10):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(frames / f"{i}.png")
    out = tmp_path / "b"
    err = refused(capsys, "digits-cnn", "-o", str(out), "--calibration", str(frames))
    assert f"--calibration {frames}: every pixel of all 10 frames is 0" in err
    assert "real images" in err and "--calibration-random" in err  # what to give instead
    assert not out.exists()


def test_copies_of_one_frame_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = tmp_path / "same"
    frames.mkdir()
    frame = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # a real range of values, but one frame
    for i in range(6):
        np.save(frames / f"{i}.npy", frame)
    err = refused(capsys, "digits-cnn", "-o", str(tmp_path / "b"), "--calibration", str(frames))
    assert "the 6 frames are copies of 1 frame(s); need at least 2 different ones" in err


def test_a_zero_size_frame_is_refused_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Zero-size .npy frames were resized into black ones and gave a bundle 'verified' on one of them."""
    frames = tmp_path / "zero"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(frames / f"{i}.npy", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    np.save(frames / "2.npy", np.zeros((0, 0), np.uint8))
    out = tmp_path / "b"
    err = refused(capsys, "digits-cnn", "-o", str(out), "--calibration", str(frames))
    assert f"--calibration {frames / '2.npy'}: holds a uint8 array of shape (0, 0), which is not a frame: an empty image" in err
    assert not out.exists()


def _truncated(path: Path) -> None:
    np.save(path, np.arange(64, dtype=np.uint8).reshape(8, 8))
    path.write_bytes(path.read_bytes()[:-10])


def _object_array(path: Path) -> None:
    np.save(path, np.array([{"pixels": 1}, None], dtype=object), allow_pickle=True)


@pytest.mark.parametrize(("make", "said"), [
    (_truncated, "truncated: its header says a uint8 array of shape (8, 8), 64 bytes of data, but only 54 follow"),
    (lambda p: p.write_bytes(b""), "an empty file (0 bytes), not a .npy array"),
    (lambda p: np.save(p, np.zeros((8, 8), np.float32)),
     "holds a float32 array of shape (8, 8), which is not a frame: frames must be uint8 images"),
    (lambda p: np.save(p, np.zeros((8, 8, 2), np.uint8)),
     "holds a uint8 array of shape (8, 8, 2), which is not a frame: expected an image of shape (H, W)"),
    (_object_array, "holds Python objects (dtype object, stored pickled), which splitpoint never loads"),
    (lambda p: p.write_bytes(b"\x80\x04\x95" + bytes(20)), "not a .npy array: a Python pickle, which splitpoint never loads"),
], ids=["truncated", "empty", "float32", "two-channel", "object-array", "pickle"])
def test_a_bad_npy_frame_is_refused_naming_the_file_and_the_problem(
        make: Callable[[Path], None], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong shape or dtype was refused as 'frame = [8, 8, 2]: ...' without the file's name, an empty
    file ended in an EOFError traceback (exit 1), and a pickle's message suggested allow_pickle."""
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(frames / f"{i}.npy", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    make(frames / "2.npy")
    out = tmp_path / "b"
    err = refused(capsys, "digits-cnn", "-o", str(out), "--calibration", str(frames))
    assert f"--calibration {frames / '2.npy'}: {said}" in err
    assert "allow_pickle" not in err
    assert not out.exists()


# --------------------------------------------------------------------------- the model


def test_a_saved_model_directory_is_refused_saying_how_to_save_it(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """model.export(dir) once crashed with "'TFSMLayer' object has no attribute '_endpoint_signatures'"."""
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, layers.Dense(3)(layers.Flatten()(layers.Conv2D(4, 3)(inp))))
    exported = tmp_path / "exported"
    model.export(str(exported), verbose=False)
    capsys.readouterr()
    out = tmp_path / "b"
    err = refused(capsys, str(exported), "-o", str(out))
    assert f"{exported} is a SavedModel" in err and 'save it with model.save("m.keras")' in err
    (tmp_path / "plain").mkdir()
    err = refused(capsys, str(tmp_path / "plain"), "-o", str(out))
    assert f"{tmp_path / 'plain'} is a directory, not a model: give a .keras or .h5 file" in err
    assert not out.exists()


def test_a_layer_keras_cannot_rebuild_is_refused_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A custom layer class was paragraphs of Keras config ending in "Could not locate class" (.keras)
    or "use a custom_object_scope" (.h5); a Lambda was "pass safe_mode=False to the loading
    function" - nothing a command line can do. Now one line naming the layer and the way out."""
    @keras.saving.register_keras_serializable(package="mine")
    class Twice(layers.Layer):
        def call(self, x: Any) -> Any:
            return x * 2

    inp = keras.Input((8, 8, 1))
    custom = tmp_path / "custom.h5"
    keras.Model(inp, layers.Dense(3)(layers.Flatten()(Twice(name="twice")(inp)))).save(custom)
    del keras.saving.get_custom_objects()["mine>Twice"]  # as in a process that never defined it
    lam = tmp_path / "lam.keras"
    keras.Model(inp, layers.Dense(3)(layers.Flatten()(layers.Lambda(lambda x: x * 2, name="double")(inp)))).save(lam)
    capsys.readouterr()
    out = tmp_path / "b"
    err = refused(capsys, str(custom), "-o", str(out), "--calibration-random", "8")
    assert (f"cannot load Keras model {custom}: layer 'twice' is of class mine>Twice, which is not a Keras layer: "
            "splitpoint loads models of built-in layers only") in err
    err = refused(capsys, str(lam), "-o", str(out), "--calibration-random", "8")
    assert f"cannot load Keras model {lam}: layer 'double' is a Lambda holding Python code" in err
    assert "replace it with built-in layers" in err and "safe_mode" not in err
    assert not out.exists()


def test_an_input_that_is_not_a_channels_last_image_is_refused_saying_what_to_build(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A channels-first model was "model input has 16 channels" (its width); a 1-D input was "not an
    image batch (N, H, W, C) with a static size". Each now names the file, the shape and the way out."""
    inp = keras.Input((3, 16, 16))
    first = tmp_path / "first.keras"
    keras.Model(inp, layers.Dense(3)(layers.Flatten()(layers.Conv2D(4, 3, data_format="channels_first")(inp)))).save(first)
    flat = tmp_path / "flat.keras"
    vec = keras.Input((20,))
    keras.Model(vec, layers.Dense(3)(vec)).save(flat)
    out = tmp_path / "b"
    err = refused(capsys, str(first), "-o", str(out), "--calibration-random", "8")
    assert (f"{first}: its input (None, 3, 16, 16) is channels-first (N, C, H, W); splitpoint feeds channels-last "
            "images (N, H, W, C): in the program that builds the model, use data_format='channels_last'") in err
    err = refused(capsys, str(flat), "-o", str(out), "--calibration-random", "8")
    assert f"{flat}: its input (None, 20) is not an image batch (N, H, W, C); splitpoint splits image models" in err
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    two = tmp_path / "two.keras"
    keras.Model([a, b], layers.Dense(3)(layers.Flatten()(layers.Concatenate()([a, b])))).save(two)
    err = refused(capsys, str(two), "-o", str(out), "--calibration-random", "8")
    assert err.endswith(f"{two}: it has 2 inputs ((None, 8, 8, 3), (None, 8, 8, 3)); splitpoint splits models with "
                        "one image input"), err
    assert not out.exists()


def test_a_tflite_or_unknown_model_file_is_refused_before_tensorflow_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A .tflite (a bundle's head, say) was "unknown model format", and that and any other unknown
    file came after TensorFlow's import, 5-7 s. Now at once, and a .tflite is told what it is."""
    tflite = tmp_path / "head.tflite"
    tflite.write_bytes(b"TFL3" + bytes(60))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    out = tmp_path / "b"
    err = refused(capsys, str(tflite), "-o", str(out), "--calibration-random", "8")
    assert (f"{tflite} is a TFLite model, already converted, with no Keras layers to split between: partition "
            "the .keras or .h5 model it was converted from") in err
    err = refused(capsys, str(onnx), "-o", str(out))
    assert f"{onnx}: unknown model format (expected a .keras or .h5 file)" in err
    assert not out.exists()


def _shared(inp: Any) -> Any:
    conv = layers.Conv2D(3, 3, padding="same", name="twice")
    return keras.Model(inp, layers.Dense(5)(layers.Flatten()(conv(conv(inp)))))


def _logits(inp: Any) -> Any:
    return layers.Dense(5, name="logits")(layers.Flatten()(layers.Conv2D(4, 3)(inp)))


@pytest.mark.parametrize(("build", "said"), [
    (_shared, ": layer 'twice' is called 2 times (a shared layer, or one of a nested model called more than once)"),
    (lambda inp: keras.Model(inp, [_logits(inp)] * 2),
     ": its outputs 1 and 2 are one tensor (of layer 'logits'), which a split's tail cannot return twice"),
    (lambda inp: keras.Model(inp, [_logits(inp), inp]),
     ": its output 2 is its input, passed through unchanged, which no split's tail can return"),
    (lambda inp: keras.Model(inp, inp), " has no layers: its output is its input, so there is nothing to split"),
], ids=["shared-layer", "one-tensor-twice", "input-as-output", "no-layers"])
def test_a_graph_no_split_can_be_cut_from_is_refused_naming_why(
        build: Callable[[Any], Any], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Valid Keras models of built-in layers that each ended in a traceback (exit 1) while a split was
    built: a shared layer, one tensor listed as two outputs and the input passed through as an output
    ("Output with path 0 is not connected to inputs"), a model with no layer (AssertionError)."""
    path = tmp_path / "m.keras"
    build(keras.Input((16, 16, 3))).save(path)
    out = tmp_path / "b"
    assert f"{path}{said}" in refused(capsys, str(path), "-o", str(out), "--calibration-random", "8")
    assert not out.exists()


@pytest.mark.parametrize(("layer", "index", "values", "softmax", "said"), [
    ("conv", 0, [np.nan] * 35 + [np.inf], True,
     "layer 'conv' has a non-finite weight: 'kernel' holds 35 NaN and 1 inf of its 36 values"),
    ("logits", 1, [np.nan] * 5, False, "layer 'logits' has a non-finite weight: 'bias' holds 5 NaN of its 5 values"),
], ids=["nan-inf-kernel", "nan-bias"])
def test_a_model_with_nan_or_inf_weights_is_refused_naming_the_layer(
        layer: str, index: int, values: list[float], softmax: bool, said: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A NaN kernel under a softmax was split with exit 0 and heads computing garbage (verification
    passed: the argmax of NaN scores is 0 on both sides); a NaN bias on the last layer was refused
    as layers that "convert to no int8 computation", which they do not."""
    model = keras.Sequential([keras.Input((16, 16, 1)), layers.Conv2D(4, 3, activation="relu", name="conv"),
                              layers.Flatten(), layers.Dense(5, activation="softmax" if softmax else None, name="logits")])
    weights = model.get_layer(layer).get_weights()
    weights[index].reshape(-1)[:len(values)] = values
    model.get_layer(layer).set_weights(weights)
    path = tmp_path / "m.keras"
    model.save(path)
    out = tmp_path / "b"
    err = refused(capsys, str(path), "-o", str(out), "--calibration-random", "8")
    assert f"{path}: {said}" in err and "no int8 computation" not in err
    assert not out.exists()


def test_a_uint8_input_its_first_layer_cannot_take_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keras.Input(dtype="uint8") straight into a Conv2D failed in the float model's first predict:
    a TensorFlow traceback, exit 1. (A Rescaling after the input casts, and is partitioned.)"""
    model = keras.Sequential([keras.Input((28, 28, 1), dtype="uint8"), layers.Conv2D(4, 3), layers.Flatten(),
                              layers.Dense(5, activation="softmax")])
    path = tmp_path / "u8.keras"
    model.save(path)
    err = refused(capsys, str(path), "-o", str(tmp_path / "b"), "--calibration-random", "8")
    assert err.endswith(f"{path}: its input is uint8, which its Conv2D layer cannot compute on; give a model whose "
                        "input is float32 (cast inside the model after the input)")


def test_a_model_that_computes_nothing_is_refused_and_leaves_nothing(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A single linear Activation once ended in an AssertionError (exit 1) and a partial directory."""
    inp = keras.Input((8, 8, 1))
    path = tmp_path / "identity.keras"
    keras.Model(inp, layers.Activation("linear", name="same")(inp)).save(path)
    out = tmp_path / "b"
    err = refused(capsys, str(path), "-o", str(out), "--calibration-random", "8")
    assert "first 1 layer(s) (up to 'same') convert to no int8 computation" in err
    assert "nothing to run on the edge" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.keras"]  # no partial bundle, no staging


def test_splits_whose_heads_compute_nothing_are_skipped_unless_asked_for(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Sequential model starting with Dropout once failed as a whole: its split 1 converts to no
    int8 computation. Split 1 would only send what split 0 sends, so it is left out and said so;
    asked for with --splits, it is refused by number."""
    path = tmp_path / "drop.keras"
    keras.Sequential([keras.Input((8, 8, 1)), layers.Dropout(0.2, name="drop"), layers.Conv2D(4, 3, name="conv"),
                      layers.Flatten(), layers.Dense(3)]).save(path)
    out = tmp_path / "b"
    # --min-agreement 0: random weights, so the 98% a model file is held to failed ~1 run in 8 (k=4: 93.8%)
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "16", "--min-agreement", "0"]) == 0, \
        capsys.readouterr().err
    err = capsys.readouterr().err
    assert ("drop: skipped split 1: the layers up to 'drop' convert to no int8 computation (they pass the input "
            "through unchanged), so its head would only send what split 0 sends") in err
    manifest = load_bundle(out).manifest
    assert manifest.split_ids == [0, 2, 3, 4]
    assert list(manifest.partition["skipped_splits"]) == ["1"]
    assert sorted(p.name for p in (out / "edge").iterdir()) == ["head_2.tflite", "head_3.tflite", "head_4.tflite"]

    err = refused(capsys, str(path), "-o", str(tmp_path / "asked"), "--calibration-random", "16", "--splits", "1,3")
    assert "--splits: split 1 of drop computes nothing on the edge: its first 1 layer(s) (up to 'drop')" in err
    assert "leave it out of --splits" in err
    assert not (tmp_path / "asked").exists()


# --------------------------------------------------------------------------- --force


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def bundle_copy(digits_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(digits_bundle, dst)
    return dst


def test_a_failed_force_run_leaves_the_old_bundle_untouched(bundle_copy: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--force once deleted the old manifest and heads first, so a run failing verification lost both."""
    inp = keras.Input((4, 4, 1))
    dense = layers.Dense(2, name="logits")
    model = keras.Model(inp, dense(layers.Flatten(name="flatten")(inp)))
    w = np.ones((16, 2), np.float32)  # two logits 0.1% apart: int8 cannot tell them apart
    w[0, 1] += 1e-3
    w[1, 1] -= 1e-3
    dense.set_weights([w, np.zeros(2, np.float32)])
    model.save(tmp_path / "tied.keras")
    before = _tree(bundle_copy)
    err = refused(capsys, str(tmp_path / "tied.keras"), "-o", str(bundle_copy), "--force",
                  "--calibration-random", "16")
    assert "agree with the float model on fewer than 98%" in err
    assert _tree(bundle_copy) == before
    load_bundle(bundle_copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "tied.keras"]  # the staging is gone


def test_force_replaces_the_bundle_once_the_new_one_is_verified(bundle_copy: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["partition", "digits-cnn", "-o", str(bundle_copy), "--force", "--splits", "4"]) == 0
    assert f"bundle written to {bundle_copy}" in capsys.readouterr().out
    assert load_bundle(bundle_copy).manifest.split_ids == [0, 4, 7]
    assert sorted(p.name for p in (bundle_copy / "edge").iterdir()) == ["head_4.tflite", "head_7.tflite"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # neither the old one nor the staging
    # A directory that is not a bundle is still refused, even with --force, and kept.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert "not empty and not a splitpoint bundle" in refused(capsys, "digits-cnn", "-o", str(tmp_path / "mine"), "--force")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_force_keeps_the_model_and_frames_it_was_given_inside_the_bundle(bundle_copy: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`partition proj/model.keras -o proj --force --calibration proj/frames` deleted both."""
    inp = keras.Input((8, 8, 1))
    keras.Model(inp, layers.Dense(3)(layers.Flatten()(layers.Conv2D(4, 3)(inp)))).save(bundle_copy / "model.keras")
    (bundle_copy / "frames").mkdir()
    for i in range(8):
        np.save(bundle_copy / "frames" / f"{i}.npy", np.full((8, 8, 1), i * 30, np.uint8))
    before = _tree(bundle_copy)
    model = bundle_copy / "model.keras"
    err = refused(capsys, str(model), "-o", str(bundle_copy), "--force", "--calibration", str(bundle_copy / "frames"))
    assert f'-o = "{bundle_copy}": holds {model}, an input of this run, which the bundle would replace' in err
    err = refused(capsys, "digits-cnn", "-o", str(bundle_copy / "frames"), "--calibration", str(bundle_copy / "frames"))
    assert f"is {bundle_copy / 'frames'}, an input of this run" in err
    assert _tree(bundle_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(("argv", "said"), [
    (["digits-cnn", "--calibration-random", "99999999999"],
     "--calibration-random 99999999999: at most 10000 frames of 8x8x1"),
    (["mobilenetv2", "--input-size", "224", "--calibration-random", "9000"],
     "--calibration-random 9000: at most 7133 frames of 224x224x3"),
    (["mobilenetv2", "--input-size", "100000"], "--input-size 100000 is too large for mobilenetv2 (at most 1024)"),
])
def test_sizes_that_cannot_fit_in_memory_are_refused_naming_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str) -> None:
    """Both once ended in numpy _ArrayMemoryError tracebacks."""
    out = tmp_path / "b"
    assert said in refused(capsys, *argv, "-o", str(out))
    assert not out.exists()


def test_help_lists_every_built_in(capsys: pytest.CaptureFixture[str]) -> None:
    """The help once listed four of the six built-ins README names."""
    from splitpoint.models import BUILTIN

    with pytest.raises(SystemExit):
        main(["partition", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    listed = text.split("or a built-in:", 1)[1].split("-o BUNDLE")[0]
    assert [name for name in BUILTIN if name in listed.replace(",", " ").split()] == list(BUILTIN)
    assert len(BUILTIN) == 6


def test_input_size_on_a_model_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It was silently ignored, where the built-ins refuse a size they do not take."""
    inp = keras.Input((8, 8, 1))
    path = tmp_path / "mine.keras"
    keras.Model(inp, layers.Dense(3)(layers.Flatten()(layers.Conv2D(4, 3)(inp)))).save(path)
    out = tmp_path / "b"
    err = refused(capsys, str(path), "-o", str(out), "--input-size", "64", "--calibration-random", "8")
    assert f"--input-size 64 does not apply to {path}: its own input shape (8x8) decides" in err
    assert not out.exists()


@pytest.mark.parametrize(("argv", "said"), [
    (["", "-o", "OUT"], "no model given: give a .keras or .h5 file, or a built-in"),  # was ". is a directory"
    (["digits-cnn", "-o", "OUT", "--calibration", ""], "--calibration: give a directory of frames"),  # was random frames
    (["digits-cnn", "-o", "OUT", "--labels", ""], "--labels: give a file with one label per line"),  # "no such file"
    (["digits-cnn", "-o", "OUT", "--calibration", "NOPE"], '"NOPE": no such directory'),  # "not a directory"
])
def test_empty_or_missing_inputs_are_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   argv: list[str], said: str) -> None:
    out = tmp_path / "b"
    argv = [str(out) if a == "OUT" else str(tmp_path / "nope") if a == "NOPE" else a for a in argv]
    assert said.replace("NOPE", str(tmp_path / "nope")) in refused(capsys, *argv)
    assert not out.exists()
