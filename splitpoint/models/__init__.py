"""Reference models, built here with no downloads.

- ``digits-cnn``: a small CNN trained on scikit-learn's 8x8 digits. Shipped
  trained (``data/digits_cnn.keras``) with the data set (``data/digits.npz``),
  so accuracy checks mean something; ``train_digits_cnn`` rebuilds it in seconds.
- ``digits-detector``: a CenterNet-style detector with a feature pyramid and two
  outputs (class heatmap, box sizes), trained here on synthetic canvases of the
  digits and shipped as ``data/digits_detector.keras`` (models/detector.py).
- ``vgg16`` (chain, the drone paper's model), ``mobilenetv2`` and ``resnet50``
  (DAGs): ``keras.applications`` with ``weights=None`` (random weights), and
  ``centernet-fpn`` (the detector's architecture at 256 px RGB), for profiling.
  Their outputs are meaningless, so verification records agreement but does not
  enforce it by default.

TensorFlow is imported lazily: the edge side imports this package without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from splitpoint.bundle import Preprocessing
from splitpoint.errors import PartitionError

if TYPE_CHECKING:
    import keras

DATA_DIR = Path(__file__).parent / "data"
DIGITS_DATA = DATA_DIR / "digits.npz"
DIGITS_MODEL = DATA_DIR / "digits_cnn.keras"
DIGITS_DETECTOR = DATA_DIR / "digits_detector.keras"
#: digits held out from training: the validation set of the digits bundle
DIGITS_HOLDOUT = 360

BUILTIN = ("digits-cnn", "digits-detector", "vgg16", "mobilenetv2", "resnet50", "centernet-fpn")
#: the built-ins made at any --input-size, and their default size
SIZED = {"vgg16": 224, "mobilenetv2": 224, "resnet50": 224, "centernet-fpn": 256}
#: --input-size's ceiling. These architectures are used at 96-600 px (ImageNet 224, detectors
#: 256-512); one 1024x1024 frame already takes ~0.5 GB of activations in MobileNetV2's first
#: layers, and 100000 ended in a numpy MemoryError traceback.
MAX_INPUT_SIZE = 1024


@dataclass
class ModelSource:
    """A float Keras model plus what partitioning needs to know about its inputs."""

    name: str
    source: str
    model: Any  # keras.Model
    preprocessing: Preprocessing
    labels: list[str]
    #: raw uint8 frames (N, H, W[, C]) for calibration, and held-out ones (+labels) for verification
    calibration: np.ndarray | None = None
    validation: np.ndarray | None = None
    validation_labels: np.ndarray | None = None
    #: weights are trained: agreement below the threshold is an error
    trained: bool = True
    #: a detector: how its outputs decode to detections (splitpoint/detection.py), else None
    detection: dict | None = None
    #: ground-truth detections of `validation` (per frame, source-image pixels) for accuracy
    validation_boxes: list | None = None


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as uint8 images 0..255 (8x8) and their labels."""
    with np.load(DIGITS_DATA) as z:
        return z["images"], z["labels"]


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, held-out images, held-out labels), fixed and seeded."""
    images, labels = load_digits()
    order = np.random.default_rng(0).permutation(len(images))
    held, train = order[:DIGITS_HOLDOUT], order[DIGITS_HOLDOUT:]
    return images[train], labels[train], images[held], labels[held]


DIGITS_PREPROCESSING = Preprocessing(height=8, width=8, channels=1, scale=1.0 / 255.0, offset=0.0)


def build_digits_cnn() -> keras.Model:
    """ReLU-only and no ops the Edge TPU cannot map, so every head compiles whole."""
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    out = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="digits_cnn")


def train_digits_cnn(epochs: int = 40, seed: int = 0) -> tuple[keras.Model, float]:
    """Train the digits CNN on the fixed training split; returns (model, held-out accuracy)."""
    import keras

    keras.utils.set_random_seed(seed)
    xtr, ytr, xte, yte = digits_split()
    model = build_digits_cnn()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    pre = DIGITS_PREPROCESSING
    model.fit(pre.apply_batch(xtr), ytr, epochs=epochs, batch_size=64, verbose=0)
    acc = float(np.mean(np.argmax(model.predict(pre.apply_batch(xte), verbose=0), axis=1) == yte))
    return model, acc


def export_digits_data(path: Path = DIGITS_DATA) -> None:
    """Write scikit-learn's digits (values 0..16) as uint8 0..255 images. Needs scikit-learn."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    np.savez_compressed(path, images=images, labels=d.target.astype(np.int64))


