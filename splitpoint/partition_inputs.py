"""What the partitioner reads: the model (a built-in or a .keras/.h5 file) and the
frames it calibrates and verifies on. Every way these can be wrong is a PartitionError naming it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from splitpoint.bundle import Preprocessing
from splitpoint.cut_points import as_functional, check_splittable, inline_nested, layer_nodes
from splitpoint.errors import ConfigError, PartitionError
from splitpoint.images import list_frame_files, read_frame_file_sized
from splitpoint.models import BUILTIN, MAX_INPUT_SIZE, ModelSource, reference_model
from splitpoint.runtime.tf import import_tensorflow

log = logging.getLogger("splitpoint.partition")  # the partitioner's logger: users filter on one name


def load_model_source(spec: str, input_size: int | None = None) -> ModelSource:
    """A built-in name or a .keras/.h5 file (a SavedModel directory is refused: _saved_model_refusal)."""
    if spec in BUILTIN:
        return reference_model(spec, input_size)
    if not spec.strip():  # Path("") is the current directory: ". is a directory" named nothing given
        raise PartitionError(f"no model given: give a .keras or .h5 file, or a built-in ({', '.join(BUILTIN)})")
    path = Path(spec)
    if not path.exists():
        raise PartitionError(f"model {spec!r} is neither a .keras/.h5 file nor a built-in ({', '.join(BUILTIN)})")
    if path.is_dir():
        raise PartitionError(_saved_model_refusal(path))  # before TensorFlow's import, like a wrong file
    if path.suffix == ".tflite":  # the edge's kind of file, not one a split can be cut from
        raise PartitionError(f"{path} is a TFLite model, already converted, with no Keras layers to split "
                             "between: partition the .keras or .h5 model it was converted from")
    if path.suffix not in (".keras", ".h5"):  # said before TensorFlow's import (seconds), like a wrong file
        raise PartitionError(f"{path}: unknown model format (expected a .keras or .h5 file)")
    _check_model_file(path)
    import_tensorflow()
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        why = _foreign_layer(path)
        raise PartitionError(f"cannot load Keras model {path}: {why or exc}") from None
    inputs = getattr(model, "inputs", None) or []  # none: subclassed or unbuilt, which as_functional names
    if len(inputs) > 1:  # before anything rebuilds it from its first input; cut_points' refusal names the model
        raise PartitionError(f"{path}: it has {len(inputs)} inputs ({', '.join(str(tuple(t.shape)) for t in inputs)}); "
                             "splitpoint splits models with one image input")
    model, sized = _at_input_size(as_functional(_in_float32(model, path)), path, input_size)
    model, nested = inline_nested(model)
    if nested:
        log.info("%s: the layers of nested model(s) %s are split between like its own", path.name, ", ".join(nested))
    shape = model.inputs[0].shape
    _check_input_shape(path, tuple(shape))
    _, h, w, c = shape
    if input_size is not None and not sized:
        # Only a built-in is built at a size; a file's weights and layers were made for its own.
        raise PartitionError(f"--input-size {input_size} does not apply to {path}: its own input shape "
                             f"({h}x{w}) decides; leave the flag out")
    check_splittable(model, str(path))  # here to name the file; find_cut_points names the model
    _check_finite_weights(model, path)
    _check_integer_input_runs(model, path)
    scale, why = _pixel_scale(model)
    if why:
        log.info("%s: %s, so frames go in as pixel values 0..255 (not pixel / 255)", path.name, why)
    pre = Preprocessing(height=int(h), width=int(w), channels=int(c), scale=scale, offset=0.0)
    return ModelSource(name=path.stem, source=str(path), model=model, preprocessing=pre, labels=[], trained=True)


def _check_input_shape(path: Path, shape: tuple) -> None:
    """The model's input must be one (N, H, W, 1|3) image of a fixed size; else say what it is and
    what to build instead. A channels-first (N, 3, H, W) input was "model input has 16 channels", and
    an input of any size (None, None, None, 3) "is not an image batch ... with a static size", which
    gave no way out."""
    if len(shape) != 4:
        raise PartitionError(f"{path}: its input {shape} is not an image batch (N, H, W, C); splitpoint splits "
                             "image models (one input of height x width x 1 or 3 channels)")
    _, h, w, c = shape
    if c not in (1, 3) and shape[1] in (1, 3):
        raise PartitionError(f"{path}: its input {shape} is channels-first (N, C, H, W); splitpoint feeds "
                             "channels-last images (N, H, W, C): in the program that builds the model, use "
                             "data_format='channels_last' (the Keras default) and save it again")
    if c not in (1, 3):
        raise PartitionError(f"{path}: its input has {c} channels; splitpoint feeds 1 (grayscale) or 3 (RGB)")
    if h is None or w is None:
        open_ = "height and width" if h is None and w is None else \
            f"height (its width is {w})" if h is None else f"width (its height is {h})"
        fills = "(square)" if h is None and w is None else "(it sets the size left open)"
        raise PartitionError(f"{path}: its input {shape} takes any {open_}, but int8 heads have a fixed "
                             f"size: give the size to build the bundle at with --input-size PX {fills}")


def _check_integer_input_runs(model: Any, path: Path) -> None:
    """A model with an integer input must compute on it: Keras casts integers for some layers
    (Rescaling) but not others, and a uint8 input read directly by a Conv2D failed in the float
    model's first prediction, a TensorFlow traceback (exit 1). One zero frame tells, before any
    work; a float input is left alone (nothing to cast)."""
    import re

    dtype = np.dtype(model.inputs[0].dtype)
    if dtype.kind not in "iu":
        return
    try:
        model(np.zeros((1, *model.inputs[0].shape[1:]), dtype), training=False)
    except Exception as exc:  # noqa: BLE001 - Keras and TensorFlow raise many types
        called = re.search(r"Exception encountered when calling (\w+)\.call", str(exc))
        who = f"its {called.group(1)} layer" if called else f"the model ({type(exc).__name__})"
        raise PartitionError(f"{path}: its input is {dtype.name}, which {who} cannot compute on; give a model "
                             "whose input is float32 (cast inside the model after the input)") from None


def _check_finite_weights(model: Any, path: Path) -> None:
    """A weight holding NaN or inf (a diverged training run) is refused, naming the layer and weight.

    Such a model was split with exit 0: its float outputs were NaN, its int8 heads' garbage, and
    verification passed because the argmax of NaN scores is 0 on both sides. A NaN bias on the last
    layer was refused as layers that "convert to no int8 computation", which named the wrong cause.
    """
    for layer in model.layers:
        for w, value in zip(layer.weights, layer.get_weights(), strict=True):
            if value.dtype.kind != "f" or np.isfinite(value).all():
                continue
            nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
            held = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "inf")) if n)
            name = w.path.removeprefix(f"{layer.name}/")  # a nested model kept whole: its inner layer/weight
            raise PartitionError(f"{path}: layer {layer.name!r} has a non-finite weight: {name!r} holds {held} of "
                                 f"its {value.size} values, so the model computes no usable output (a diverged "
                                 "training run?): save it from a checkpoint whose weights are finite")


def _at_input_size(model: Any, path: Path, size: int | None) -> tuple[Any, bool]:
    """A model that takes any height or width (a fully convolutional one), fixed at --input-size:
    the same layers and weights on an input of that size (a dimension the model fixes kept), and
    True. Other models are returned as they are, and False: --input-size did not apply."""
    shape = tuple(model.inputs[0].shape)
    if size is None or len(shape) != 4 or None not in shape[1:3]:
        return model, False
    if size > MAX_INPUT_SIZE:
        raise PartitionError(f"--input-size {size} is too large (at most {MAX_INPUT_SIZE})")
    import keras

    _, h, w, c = shape
    fixed = keras.Input((h or size, w or size, c), dtype=model.inputs[0].dtype, name=model.inputs[0].name)
    try:
        sized = keras.models.clone_model(model, input_tensors=fixed)
    except Exception as exc:  # a size its layers cannot take (smaller than its kernels and strides need)
        raise PartitionError(f"--input-size {size}: {path} cannot take {h or size}x{w or size} inputs "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    sized.set_weights(model.get_weights())
    return sized, True


#: dtype policies that compute in 16 bits; TFLite's int8 conversion takes float32 graphs only
_HALF_POLICIES = frozenset({"mixed_float16", "mixed_bfloat16", "float16", "bfloat16"})


def _in_float32(model: Any, path: Path) -> Any:
    """`model` computing in float32, with the same weights, when some layers compute in 16 bits.

    A model trained under keras.mixed_precision (mixed_float16) keeps that policy in its file, and
    its heads reached the TFLite converter with float16 ops: "cannot convert head_3 to full-integer
    TFLite: ... 'tf.Conv2D' op is neither a custom op nor a flex op", for every such model. Its
    weights are float32 anyway (a mixed policy only computes in 16 bits), and int8 heads and float
    tails are what the bundle holds, so the float32 model is the one to split.
    """
    import keras

    config = keras.saving.serialize_keras_object(model)
    half: set[str] = set()

    def to_float32(node: Any) -> None:  # every layer's policy, nested models' too, is in the config
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and node.get("config", {}).get("name") in _HALF_POLICIES:
                half.add(node["config"]["name"])
                node["config"]["name"] = "float32"
            for value in node.values():
                to_float32(value)
        elif isinstance(node, list):
            for value in node:
                to_float32(value)

    to_float32(config)
    if not half:
        return model
    rebuilt = keras.saving.deserialize_keras_object(config)
    rebuilt.set_weights([w.astype(np.float32) if w.dtype.kind == "f" else w for w in model.get_weights()])
    log.info("%s: layers compute in %s; partitioning it in float32 with the same weights (the int8 heads and "
             "float tails do not keep 16-bit arithmetic)", path.name, " and ".join(sorted(half)))
    return rebuilt


def _foreign_layer(path: Path) -> str | None:
    """Why `path` failed to load when a layer is one Keras cannot rebuild from the file, else None.

    Keras' own words sent the user where a command line cannot go: a custom class was paragraphs of
    config ending in "Could not locate class 'Twice'" or "use a custom_object_scope", a Lambda was
    "pass safe_mode=False to the loading function". The server loads the tails the same way, so the
    way out is in the user's program: built-in layers. Asked only after a load failed, so a file
    this reads wrongly costs a plainer message, never a model.
    """
    import json
    import zipfile

    import keras

    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as z:
                config = json.loads(z.read("config.json"))
        else:
            import h5py

            with h5py.File(path, "r") as f:
                config = json.loads(f.attrs["model_config"])
    except Exception:  # noqa: BLE001 - Keras' own message stands
        return None

    def layers_of(node: Any) -> Any:  # every layer entry, nested models' too
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "layers" and isinstance(value, list):
                    yield from (entry for entry in value if isinstance(entry, dict))
                yield from layers_of(value)
        elif isinstance(node, list):
            for value in node:
                yield from layers_of(value)

    for entry in layers_of(config):
        cls, cfg = entry.get("class_name"), entry.get("config") or {}
        name = cfg.get("name", entry.get("name", "?"))
        code = cfg.get("function") if cls == "Lambda" else None
        if isinstance(code, dict) and code.get("class_name") == "__lambda__":
            return (f"layer {name!r} is a Lambda holding Python code, which Keras does not load from a file "
                    "(it could run anything) and the server would not either: in the program that builds the "
                    "model, replace it with built-in layers and save it again")
        registered = entry.get("registered_name") or cls
        if (str(entry.get("module") or "").startswith("keras") or cls == "Functional"
                or hasattr(keras.layers, str(cls)) or hasattr(keras.models, str(cls))
                or keras.saving.get_registered_object(registered) is not None):
            continue
        return (f"layer {name!r} is of class {registered}, which is not a Keras layer: splitpoint loads models of "
                "built-in layers only (the server loads the tails the same way); in the program that builds the "
                "model, use built-in layers and save it again")
    return None


def _pixel_scale(model: Any) -> tuple[float, str]:
    """How a model file wants its pixels: (1.0, why) when it takes them as they are, else (1 / 255, "").

    A model that scales its own input - an integer input, or every first layer a Rescaling, as in
    keras.applications' MobileNetV3 and EfficientNet - expects 0..255. Fed pixel / 255, an integer
    input truncated every frame to 0 and a Rescaling(1/127.5, offset=-1) saw -1..-0.99: the float
    model and every split then agreed on nonsense, so verification passed and nothing said so.
    """
    import keras

    inp = model.inputs[0]
    if np.dtype(inp.dtype).kind in "iu":
        return 1.0, f"its input is {np.dtype(inp.dtype).name}"
    first = [n.operation for n in layer_nodes(model) if any(t is inp for t in n.input_tensors)]
    if first and all(isinstance(layer, keras.layers.Rescaling) for layer in first):
        return 1.0, f"it scales its own input (first layer {first[0].name!r} is a Rescaling)"
    return 1.0 / 255.0, ""


def _saved_model_refusal(path: Path) -> str:
    """Why a directory is not a model splitpoint takes, and what to give instead.

    A SavedModel keeps a traced graph, not Keras layers: Keras 3 reads it back only as one opaque
    TFSMLayer, which has no layer boundaries to cut at (and whose signature the old wrapper read
    from a private attribute, an AttributeError in current Keras). Splitting needs the layers.
    """
    if not (path / "saved_model.pb").exists():
        return f"{path} is a directory, not a model: give a .keras or .h5 file (model.save(\"m.keras\"))"
    return (f"{path} is a SavedModel, which keeps a traced graph but not the Keras layers splitpoint splits "
            "between: in the program that builds the model, save it with model.save(\"m.keras\") and "
            "partition m.keras")


def _check_model_file(path: Path) -> None:
    """Keras reports any file it cannot open as "File not found"; say what is really wrong."""
    import zipfile

    if not path.is_file():
        raise PartitionError(f"{path} is not a file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError as exc:
        raise PartitionError(f"cannot read {path}: {exc.strerror}") from None
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise PartitionError(f"{path} is not a Keras model: a .keras file is a zip archive written by "
                             "model.save('name.keras'), and this one is not")
    if path.suffix == ".h5" and magic != b"\x89HDF\r\n\x1a\n":
        raise PartitionError(f"{path} is not a Keras model: a .h5 file is HDF5 written by model.save('name.h5'), "
                             "and this one is not")


def load_calibration(
    src: ModelSource, calibration_dir: Path | None, calibration_random: int | None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(calibration frames, held-out frames, held-out labels or None), all raw uint8 (N, H, W, C)."""
    pre = src.preprocessing
    shape = (pre.height, pre.width, pre.channels)

    def fit(frames: np.ndarray) -> np.ndarray:
        return frames.reshape((len(frames), *shape))

    if calibration_dir is not None:
        frames = np.stack([_calibration_frame(p, pre) for p in list_frame_files(calibration_dir, "--calibration")])
        if len(frames) < 2:
            raise PartitionError(f"--calibration {calibration_dir}: need at least 2 frames (some are held out to verify)")
        _check_calibration_set(calibration_dir, frames)
        held = max(1, len(frames) // 5)
        return frames[:-held], frames[-held:], None
    if calibration_random is not None or src.calibration is None:
        n = calibration_random or 32
        if n < 1:
            raise PartitionError(f"--calibration-random {n}: must be at least 1")
        most = max_calibration_frames(shape)
        if n > most:
            raise PartitionError(f"--calibration-random {n}: at most {most} frames of {'x'.join(map(str, shape))} "
                                 "(their float copy must fit in memory); a few hundred calibrate int8 well")
        if src.trained and calibration_random is None:
            log.warning("no calibration data given: calibrating %s on %d random frames (quantization will be poor)", src.name, n)
        rng = np.random.default_rng(seed)
        cal = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        if src.validation is not None:
            return cal, fit(src.validation), src.validation_labels
        val = np.random.default_rng(seed + 1).integers(0, 256, size=(max(4, min(n, 16)), *shape), dtype=np.uint8)
        return cal, val, None
    assert src.validation is not None
    return fit(src.calibration), fit(src.validation), src.validation_labels


#: --calibration-random's bounds. Int8 calibration settles within a few hundred frames (TFLite's own
#: guidance is 100-500); past that, more frames add converter minutes, not accuracy. The partitioner
#: holds the frames as uint8 and as float32, so the float copy is what runs out of memory: 4 GiB of it
#: is ~7000 frames at 224x224x3. 99999999999 frames ended in a numpy MemoryError traceback.
MAX_CALIBRATION_FRAMES = 10_000
MAX_CALIBRATION_FLOAT_BYTES = 4 << 30


def max_calibration_frames(shape: tuple[int, ...]) -> int:
    """The most random calibration frames of `shape` (H, W, C) the partitioner takes."""
    return max(1, min(MAX_CALIBRATION_FRAMES, MAX_CALIBRATION_FLOAT_BYTES // (4 * int(np.prod(shape)))))


#: what a calibration set must at least hold; see _check_calibration_set
MIN_DISTINCT_FRAMES = 2
_GIVE_INSTEAD = ("give frames like those the model will see in use (a few dozen real images), "
                 "or --calibration-random N")


def _calibration_frame(path: Path, pre: Preprocessing) -> np.ndarray:
    """One frame of --calibration DIR. Every way the file is wrong (unreadable, not an image or a uint8
    image array, a pickle) is refused naming it; so is an empty image (fit_frame), not stretched
    into a blank frame (Pillow resizes a 0x0 array to a black one without complaint)."""
    try:
        frame, _ = read_frame_file_sized(path, pre)
    except ConfigError as exc:  # keyed "source" for the agent; here the file came from --calibration
        raise PartitionError(f"--calibration {path}: {exc.reason}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # what an image decoder may still raise
        raise PartitionError(f"--calibration {path}: not a readable frame ({type(exc).__name__}: {exc})") from None
    return frame


def _check_calibration_set(directory: Path, frames: np.ndarray) -> None:
    """Refuse a set that cannot calibrate: int8 ranges are taken from what the set spans.

    One value everywhere (all-black frames) makes the input's range a point: the scale comes out
    ~1e-8 and every real frame saturates, while verification on more such frames still passes.
    Copies of one frame are no better: every activation's range is that one input's, and the
    held-out frames verify nothing new. So: at least MIN_DISTINCT_FRAMES different frames - the
    least that gives a range (and the least the hold-out already asks for) - and more than one
    value. A narrow but real range (a dark or low-contrast camera) is the user's data: allowed.
    """
    if int(frames.max()) == int(frames.min()):
        raise PartitionError(f"--calibration {directory}: every pixel of all {len(frames)} frames is "
                             f"{int(frames.min())}, which gives int8 quantization no range; {_GIVE_INSTEAD}")
    distinct = len(np.unique(frames.reshape(len(frames), -1), axis=0))
    if distinct < MIN_DISTINCT_FRAMES:
        raise PartitionError(f"--calibration {directory}: the {len(frames)} frames are copies of {distinct} "
                             f"frame(s); need at least {MIN_DISTINCT_FRAMES} different ones; {_GIVE_INSTEAD}")
