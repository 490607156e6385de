"""How a split's outputs are compared with the float model's at partition time.

A classifier: top-1 agreement (argmax per frame; for several outputs, the worst
output's). An output of one value per frame (a binary classifier's sigmoid score, a
regressor's value) has no top-1 - its argmax is 0 on both sides, so it "agreed" 100% with
a split whose int8 cut had destroyed it - and gets value agreement instead: the share of
frames whose split value is within VALUE_TOLERANCE of the float model's, measured against
the spread of the float model's values on the held-out frames; when those values all lie
in [0, 1] (a probability), the split's must also fall on the same side of 0.5, the decision
a binary classifier makes (as top-1 of a 2-way softmax would). A model with both kinds of
outputs is held to the worst output's agreement. A detector (the manifest has a `detection` block): detection agreement,
both ways - the fraction of the float model's detections that the split's match
(IoU >= 0.5, same class) and the fraction of the split's that match a float one;
`agreement` is the smaller, so --min-agreement bounds both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: detections match when their boxes overlap at least this much (and the class is the same)
MATCH_IOU = 0.5

#: a one-value output: a frame agrees when |split - float| <= this share of the range (max - min)
#: of the float model's values over the held-out frames (of [0, 1] for a probability): about 13
#: steps of an int8 grid spanning them, far above the rounding of a healthy split, far below an
#: output stuck at its middle. No floor relative to the values' size: a regressor's values of
#: 2990-3012 were given 1% of 3012 = 30, more than their whole range, and a split stuck at their
#: middle "agreed". An output that barely varies over the frames is held to its own spread.
VALUE_TOLERANCE = 0.05
#: a one-value output whose float values all lie in [0, 1] is read as a probability: the
#: split's must be on the same side of this as the float model's (value >= it: class 1)
DECISION_THRESHOLD = 0.5


def value_tolerance(reference: np.ndarray) -> float:
    """The tolerance of a one-value output whose float values over the held-out frames are `reference`."""
    r = np.asarray(reference, np.float64).ravel()
    spread = float(r.max() - r.min()) if r.size else 0.0
    largest = float(np.abs(r).max()) if r.size else 0.0
    scale = max(spread, 1.0) if is_probability(r) else spread  # a probability's range is [0, 1]
    return max(VALUE_TOLERANCE * scale, 1e-6 * max(1.0, largest))  # the floor: float32's own rounding


def is_probability(reference: np.ndarray) -> bool:
    """A one-value output whose float values all lie in [0, 1]: a sigmoid's score, decided at 0.5."""
    r = np.asarray(reference).ravel()
    return bool(r.size) and bool(np.all((r >= 0) & (r <= 1)))


def value_agreement(got: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(agreement, tolerance) of a one-value output: the share of frames within the tolerance
    (and, for a probability, on the same side of DECISION_THRESHOLD)."""
    g, r = np.asarray(got, np.float64).ravel(), np.asarray(reference, np.float64).ravel()
    tol = value_tolerance(r)
    agree = np.abs(g - r) <= tol
    if is_probability(r):
        agree &= (g >= DECISION_THRESHOLD) == (r >= DECISION_THRESHOLD)
    return float(np.mean(agree)), tol


def one_value(reference: np.ndarray) -> bool:
    """An output of one value per frame (its reference is (frames, ...) with one value in each)."""
    ref = np.asarray(reference)
    return ref.ndim >= 1 and int(np.prod(ref.shape[1:], dtype=np.int64)) == 1


def agreement_rule(reference: list[np.ndarray], detection: dict | None) -> str:
    """How verify_outputs measures agreement for these float outputs, in words (the partition log,
    the refusal): 'top-1' for a classifier; for a one-value output, its tolerance and decision."""
    if detection is not None:
        return f"detection agreement (both ways, IoU >= {MATCH_IOU}, same class)"
    parts = []
    for i, r in enumerate(reference):
        name = f"output {i}: " if len(reference) > 1 else ""
        if not one_value(r):
            parts.append(f"{name}top-1 (argmax)")
            continue
        tol = value_tolerance(r)
        part = (f"{name}one value per frame, a frame agrees when the split's value is within {tol:.4g} of the float "
                f"model's ({VALUE_TOLERANCE:.0%} of its range on the held-out frames"
                f"{', of [0, 1] for a probability' if is_probability(r) else ''})")
        if is_probability(r):
            part += f" and on the same side of {DECISION_THRESHOLD} (values in [0, 1]: a probability)"
        parts.append(part)
    return "; ".join(parts)


def verify_outputs(got: list[np.ndarray], reference: list[np.ndarray], detection: dict | None) -> dict[str, Any]:
    """Per-split verification record (without min_agreement / enforced / passed)."""
    n = len(reference[0])
    max_err = max(float(np.max(np.abs(g - r))) for g, r in zip(got, reference, strict=True))
    record: dict[str, Any] = {"samples": int(n), "max_abs_error": round(max_err, 6)}
    if detection is None:
        top1 = [float(np.mean(np.argmax(g.reshape(n, -1), axis=1) == np.argmax(r.reshape(n, -1), axis=1)))
                for g, r in zip(got, reference, strict=True) if not one_value(r)]
        values = [value_agreement(g, r) for g, r in zip(got, reference, strict=True) if one_value(r)]
        if top1:
            record["top1_agreement"] = round(min(top1), 6)
        if values:
            worst, tol = min(values)
            record["value_agreement"] = round(worst, 6)  # one value per frame: within value_tolerance
            record["value_tolerance"] = round(tol, 6)
        record["agreement"] = min(record.get("top1_agreement", 1.0), record.get("value_agreement", 1.0))
        return record
    from splitpoint.detection import decode_batch

    ref_dets = decode_batch(reference, detection)
    got_dets = decode_batch(got, detection)
    recall, precision, n_ref = detection_agreement(ref_dets, got_dets)
    record.update(
        float_detections=n_ref,
        detection_recall=round(recall, 6),  # float detections found by the split
        detection_precision=round(precision, 6),  # split detections that are float ones
        agreement=round(min(recall, precision), 6),
    )
    return record


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N, 4) with boxes b (M, 4), [x0, y0, x1, y1] -> (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _matched(src: list[dict], dst: list[dict]) -> int:
    """How many of src have a detection in dst with the same class and IoU >= MATCH_IOU (greedy, one to one)."""
    used: set[int] = set()
    hits = 0
    for d in sorted(src, key=lambda d: -d["score"]):
        cands = [j for j, e in enumerate(dst) if j not in used and e["class"] == d["class"]]
        if not cands:
            continue
        overlaps = iou(np.array([d["box"]]), np.array([dst[j]["box"] for j in cands]))[0]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= MATCH_IOU:
            used.add(cands[best])
            hits += 1
    return hits


def detection_agreement(reference: list[list[dict]], got: list[list[dict]]) -> tuple[float, float, int]:
    """(recall, precision, float detections) of per-frame detections `got` against `reference`.

    No detections on either side counts as full agreement.
    """
    n_ref = sum(len(r) for r in reference)
    n_got = sum(len(g) for g in got)
    hit_ref = sum(_matched(r, g) for r, g in zip(reference, got, strict=True))
    hit_got = sum(_matched(g, r) for r, g in zip(reference, got, strict=True))
    recall = hit_ref / n_ref if n_ref else 1.0
    precision = hit_got / n_got if n_got else 1.0
    return recall, precision, n_ref
