"""The reference detectors: CenterNet-style, with a feature pyramid, ReLU only.

- ``digits-detector``: 64x64 grayscale canvases with 1-4 of the bundled 8x8 digits
  scattered on them, each scaled to 10-20 px; ten classes. Trained here in a few
  minutes (`train_digits_detector`), shipped as ``data/digits_detector.keras``.
- ``centernet-fpn``: the same architecture widened for 224-320 px RGB input, with
  random weights, for profiling.

Both output, at stride 4, a class heatmap (sigmoid) and a box size map (width,
height in input pixels): what splitpoint/detection.py decodes. The pyramid's
lateral taps and top-down additions leave no single tensor that carries all state
between the backbone's stride-8 stage and the head: multi-tensor cuts split it there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from splitpoint import detection
from splitpoint.bundle import Preprocessing

if TYPE_CHECKING:
    import keras

CANVAS = 64
STRIDE = 4
DIGIT_PX = (10, 20)
#: digits never overlap on the canvases: one box is one digit, whatever the classes' scores
DETECTION = detection.config(stride=STRIDE, score_threshold=0.3, nms_iou=0.5, max_detections=20, class_agnostic_nms=True)
DETECTOR_PREPROCESSING = Preprocessing(height=CANVAS, width=CANVAS, channels=1, scale=1.0 / 255.0, offset=0.0)


def build_detector(size: int = CANVAS, channels: int = 1, classes: int = 10, width: int = 16,
                   name: str = "digits_detector") -> keras.Model:
    """Backbone of four stride-2 stages, FPN over strides 4/8/16, heads at stride 4."""
    import keras
    from keras import layers

    def conv(x: Any, filters: int, stride: int, tag: str) -> Any:
        return layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu", name=tag)(x)

    inp = keras.Input((size, size, channels), name="image")
    c1 = conv(inp, width, 2, "stem")  # /2
    c2 = conv(c1, width * 2, 2, "stage2")  # /4
    c2 = conv(c2, width * 2, 1, "stage2_b")
    c3 = conv(c2, width * 3, 2, "stage3")  # /8
    c3 = conv(c3, width * 3, 1, "stage3_b")
    c4 = conv(c3, width * 4, 2, "stage4")  # /16
    p4 = layers.Conv2D(width * 2, 1, activation="relu", name="lateral4")(c4)
    l3 = layers.Conv2D(width * 2, 1, activation="relu", name="lateral3")(c3)
    p3 = layers.Add(name="fpn3")([layers.UpSampling2D(name="up4")(p4), l3])
    l2 = layers.Conv2D(width * 2, 1, activation="relu", name="lateral2")(c2)
    p2 = layers.Add(name="fpn2")([layers.UpSampling2D(name="up3")(p3), l2])
    h = conv(p2, width * 2, 1, "head")
    heat = layers.Conv2D(classes, 1, activation="sigmoid", name="heatmap",
                         bias_initializer=keras.initializers.Constant(-2.2))(h)  # CenterNet's prior: p = 0.1
    sizes = layers.Conv2D(2, 1, activation="relu", name="size")(h)
    return keras.Model(inp, [heat, sizes], name=name)


def synthetic_canvases(images: np.ndarray, labels: np.ndarray, n: int, seed: int,
                       size: int = CANVAS) -> tuple[np.ndarray, list[list[dict]]]:
    """n canvases (n, size, size, 1) uint8 with 1-4 digits each, and their boxes
    [{"class", "box": [x0, y0, x1, y1]}] in canvas pixels. Digits do not overlap."""
    rng = np.random.default_rng(seed)
    canvases = rng.integers(0, 24, size=(n, size, size, 1), dtype=np.uint8)  # a little sensor noise
    truth: list[list[dict]] = []
    for i in range(n):
        placed: list[list[float]] = []
        objs: list[dict] = []
        for _ in range(int(rng.integers(1, 5))):
            for _attempt in range(20):
                s = int(rng.integers(DIGIT_PX[0], DIGIT_PX[1] + 1))
                x, y = int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))
                box = [float(x), float(y), float(x + s), float(y + s)]
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                    break
            else:
                continue
            j = int(rng.integers(len(images)))
            idx = (np.arange(s) * images.shape[1] // s)
            patch = images[j][np.ix_(idx, idx)]
            region = canvases[i, y:y + s, x:x + s, 0]
            np.maximum(region, patch, out=region)
            placed.append(box)
            objs.append({"class": int(labels[j]), "box": box})
        truth.append(objs)
    return canvases, truth


def targets(truth: list[list[dict]], size: int = CANVAS, classes: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CenterNet targets at stride 4: Gaussian heatmaps, sizes and a mask of object centres."""
    cells = size // STRIDE
    heat = np.zeros((len(truth), cells, cells, classes), np.float32)
    wh = np.zeros((len(truth), cells, cells, 2), np.float32)
    mask = np.zeros((len(truth), cells, cells, 1), np.float32)
    yy, xx = np.mgrid[0:cells, 0:cells]
    for i, objs in enumerate(truth):
        for o in objs:
            x0, y0, x1, y1 = o["box"]
            cx, cy = (x0 + x1) / 2 / STRIDE - 0.5, (y0 + y1) / 2 / STRIDE - 0.5
            r, c = int(round(cy)), int(round(cx))
            sigma = max(0.5, (x1 - x0) / STRIDE / 4)
            g = np.exp(-((xx - c) ** 2 + (yy - r) ** 2) / (2 * sigma ** 2))
            heat[i, :, :, o["class"]] = np.maximum(heat[i, :, :, o["class"]], g)
            wh[i, r, c] = (x1 - x0, y1 - y0)
            mask[i, r, c] = 1.0
    return heat, wh, mask