def reference_model(name: str, input_size: int | None = None, seed: int = 0) -> ModelSource:
    """One of BUILTIN, ready to partition."""
    from splitpoint.runtime.tf import import_tensorflow

    import_tensorflow()
    import keras

    if name == "digits-cnn":
        if input_size not in (None, 8):
            raise PartitionError("digits-cnn takes 8x8 inputs; --input-size does not apply")
        model = keras.models.load_model(DIGITS_MODEL, compile=False)
        xtr, _, xte, yte = digits_split()
        return ModelSource(
            name="digits-cnn", source="builtin:digits-cnn", model=model,
            preprocessing=DIGITS_PREPROCESSING, labels=[str(i) for i in range(10)],
            calibration=xtr[:256], validation=xte, validation_labels=yte, trained=True,
        )
    if name == "digits-detector":
        return _digits_detector(input_size)
    if name not in SIZED:
        raise PartitionError(f"unknown built-in model {name!r}; built-in models: {', '.join(BUILTIN)}")
    size = input_size or SIZED[name]
    if size < 32:
        raise PartitionError(f"--input-size {size} is too small for {name} (at least 32)")
    if size > MAX_INPUT_SIZE:
        raise PartitionError(f"--input-size {size} is too large for {name} (at most {MAX_INPUT_SIZE})")
    keras.utils.set_random_seed(seed)
    # Random weights: preprocessing maps 0..255 to [-1, 1] as MobileNetV2 expects.
    pre = Preprocessing(height=size, width=size, channels=3, scale=1.0 / 127.5, offset=-1.0)
    if name == "centernet-fpn":
        from splitpoint.models.detector import DETECTION, build_detector

        if size % 16:
            raise PartitionError(f"--input-size {size}: centernet-fpn takes a multiple of 16 (224-320 for profiling)")
        model = build_detector(size, channels=3, classes=20, width=32, name="centernet_fpn")
        return ModelSource(name=name, source=f"builtin:{name}@{size}", model=model, preprocessing=pre,
                           labels=[], trained=False, detection=dict(DETECTION))
    apps = keras.applications
    builder = {"vgg16": apps.VGG16, "mobilenetv2": apps.MobileNetV2, "resnet50": apps.ResNet50}[name]
    model = builder(weights=None, input_shape=(size, size, 3), classes=1000)
    return ModelSource(
        name=name, source=f"builtin:{name}@{size}", model=model, preprocessing=pre,
        labels=[], trained=False,
    )


def _digits_detector(input_size: int | None) -> ModelSource:
    import keras

    from splitpoint.models import detector

    if input_size not in (None, detector.CANVAS):
        raise PartitionError(f"digits-detector takes {detector.CANVAS}x{detector.CANVAS} inputs; --input-size does not apply")
    model = keras.models.load_model(DIGITS_DETECTOR, compile=False)
    xtr, ytr, _, _ = digits_split()
    calibration, _ = detector.synthetic_canvases(xtr, ytr, 128, seed=7)
    validation, truth = detector.holdout_canvases()
    return ModelSource(
        name="digits-detector", source="builtin:digits-detector", model=model,
        preprocessing=detector.DETECTOR_PREPROCESSING, labels=[str(i) for i in range(10)],
        calibration=calibration, validation=validation, trained=True,
        detection=dict(detector.DETECTION), validation_boxes=truth,
    )


def regenerate_digits_detector() -> dict:
    """Retrain data/digits_detector.keras from data/digits.npz (a few minutes); returns its accuracy."""
    from splitpoint.models.detector import build_detector, train_digits_detector

    trained, acc = train_digits_detector()
    clean = build_detector()  # no optimizer state in the shipped file
    clean.set_weights(trained.get_weights())
    clean.save(DIGITS_DETECTOR)
    return acc


def regenerate_digits_assets() -> float:
    """Rebuild data/digits.npz and data/digits_cnn.keras (needs scikit-learn); returns accuracy."""
    export_digits_data()
    trained, acc = train_digits_cnn()
    clean = build_digits_cnn()  # no optimizer state in the shipped file
    clean.set_weights(trained.get_weights())
    clean.save(DIGITS_MODEL)
    return acc
