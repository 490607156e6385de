"""Models a user brings (`splitpoint partition my_model.keras`) that partition, and must come out
computing what the model computes: the bundle's preprocessing, heads and tails against the model
file itself on raw pixels. Refusals are in test_partition_refusals.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
layers = keras.layers

from splitpoint.bundle import load_bundle  # noqa: E402
from splitpoint.cli import main  # noqa: E402


def _rescaling_first() -> keras.Model:
    """keras.applications' MobileNetV3 and EfficientNet begin so: the model takes pixels 0..255."""
    inp = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1, name="scale")(inp)
    x = layers.Conv2D(4, 3, activation="relu")(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax")(layers.Flatten()(x)))


def _uint8_input() -> keras.Model:
    inp = keras.Input((8, 8, 3), dtype="uint8")
    x = layers.Conv2D(4, 3, activation="relu")(layers.Rescaling(1 / 255)(inp))
    return keras.Model(inp, layers.Dense(3, activation="softmax")(layers.Flatten()(x)))


@pytest.mark.parametrize(("build", "why"), [
    (_rescaling_first, "it scales its own input (first layer 'scale' is a Rescaling)"),
    (_uint8_input, "its input is uint8"),
], ids=["rescaling-first", "uint8-input"])
def test_a_model_that_scales_its_own_input_gets_pixels(build: Callable[[], Any], why: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Both were fed pixel / 255: the uint8 input truncated every frame to zeros, the Rescaling saw
    -1..-0.99; the float model and every split agreed on that, so the bundle verified and said
    nothing. Now frames go in as pixels, with a log line saying why."""
    model = build()
    path = tmp_path / "mine.keras"
    model.save(path)
    out = tmp_path / "b"
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "16", "--splits", "1",
                 "--min-agreement", "0"]) == 0, capsys.readouterr().err
    assert f"mine.keras: {why}, so frames go in as pixel values 0..255" in capsys.readouterr().err
    bundle = load_bundle(out)
    pre = bundle.manifest.preprocessing
    frames = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    wanted = model.predict(frames.astype(model.inputs[0].dtype), verbose=0)
    # what the server's tail_0 (the whole float model) gets from the agent's preprocessing
    np.testing.assert_allclose(model.predict(pre.apply_batch(frames), verbose=0), wanted, atol=1e-6)
    assert pre.scale == 1.0
    # and the int8 head K, on the edge, agrees with the model on raw pixels
    from splitpoint.runtime.litert import HeadRunner

    last = bundle.manifest.splits[-1]
    runner = HeadRunner(out / last.head.path)
    q = runner.input_quantization
    got = np.concatenate([runner.run_all(q.quantize(pre.apply_batch(f[None]), runner.input_dtype))[0]
                          for f in frames])
    scores = runner.output_quantization.dequantize(got)
    assert np.abs(scores - wanted).max() < 0.1, (scores, wanted)


def test_a_mixed_precision_model_is_split_in_float32(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model trained under mixed_float16 failed every time: "cannot convert head_3 to full-integer
    TFLite: ... 'tf.Conv2D' op is neither a custom op nor a flex op". Its weights are float32; it is
    now split as the float32 model they make, and says so."""
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, activation="relu", dtype="mixed_float16")(inp)
    model = keras.Model(inp, layers.Dense(3, activation="softmax")(layers.Flatten(dtype="mixed_float16")(x)))
    path = tmp_path / "half.keras"
    model.save(path)
    out = tmp_path / "b"
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "16", "--splits", "1",
                 "--min-agreement", "0"]) == 0, capsys.readouterr().err
    assert "half.keras: layers compute in mixed_float16; partitioning it in float32" in capsys.readouterr().err
    bundle = load_bundle(out)
    assert bundle.manifest.split_ids == [0, 1, 3]
    tail_0 = keras.models.load_model(out / "cloud" / "tail_0.keras", compile=False)
    assert {layer.dtype_policy.name for layer in tail_0.layers} == {"float32"}
    x = bundle.manifest.preprocessing.apply_batch(np.random.default_rng(2).integers(0, 256, (4, 8, 8, 3), np.uint8))
    np.testing.assert_allclose(tail_0.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-3)


