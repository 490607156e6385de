"""Detections from a CenterNet-style detector's raw outputs, in numpy (edge and cloud alike).

The model outputs, at `stride` pixels per cell, a class heatmap (H, W, C) of
sigmoid scores and a box size map (H, W, 2) of (width, height), in model-input
pixels (`box_format` "size_pixels"), in heatmap cells ("size_cells", CenterNet's
own convention) or as fractions of the input's width and height ("size_normalized"). Decoding: a cell is a peak when it is the maximum of its 3x3
neighbourhood and its score reaches `score_threshold`; at most `max_detections`
peaks are kept, highest first; the box is centred on the cell; class-wise
non-maximum suppression (IoU over `nms_iou`) removes duplicates that neighbouring
peaks of one object leave (across classes with `class_agnostic_nms`, for objects
that never overlap, so one object cannot be reported as two classes). Boxes are [x0, y0, x1, y1] in model-input pixels,
then scaled to the source image's pixels for the records.

The manifest's `detection` block says how to read the outputs:
    {"kind": "centernet", "heatmap": 0, "size": 1, "stride": 4, "box_format": "size_pixels",
     "score_threshold": 0.3, "nms_iou": 0.5, "max_detections": 20, "class_agnostic_nms": false}
(`heatmap` and `size` index the manifest's outputs; a block without `box_format` means
"size_pixels"). `config` checks one; splitpoint/detection_config.py reads one from a
file and flags and checks it against the model.

Over the wire the cloud answers a detector's frame with the decoded detections, not the raw
maps: ONE float32 tensor named "detections" of shape (1, N, 6), rows [x0, y0, x1, y1, score,
class] in model-input pixels, highest score first (N may be 0). `to_compact` builds it,
`from_compact` checks and reads it back (a few hundred bytes instead of the maps' tens of KB).
"""

from __future__ import annotations

from typing import Any

import numpy as np

KIND = "centernet"
#: the name of the one tensor a detector's cloud answer holds
COMPACT_NAME = "detections"
COMPACT_COLUMNS = 6  # x0, y0, x1, y1, score, class
KINDS = (KIND,)
BOX_FORMATS = ("size_pixels", "size_cells", "size_normalized")
DEFAULTS: dict[str, Any] = {"kind": KIND, "heatmap": 0, "size": 1, "stride": 4, "box_format": "size_pixels",
                            "score_threshold": 0.3, "nms_iou": 0.5, "max_detections": 20,
                            "class_agnostic_nms": False}
#: the most detections a frame may keep: COCO's detectors keep 100, YOLO's 300. A frame's records
#: and its compact answer (24 bytes a row) hold each one, and 10**12 was accepted into a manifest
MAX_DETECTIONS = 10_000


class DetectionConfigError(ValueError):
    """A detection block's key has a bad value: `key`, `value` and `reason` say which and why."""

    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"detection.{key} = {value!r}: {reason}")


