"""Small statistics over the agent's per-frame records, shared by the bench's stages."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

import numpy as np


def rnd(x: float | None, nd: int = 3) -> float | None:
    """x rounded for the JSON; None for a missing or infinite value."""
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def latency_stats(values: list[float]) -> dict[str, Any]:
    """frames, median_ms, p95_ms, mean_ms, min_ms, max_ms (the keys of FixedRun and TraceRunResult)."""
    if not values:
        return {"frames": 0, "median_ms": None, "p95_ms": None, "mean_ms": None}
    a = np.asarray(values, dtype=np.float64)
    return {"frames": len(values), "median_ms": rnd(float(np.median(a))), "p95_ms": rnd(float(np.percentile(a, 95))),
            "mean_ms": rnd(float(a.mean())), "min_ms": rnd(float(a.min())), "max_ms": rnd(float(a.max()))}


def median(values: list[float]) -> float | None:
    return rnd(statistics.median(values)) if values else None


#: how many frames at each end of a run `last_over_first_median` compares (issue 10: "the median
#: latency of its last 50 frames is within 1.5x that of its first 50")
KEEP_UP_FRAMES = 50


def last_over_first_median(latencies_ms: list[float], n: int = KEEP_UP_FRAMES) -> float | None:
    """The median of the last `n` latencies (in frame order) over the median of the first `n`:
    about 1 for a run that keeps up with its camera, growing with the backlog of one that does
    not. None with fewer than 2n values (the two ends would overlap)."""
    if len(latencies_ms) < 2 * n:
        return None
    first, last = statistics.median(latencies_ms[:n]), statistics.median(latencies_ms[-n:])
    return rnd(last / first, 4) if first > 0 else None


def ok_records(records: list[dict[str, Any]], warmup: int = 0) -> list[dict[str, Any]]:
    return sorted((r for r in records if r.get("status") == "ok" and r["frame_id"] >= warmup), key=lambda r: r["frame_id"])


def completion_ns(r: dict[str, Any]) -> float:
    return r["capture_time_unix_ns"] + r["timings_ms"]["end_to_end"] * 1e6


def settled_split(splits: list[int]) -> int | None:
    """The mode of the last half (ties: the later one wins)."""
    if not splits:
        return None
    half = splits[len(splits) // 2:]
    counts = Counter(half)
    best = max(counts.values())
    return next(k for k in reversed(half) if counts[k] == best)


def count_switches(splits: list[int], before: int | None = None) -> int:
    seq = ([before] if before is not None else []) + list(splits)
    return sum(1 for a, b in zip(seq, seq[1:], strict=False) if a != b)