def test_a_model_of_any_input_size_is_built_at_input_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fully convolutional model, Input((None, None, 1)), was refused ("is not an image batch ...
    with a static size"), and --input-size, which could fix its size, was refused for any model file.
    Now --input-size builds it at that size, with the same weights; without it, the refusal says so."""
    inp = keras.Input((None, None, 1))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(inp))
    model = keras.Model(inp, layers.Dense(3, activation="softmax")(x))
    path = tmp_path / "anysize.keras"
    model.save(path)
    out = tmp_path / "b"
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "8"]) == 2
    assert ("anysize.keras: its input (None, None, None, 1) takes any height and width, but int8 heads have a "
            "fixed size: give the size to build the bundle at with --input-size PX") in capsys.readouterr().err
    assert not out.exists()
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "8", "--input-size", "32",
                 "--min-agreement", "0"]) == 0, capsys.readouterr().err
    manifest = load_bundle(out).manifest
    assert manifest.input.shape == (1, 32, 32, 1)
    tail_0 = keras.models.load_model(out / "cloud" / "tail_0.keras", compile=False)
    x = manifest.preprocessing.apply_batch(np.random.default_rng(3).integers(0, 256, (4, 32, 32), np.uint8))
    np.testing.assert_allclose(tail_0.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_a_model_with_one_open_dimension_takes_input_size_for_it(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Input((None, 16, 1)): the refusal said 'any height and width' and asked for --input-size PX
    (square); --input-size 32 was then refused as not applying, 'its own input shape (32x16) decides'
    - the 32 being the flag's. Only --input-size 16 went through, and nothing said so."""
    inp = keras.Input((None, 16, 1))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(inp))
    path = tmp_path / "tall.keras"
    keras.Model(inp, layers.Dense(3, activation="softmax")(x)).save(path)
    out = tmp_path / "b"
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "8"]) == 2
    assert ("tall.keras: its input (None, None, 16, 1) takes any height (its width is 16), but int8 heads have a "
            "fixed size: give the size to build the bundle at with --input-size PX (it sets the size left open)"
            ) in capsys.readouterr().err
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "8", "--input-size", "32",
                 "--splits", "1", "--min-agreement", "0"]) == 0, capsys.readouterr().err
    assert load_bundle(out).manifest.input.shape == (1, 32, 16, 1)


def test_a_nested_backbone_is_split_inside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A backbone called as one layer (transfer learning: base = MobileNetV2(include_top=False);
    Dense(...)(GlobalAveragePooling2D()(base(inp)))) was one node to the cut search: no split fell
    inside it, and its leading Rescaling went unseen, so frames went in as pixel / 255. Its layers
    are now split between like the model's own."""
    backbone = keras.Sequential([keras.Input((8, 8, 3)), layers.Rescaling(1 / 255, name="scale"),
                                 layers.Conv2D(4, 3, activation="relu", name="conv_a"),
                                 layers.Conv2D(4, 3, activation="relu", name="conv_b")], name="backbone")
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, layers.Dense(3, activation="softmax", name="head")(layers.Flatten()(backbone(inp))))
    path = tmp_path / "transfer.keras"
    model.save(path)
    out = tmp_path / "b"
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "8", "--splits", "2",
                 "--min-agreement", "0"]) == 0, capsys.readouterr().err
    assert "transfer.keras: the layers of nested model(s) backbone are split between" in capsys.readouterr().err
    manifest = load_bundle(out).manifest
    assert manifest.num_layers == 5  # scale, conv_a, conv_b, flatten, head
    assert [s.after_layer for s in manifest.splits] == [None, "conv_a", "head"]
    assert manifest.preprocessing.scale == 1.0
    tail_0 = keras.models.load_model(out / "cloud" / "tail_0.keras", compile=False)
    frames = np.random.default_rng(4).integers(0, 256, (4, 8, 8, 3), np.uint8)
    np.testing.assert_allclose(tail_0.predict(manifest.preprocessing.apply_batch(frames), verbose=0),
                               model.predict(frames.astype(np.float32), verbose=0), atol=1e-6)


def test_a_model_of_any_input_size_takes_sizes_under_32_its_layers_can_take(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The built-ins' least --input-size, 32, is keras.applications'; a model file of any size is
    not bound by it (the digits models are 8x8): a size its layers take is built, one they cannot
    (a 3x3 'valid' convolution on 2x2) is one line naming the size and why, exit 2."""
    inp = keras.Input((None, None, 1))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(inp))
    path = tmp_path / "anysize.keras"
    keras.Model(inp, layers.Dense(3, activation="softmax")(x)).save(path)
    out = tmp_path / "b"
    assert main(["partition", str(path), "-o", str(out), "--calibration-random", "8", "--input-size", "8",
                 "--min-agreement", "0"]) == 0, capsys.readouterr().err
    assert load_bundle(out).manifest.input.shape == (1, 8, 8, 1)
    capsys.readouterr()
    assert main(["partition", str(path), "-o", str(tmp_path / "c"), "--calibration-random", "8",
                 "--input-size", "2"]) == 2
    err = capsys.readouterr().err
    assert f"--input-size 2: {path} cannot take 2x2 inputs (ValueError: Computed output size would be zero" in err
    assert err.count("\n") == 1 and not (tmp_path / "c").exists()