def _integer(key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        # 4.0 is shown as 4 (errors.show_value): say why that is not an integer
        point = " written without a decimal point" if isinstance(value, float) and value.is_integer() else ""
        raise DetectionConfigError(key, value, f"must be an integer >= {minimum}{point}")
    if maximum is not None and value > maximum:
        raise DetectionConfigError(key, value, f"must be at most {maximum}")
    return int(value)


def _fraction(key: str, value: Any, low_open: bool, high_open: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and np.isfinite(value)
    if ok:
        v = float(value)
        ok = (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if not ok:
        raise DetectionConfigError(key, value, f"must be a number in {'(' if low_open else '['}0, 1{')' if high_open else ']'}")
    return float(value)


def config(**overrides: Any) -> dict[str, Any]:
    """A detection block with the defaults filled in; DetectionConfigError (a ValueError) naming a
    bad key or value."""
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise DetectionConfigError(unknown[0], overrides[unknown[0]],
                                   f"unknown key (the keys are {', '.join(DEFAULTS)})")
    cfg = dict(DEFAULTS, **overrides)
    if cfg["kind"] not in KINDS:
        raise DetectionConfigError("kind", cfg["kind"], f"unsupported; supported: {', '.join(KINDS)}")
    if cfg["box_format"] not in BOX_FORMATS:
        raise DetectionConfigError("box_format", cfg["box_format"], f"must be one of {', '.join(BOX_FORMATS)}")
    cfg["heatmap"] = _integer("heatmap", cfg["heatmap"], 0)
    cfg["size"] = _integer("size", cfg["size"], 0)
    if cfg["heatmap"] == cfg["size"]:
        raise DetectionConfigError("size", cfg["size"], "the size map must be another output than the heatmap")
    cfg["stride"] = _integer("stride", cfg["stride"], 1)
    cfg["max_detections"] = _integer("max_detections", cfg["max_detections"], 1, MAX_DETECTIONS)
    cfg["score_threshold"] = _fraction("score_threshold", cfg["score_threshold"], True, True)
    cfg["nms_iou"] = _fraction("nms_iou", cfg["nms_iou"], True, False)
    if not isinstance(cfg["class_agnostic_nms"], bool):
        raise DetectionConfigError("class_agnostic_nms", cfg["class_agnostic_nms"], "must be true or false")
    return cfg


def _peaks(heat: np.ndarray, threshold: float, limit: int) -> list[tuple[int, int, int, float]]:
    """(row, col, class, score) of 3x3 local maxima at or over threshold, highest first."""
    h, w, _ = heat.shape
    padded = np.pad(heat, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    neighbourhood = np.max(
        np.stack([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]), axis=0)
    mask = (heat >= neighbourhood) & (heat >= threshold)
    rows, cols, classes = np.nonzero(mask)
    scores = heat[rows, cols, classes]
    order = np.argsort(-scores, kind="stable")[:limit]
    return [(int(rows[i]), int(cols[i]), int(classes[i]), float(scores[i])) for i in order]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    from splitpoint.verify import iou

    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    keep: list[int] = []
    while order:
        i = int(order.pop(0))
        keep.append(i)
        if order:
            overlaps = iou(boxes[i:i + 1], boxes[order])[0]
            order = [j for j, o in zip(order, overlaps, strict=True) if o <= iou_threshold]
    return keep


def decode_frame(outputs: list[np.ndarray], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """One frame's outputs (manifest order, with or without the batch axis of 1) ->
    [{"class", "score", "box"}] with boxes in model-input pixels, highest score first."""
    heat = np.asarray(outputs[cfg["heatmap"]], np.float32)
    size = np.asarray(outputs[cfg["size"]], np.float32)
    heat = heat.reshape(heat.shape[-3:])
    size = size.reshape(size.shape[-3:])
    stride = float(cfg["stride"])
    # the size map's unit -> model-input pixels, per axis (width, height)
    fmt = cfg.get("box_format", "size_pixels")
    grid: tuple[int, ...] = tuple(heat.shape)  # (rows, columns, classes)
    grid_h, grid_w = grid[0], grid[1]
    unit_w, unit_h = ((stride, stride) if fmt == "size_cells" else
                      (grid_w * stride, grid_h * stride) if fmt == "size_normalized" else (1.0, 1.0))
    found = _peaks(heat, float(cfg["score_threshold"]), int(cfg["max_detections"]))
    if not found:
        return []
    boxes, scores, classes = [], [], []
    for r, c, k, score in found:
        cx, cy = (c + 0.5) * stride, (r + 0.5) * stride
        bw, bh = max(0.0, float(size[r, c, 0])) * unit_w, max(0.0, float(size[r, c, 1])) * unit_h
        boxes.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        scores.append(score)
        classes.append(k)
    boxes_a, scores_a, classes_a = np.array(boxes), np.array(scores), np.array(classes)
    kept: list[int] = []
    groups: list[int | None] = [None] if cfg.get("class_agnostic_nms") else list(sorted(set(classes)))
    for group in groups:
        idx = np.arange(len(classes_a)) if group is None else np.nonzero(classes_a == group)[0]
        kept += [int(idx[j]) for j in nms(boxes_a[idx], scores_a[idx], float(cfg["nms_iou"]))]
    kept.sort(key=lambda i: -scores_a[i])
    return [{"class": int(classes_a[i]), "score": float(scores_a[i]), "box": [float(v) for v in boxes_a[i]]}
            for i in kept]


def decode_batch(outputs: list[np.ndarray], cfg: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Batched outputs (each (N, ...), manifest order) -> detections per frame (model-input pixels)."""
    n = len(outputs[0])
    return [decode_frame([o[i] for o in outputs], cfg) for i in range(n)]


def to_compact(dets: list[dict[str, Any]]) -> np.ndarray:
    """decode_frame's detections -> the compact answer's rows: float32 (N, 6), [x0, y0, x1, y1, score, class]."""
    rows = [[*d["box"], d["score"], d["class"]] for d in dets]
    return np.asarray(rows, np.float32).reshape(len(rows), COMPACT_COLUMNS)


def from_compact(arr: np.ndarray, max_detections: int, num_classes: int,
                 input_size: tuple[int, int]) -> list[dict[str, Any]]:
    """A compact answer's array ((1, N, 6) float32) -> decode_frame's detections (model-input
    pixels). ValueError saying what is wrong when it is not one: the agent then runs the frame
    locally rather than record what a broken or hostile server sent. `input_size`: the model
    input's (width, height).

    Beyond its shape and finite values, each row must be one decode_frame can give: highest
    score first, a score in [0, 1] (a peak of a sigmoid heatmap), x0 <= x1 and y0 <= y1 (a box of a size >= 0 centred
    on its cell) and that centre inside the input (a heatmap cell's); a class the model has."""
    if arr.dtype != np.float32:
        raise ValueError(f"dtype {arr.dtype}, expected float32")
    if arr.ndim != 3 or arr.shape[0] != 1 or arr.shape[2] != COMPACT_COLUMNS:
        raise ValueError(f"shape {list(arr.shape)}, expected [1, N, {COMPACT_COLUMNS}]")
    n = arr.shape[1]
    if n > max_detections:
        raise ValueError(f"{n} detections, over max_detections = {max_detections}")
    rows = arr[0]
    if not np.all(np.isfinite(rows)):
        raise ValueError("non-finite values")
    classes = rows[:, 5]
    bad = (classes != np.round(classes)) | (classes < 0) | (classes >= num_classes)
    if np.any(bad):
        raise ValueError(f"class {float(classes[np.argmax(bad)])!r} is not an integer in [0, {num_classes})")
    scores = rows[:, 4]
    bad = (scores < 0) | (scores > 1)
    if np.any(bad):
        raise ValueError(f"score {float(scores[np.argmax(bad)])!r} is not in [0, 1]")
    rising = np.diff(scores) > 0
    if np.any(rising):  # the record's label and score are its first row's: the top one
        i = int(np.argmax(rising))
        raise ValueError(f"not highest score first (row {i + 1}: {float(scores[i + 1])!r} after {float(scores[i])!r})")
    x0, y0, x1, y1 = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    bad = (x0 > x1) | (y0 > y1)
    if np.any(bad):
        raise ValueError(f"box {_box(rows[np.argmax(bad)])} has x0 > x1 or y0 > y1")
    width, height = input_size
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bad = (cx < 0) | (cx > width) | (cy < 0) | (cy > height)
    if np.any(bad):
        raise ValueError(f"box {_box(rows[np.argmax(bad)])} is centred outside the {width}x{height} input")
    return [{"class": int(r[5]), "score": float(r[4]), "box": [float(v) for v in r[:4]]} for r in rows]


def _box(row: np.ndarray) -> list[float]:
    """A row's box for a message (the server's numbers: rounded, so a message stays short)."""
    return [round(float(v), 2) for v in row[:4]]


def read_compact(arr: np.ndarray, manifest: Any) -> list[dict[str, Any]]:
    """from_compact with the bundle's limits: its max_detections, classes and input size."""
    pre = manifest.preprocessing
    return from_compact(np.asarray(arr), int(manifest.detection["max_detections"]), num_classes(manifest),
                        (pre.width, pre.height))


def to_source_pixels(dets: list[dict[str, Any]], input_size: tuple[int, int], source_size: tuple[int, int],
                     labels: list[str] | None = None) -> list[dict[str, Any]]:
    """Detections in model-input pixels -> records in source-image pixels.

    input_size and source_size are (width, height); boxes are clipped to the source image.
    """
    sx, sy = source_size[0] / input_size[0], source_size[1] / input_size[1]
    out = []
    for d in dets:
        x0, y0, x1, y1 = d["box"]
        box = [min(max(x0 * sx, 0.0), source_size[0]), min(max(y0 * sy, 0.0), source_size[1]),
               min(max(x1 * sx, 0.0), source_size[0]), min(max(y1 * sy, 0.0), source_size[1])]
        k = int(d["class"])
        out.append({"class": k, "label_name": labels[k] if labels and k < len(labels) else str(k),
                    "score": round(float(d["score"]), 4), "box": [round(v, 1) for v in box]})
    return out


def detection_records(outputs: list[np.ndarray], manifest: Any, source_size: tuple[int, int]) -> list[dict[str, Any]]:
    """What the results log holds for one frame of a detector bundle: outputs (manifest order,
    batch 1, as decode_outputs / local_outputs give them) -> [{class, label_name, score, box}]
    with box [x0, y0, x1, y1] in pixels of the source image of size (width, height)."""
    cfg = manifest.detection
    if not cfg:
        raise ValueError(f"bundle {manifest.model_name!r} is not a detector (its manifest has no detection block)")
    pre = manifest.preprocessing
    return to_source_pixels(decode_frame(outputs, cfg), (pre.width, pre.height), source_size, manifest.labels)


def compact_records(compact: np.ndarray, manifest: Any, source_size: tuple[int, int]) -> list[dict[str, Any]]:
    """detection_records for a cloud answer: its compact array (already checked by the agent's
    decode_detections) -> the same records a local run of the frame gives."""
    pre = manifest.preprocessing
    return to_source_pixels(read_compact(compact, manifest), (pre.width, pre.height), source_size, manifest.labels)


def num_classes(manifest: Any) -> int:
    """A detector bundle's classes: the channels of its heatmap output."""
    return int(manifest.outputs[manifest.detection["heatmap"]].shape[-1])