def train_digits_detector(epochs: int = 40, n_train: int = 4000, seed: int = 0) -> tuple[keras.Model, dict]:
    """Train on canvases of the training digits; returns (model, accuracy on held-out canvases)."""
    import keras
    from keras import ops

    from splitpoint.models import digits_split

    keras.utils.set_random_seed(seed)
    xtr, ytr, xte, yte = digits_split()
    canvases, truth = synthetic_canvases(xtr, ytr, n_train, seed)
    heat_t, wh_t, mask_t = targets(truth)
    model = build_detector()

    def focal(y_true: Any, y_pred: Any) -> Any:  # CenterNet's penalty-reduced focal loss
        p = ops.clip(y_pred, 1e-4, 1 - 1e-4)
        pos = ops.cast(y_true >= 0.999, "float32")
        pos_loss = -ops.log(p) * (1 - p) ** 2 * pos
        neg_loss = -ops.log(1 - p) * p ** 2 * (1 - y_true) ** 4 * (1 - pos)
        return ops.sum(pos_loss + neg_loss) / ops.maximum(ops.sum(pos), 1.0)

    def size_l1(y_true: Any, y_pred: Any) -> Any:  # only at object centres (y_true > 0 there)
        m = ops.cast(ops.sum(y_true, axis=-1, keepdims=True) > 0, "float32")
        return ops.sum(ops.abs(y_pred - y_true) * m) / ops.maximum(ops.sum(m), 1.0)

    steps = epochs * -(-n_train // 32)
    rate = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=[focal, size_l1], loss_weights=[1.0, 0.05])
    x = DETECTOR_PREPROCESSING.apply_batch(canvases)
    model.fit(x, [heat_t, wh_t], epochs=epochs, batch_size=32, verbose=0)
    return model, detector_accuracy(model, *holdout_canvases())


def holdout_canvases(n: int = 64) -> tuple[np.ndarray, list[list[dict]]]:
    """Canvases of the held-out digits: the detector bundle's validation frames."""
    from splitpoint.models import digits_split

    _, _, xte, yte = digits_split()
    return synthetic_canvases(xte, yte, n, seed=12345)


def detector_accuracy(model: Any, canvases: np.ndarray, truth: list[list[dict]]) -> dict:
    """Precision and recall (IoU >= 0.5, same class) of the model's detections against the truth."""
    from splitpoint.verify import detection_agreement

    outs = model.predict(DETECTOR_PREPROCESSING.apply_batch(canvases), verbose=0, batch_size=32)
    found = detection.decode_batch([np.asarray(o) for o in outs], DETECTION)
    gt = [[{"class": o["class"], "score": 1.0, "box": o["box"]} for o in objs] for objs in truth]
    recall, precision, n = detection_agreement(gt, found)
    return {"objects": n, "recall": round(recall, 4), "precision": round(precision, 4)}
