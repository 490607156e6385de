"""When an offloaded frame stops waiting for the cloud and runs locally too: its hedge time.

A frame sent to the cloud gets a hedge time, counted from the start of its head:

- the policy's own predicted latency for its split plus a margin learnt from
  how wrong recent predictions were (`MarginLearner`): a high quantile of recent
  (actual - predicted), never below `hedge_margin`;
- under min-energy with `deadline_ms`, the deadline itself: the policy picked
  the split because it meets the deadline, so missing it is the moment to act;
- without a prediction (the fixed policy, which has no profiles),
  `frame_deadline_ms`, as before hedging existed.

It is never later than `frame_deadline_ms` after sending. When it passes with no
answer the frame also runs locally; the first of the two results is recorded
(the frame ledger sees to that), and a later cloud answer still teaches the link
estimate and the margin. With `hedge = "off"` every frame waits for
`frame_deadline_ms` and is then given up to a local run, as before.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.link import ANSWER_MEMORY_S, percentile

HEDGE_MODES = ("auto", "off")


class MarginLearner:
    """The margin added to a predicted latency: a high quantile of recent prediction errors.

    `observe(actual, predicted)` after every cloud answer (late ones included); `margin_ms()`
    is max(`floor_ms`, the `quantile` of the last `window` errors actual - predicted). A
    link slower than planned widens it at once; a good stretch narrows it as the window
    forgets. Errors older than `memory_s` are forgotten too: only answers feed the window, and
    an agent its errors keep on the edge gets none (scheduler.link.ANSWER_MEMORY_S). Thread-safe
    (answers arrive on gRPC threads, frames are planned on the main one)."""

    def __init__(self, floor_ms: float, quantile: float = 0.95, window: int = 50,
                 memory_s: float = ANSWER_MEMORY_S, clock: Callable[[], float] = time.monotonic):
        if floor_ms < 0:
            raise ValueError(f"floor_ms must be >= 0, not {floor_ms}")
        if not 0 < quantile <= 1 or window < 1 or not memory_s > 0:
            raise ValueError(f"quantile must be in (0, 1], window >= 1 and memory_s > 0, not {quantile}, {window}, "
                             f"{memory_s}")
        self.floor_ms = floor_ms
        self.quantile = quantile
        self.memory_s = memory_s
        self._clock = clock
        self._errors: deque[tuple[float, float]] = deque(maxlen=window)  # (when observed, error), oldest first
        self._lock = threading.Lock()

    def observe(self, actual_ms: float, predicted_ms: float, cap_ms: float | None = None) -> None:
        """One answer's error actual - predicted, counted at most `cap_ms` (see `late_cap_ms`)."""
        error = actual_ms - predicted_ms
        with self._lock:
            self._errors.append((self._clock(), error if cap_ms is None else min(error, cap_ms)))

    def _recent(self) -> list[float]:
        """The errors of the last `memory_s` (the older ones dropped); under the lock."""
        since = self._clock() - self.memory_s
        while self._errors and self._errors[0][0] < since:
            self._errors.popleft()
        return [e for _, e in self._errors]

    @staticmethod
    def late_cap_ms(margin_ms: float) -> float:
        """What the answer to a hedged frame may add: at most twice the margin it was hedged with.

        Its error is censored by the hedge (the local result stood in for it). Counted in full,
        one 2 s outage would set the margin to 2 s for the next `window` frames, and a second
        outage in that time would not be hedged at all; ignored, a policy that predicts 30 ms
        too low would be hedged on every frame forever. Doubling per answer lets a systematic
        error be learnt within a few frames and an outage only widen the margin step by step."""
        return 2 * margin_ms

    def margin_ms(self) -> float:
        with self._lock:
            errors = self._recent()
        return max(self.floor_ms, percentile(errors, self.quantile * 100)) if errors else self.floor_ms

    def quantile_ms(self, quantile: float) -> float:
        """The `quantile` of the recent errors, no floor (0 before any answer, or none of late)."""
        with self._lock:
            errors = self._recent()
        return percentile(errors, quantile * 100) if errors else 0.0

    @property
    def samples(self) -> int:
        with self._lock:
            return len(self._recent())


@dataclass(frozen=True)
class HedgePlan:
    """A frame's hedge: `budget_ms` after its head starts, and why that long."""

    budget_ms: float
    basis: str  # "predicted", "deadline" or "frame_deadline_ms"
    predicted_ms: float | None = None  # the policy's latency for the split, when it made one
    margin_ms: float = 0.0

    def reason(self) -> str:
        """The record's fallback_reason when the hedge fires."""
        if self.basis == "predicted":
            return (f"hedged: no answer within {self.budget_ms:.0f} ms (predicted {self.predicted_ms:.0f} ms "
                    f"+ margin {self.margin_ms:.0f} ms)")
        if self.basis == "deadline":
            return f"hedged: no answer within the policy's deadline_ms = {self.budget_ms:g}"
        return f"no answer within frame_deadline_ms = {self.budget_ms:g}"


def plan_hedge(mode: str, prediction: tuple[float, bool, float] | None, learner: MarginLearner,
               frame_deadline_ms: float) -> HedgePlan:
    """The hedge of one frame. `prediction` is the policy's (latency ms, is_deadline, server ms)
    for the frame's split, None when it has none; hedging off or no prediction: frame_deadline_ms."""
    if mode == "off" or prediction is None:
        return HedgePlan(float(frame_deadline_ms), "frame_deadline_ms")
    ms, is_deadline = prediction[0], prediction[1]
    margin = 0.0 if is_deadline else learner.margin_ms()
    if ms + margin >= frame_deadline_ms:  # never later than the frame's own deadline
        return HedgePlan(float(frame_deadline_ms), "frame_deadline_ms", ms, margin)
    return HedgePlan(ms + margin, "deadline" if is_deadline else "predicted", ms, margin)
