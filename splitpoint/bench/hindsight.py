"""The fixed runs switched in hindsight: how far a scheduler that only picks among the fixed
splits, with the measured outcome of every pick known in advance, could go on one replay.

The clairvoyant bound (clairvoyant.py) is a model: it knows the trace's capacity to the
millisecond and leaves out what each offload costs this system beyond it. This figure is made of
measurements only: every fixed split's run over the same slice, its frames aligned by capture
time (the replay restarts the trace at each run's first frame). Cut the counted frames into
windows of `window` frames; in each, take the fixed run whose frames there have the lowest mean;
the figure is the mean of the frames so taken. At 10 fps a window of 5 frames is a scheduler that
may change split every 0.5 s and always knows which split the next half second favours.

Neither bound nor estimate: a fixed run's frames carry its own backlog (after an outage a cloud
run's frames queue for seconds, where a scheduler that had switched would not have queued), which
makes the figure too high there; and with one-frame windows each frame gets the luckiest of the
runs' noise, which makes it too low. It says how much of the bound's room a scheduler that
switches at a given pace could take with perfect foresight of the measured runs. No target reads it.
"""

from __future__ import annotations

#: window lengths (frames) the bench records: every frame, and every 0.5 s and 1 s at 10 fps
WINDOWS = (1, 5, 10)


def switched_mean(frame_ms: dict[str, list[float | None]], window: int) -> float | None:
    """The mean latency of the runs' frames (label -> latency per counted frame, None where that
    frame had no answer) when each window of `window` frames takes the run with the lowest mean
    there. A run with a frame missing in a window cannot be taken for it. None when there are no
    frames, or a window no run answered in full."""
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, not {window}")
    runs = [ms for ms in frame_ms.values() if ms]
    if not runs:
        return None
    n = min(len(ms) for ms in runs)
    taken: list[float] = []
    for start in range(0, n, window):
        full = [[v for v in ms[start:min(n, start + window)] if v is not None] for ms in runs]
        full = [w for w in full if len(w) == min(n, start + window) - start]  # none missing
        if not full:
            return None
        taken += min(full, key=sum)
    return sum(taken) / len(taken)


def switched_means(frame_ms: dict[str, list[float | None]], windows: tuple[int, ...] = WINDOWS) -> dict[str, float]:
    """`switched_mean` for each window length, keyed by it ("5"), rounded; windows with no figure left out."""
    out = {}
    for w in windows:
        mean = switched_mean(frame_ms, w)
        if mean is not None:
            out[str(w)] = round(mean, 3)
    return out
