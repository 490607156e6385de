"""How a split's outputs are compared with the float model's at partition time.

A classifier: top-1 agreement (argmax per frame; for several outputs, the worst
output's). A detector (the manifest has a `detection` block): detection agreement,
both ways - the fraction of the float model's detections that the split's match
(IoU >= 0.5, same class) and the fraction of the split's that match a float one;
`agreement` is the smaller, so --min-agreement bounds both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: detections match when their boxes overlap at least this much (and the class is the same)
MATCH_IOU = 0.5


def verify_outputs(got: list[np.ndarray], reference: list[np.ndarray], detection: dict | None) -> dict[str, Any]:
    """Per-split verification record (without min_agreement / enforced / passed)."""
    n = len(reference[0])
    max_err = max(float(np.max(np.abs(g - r))) for g, r in zip(got, reference, strict=True))
    record: dict[str, Any] = {"samples": int(n), "max_abs_error": round(max_err, 6)}
    if detection is None:
        top1 = min(float(np.mean(np.argmax(g.reshape(n, -1), axis=1) == np.argmax(r.reshape(n, -1), axis=1)))
                   for g, r in zip(got, reference, strict=True))
        record["top1_agreement"] = round(top1, 6)
        record["agreement"] = record["top1_agreement"]
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
