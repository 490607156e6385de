"""The fixed runs switched by window: how far a scheduler that only picks among the fixed splits
could go on one replay, with foresight of their measured outcomes, and without it.

The clairvoyant bound (clairvoyant.py) is a model: it knows the trace's capacity to the
millisecond and leaves out what each offload costs this system beyond it. These figures are made
of measurements only: every fixed split's run over the same slice, its frames aligned by capture
time (the replay restarts the trace at each run's first frame; `TraceRunResult.counted_ms`).
Cut the counted frames into windows of `window` frames, and in each take one fixed run's frames:

* switched in hindsight (`switched_mean`): the run whose frames in that window have the lowest
  mean. At 10 fps a window of 5 frames is a scheduler that may change split every 0.5 s and
  always knows which split the next half second favours.
* followed (`followed_mean`): the run that was quickest over the window before - a scheduler that
  sees every split's outcome as it happens, which no agent does (it sees the path it took), but
  not the next window's. The first window takes the best fixed split of the whole replay.

Neither is a bound: a fixed run's frames carry its own backlog (after an outage a cloud run's
frames queue for seconds, where a scheduler that had switched would not have queued), which makes
both figures too high on a replay whose cloud runs fall behind; and with one-frame windows the
hindsight figure gives each frame the luckiest of the runs' noise, which makes it too low. They
say how much of the bound's room a scheduler that switches at a given pace could take, with and
without foresight. No target reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: window lengths (frames) the report shows: every frame, and every 0.5 s and 1 s at 10 fps
WINDOWS = (1, 5, 10)

FrameTimes = Mapping[str, Sequence[float | None]]


def _windows(frame_ms: FrameTimes, window: int) -> list[dict[str, list[float]]] | None:
    """Per window, each run answered in full there -> its latencies; None without frames."""
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, not {window}")
    runs = {label: ms for label, ms in frame_ms.items() if ms}
    if not runs:
        return None
    n = min(len(ms) for ms in runs.values())
    out = []
    for start in range(0, n, window):
        end = min(n, start + window)
        out.append({label: [v for v in ms[start:end] if v is not None] for label, ms in runs.items()
                    if all(v is not None for v in ms[start:end])})
    return out


def _quickest(window: dict[str, list[float]]) -> str:
    return min(window, key=lambda label: sum(window[label]))


def switched_mean(frame_ms: FrameTimes, window: int) -> float | None:
    """The mean latency of the runs' frames (label -> latency per counted frame, None where that
    frame had no answer) when each window of `window` frames takes the run with the lowest mean
    there. A run with a frame missing in a window cannot be taken for it. None when there are no
    frames, or a window no run answered in full."""
    windows = _windows(frame_ms, window)
    if not windows or not all(windows):
        return None
    taken = [v for w in windows for v in w[_quickest(w)]]
    return sum(taken) / len(taken)


def followed_mean(frame_ms: FrameTimes, window: int) -> float | None:
    """The mean latency when each window takes the run that was quickest over the window before
    (the first: the run with the lowest mean over all frames). None when there are no frames,
    or a run so taken, or the window before, lacks a frame."""
    windows = _windows(frame_ms, window)
    if not windows or not all(windows):
        return None
    full = set.intersection(*(set(w) for w in windows))
    if not full:
        return None
    pick = min(full, key=lambda label: sum(sum(w[label]) for w in windows))
    taken: list[float] = []
    for w in windows:
        if pick not in w:
            return None
        taken += w[pick]
        pick = _quickest(w)
    return sum(taken) / len(taken)


def by_window(frame_ms: FrameTimes, windows: tuple[int, ...] = WINDOWS) -> list[tuple[int, float, float | None]]:
    """(window, switched in hindsight, followed) for each window length the hindsight figure exists for."""
    out = []
    for w in windows:
        switched = switched_mean(frame_ms, w)
        if switched is not None:
            out.append((w, switched, followed_mean(frame_ms, w)))
    return out
