"""The edge's side of a frame's end: local runs, and the one record that ends a frame.

Every local run - k = K and every fallback from the cloud - is queued on the one
local executor (edge_node/local_executor.py) by `run_local`; the calling thread
(the capture loop, a gRPC receive thread, the deadline watchdog) goes on at once.
`complete` and `fail` end a frame through the ledger, so only the first path to
end it writes its record and frees its window slot; a later one writes nothing.

A hedged or raced frame (edge_node/cloud_paths.py) is run here while it is still held
for the cloud: if the cloud answer is recorded while the run waits in the queue, the
run is skipped (`pending.settled`); if it is recorded during the run, the ledger
discards the local result. If that run fails, the frame is not failed at once: its cloud
answer may still come, so it stays held (edge_node/pending.py: `Pending.local_failed`) and
ends failed only when no answer will come. Every other local run that fails (k = K, a
fallback, a raced frame with no stream) ends its frame failed at once.

The timeline (scheduler/paths.py) hears of the edge's use: a fallback's or a hedge's local
run is booked when it is queued (a planned k = K run was booked by the plan), and freed when
it ends or is skipped; a frame's end also releases a transfer the plan booked but that
never happened (no stream, a failure), unless a hedged frame's cloud answer may still come.

A head or whole-model run that raises (a USB accelerator gone from the bus) ends its frame
with a failure record; `health` counts such runs, and a few in a row stop the agent.

Locks: none of its own. `complete` runs the recorder (its lock -> the results log's
lock) inside `FrameLedger.finish`, which holds no lock while writing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from scheduler.paths import Timeline
from scheduler.policy_base import FrameOutcome
from splitpoint.detection import compact_records, detection_records

from .device_health import DeviceHealth
from .heads import HeadOutput
from .ledger import FrameLedger
from .notices import FallbackDigest
from .pending import Pending, failed_both
from .recorder import Recorder
from .sources import Frame

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name


class Executor(Protocol):
    def submit(self, job: Callable[[], None]) -> bool: ...

    def close(self, timeout_s: float = 5.0) -> None: ...


class EdgeWork:
    def __init__(self, manifest: Any, heads: Any, ledger: FrameLedger, recorder: Recorder, executor: Executor,
                 observe: Callable[[FrameOutcome], None], fallback_digest: FallbackDigest,
                 timeline: Timeline, health: DeviceHealth, clock: Callable[[], float] = time.monotonic):
        self.manifest = manifest
        self.K = manifest.num_layers
        self.heads = heads
        self.health = health  # counts the runs that fail in a row (edge_node/device_health.py)
        self.ledger = ledger
        self.recorder = recorder
        self.executor = executor
        self.observe = observe  # the current policy's observe (a reload swaps the policy)
        self.fallback_digest = fallback_digest
        self.timeline = timeline  # the agent's one timeline: the planner reads what every path books
        self.clock = clock
        #: head(K) as the policy predicts it, for booking unplanned local runs (0 until known)
        self.local_ms_guess = 0.0

    def fail(self, frame: Frame, message: str) -> None:
        """End `frame` with an explicit failure record."""
        self.ledger.finish(frame.index, lambda: self.recorder.failed(frame.index, frame.origin, frame.label, message))
        self._release(frame.index, None)

    def _release(self, frame_id: int, pending: Pending | None) -> None:
        """The frame ended: nothing of it runs on the edge any more, and unless it was hedged or
        raced (its cloud answer may still come, and cloud_paths releases the link then) no bytes
        of it are still to cross the link."""
        now = self.clock()
        self.timeline.edge_done(frame_id, now)
        if pending is None or not pending.local_queued:
            self.timeline.link_done(frame_id, now, answered=False)  # a no-op after its answer came

    def run_head(self, frame: Frame, k: int, x: np.ndarray) -> HeadOutput | None:
        """Head k of a frame to be offloaded, on the calling (capture) thread; None when the run
        raised: the frame has ended with a failure record (and what its plan booked is freed)."""
        try:
            out: HeadOutput = self.heads.run(k, x)
        except Exception as exc:  # noqa: BLE001 - a device gone mid-run: this frame's failure, not the agent's death
            self.fail(frame, self.health.failed(f"head {k}", exc) if k else f"quantizing the input failed: {exc!r}")
            return None
        if k:  # k = 0 only quantizes the input on the CPU: it says nothing of the device
            self.health.ok()
        return out

    def run_local(self, frame: Frame, x: np.ndarray, split: int, preprocess_ms: float, reason: str | None,
                  head_ms: float = 0.0, pending: Pending | None = None, beside: bool = False) -> None:
        """Queue the frame's local run on the local executor; the calling thread goes on at once.
        `beside`: a hedge's or race's run, while `pending`'s cloud answer may still come.

        After close() nothing is queued: the frame stays unfinished (abandoned; resume re-runs it)."""
        if reason is not None:  # a fallback or a hedge: a run the plan did not foresee
            self.timeline.edge_reserved(frame.index, self.clock(), self.local_ms_guess)
        self.executor.submit(lambda: self._finish_local(frame, x, split, preprocess_ms, reason, head_ms, pending, beside))

    def _finish_local(self, frame: Frame, x: np.ndarray, split: int, preprocess_ms: float, reason: str | None,
                      head_ms: float, pending: Pending | None, beside: bool = False) -> None:
        """Run the whole model here (k = K); `reason` set means a fallback from split `split`;
        `pending`: the frame as it was sent (its hedge, and whether the cloud answered first);
        `beside`: its answer may still come (a failed run then leaves it waiting for that)."""
        if pending is not None and pending.settled.is_set():
            self.timeline.edge_done(frame.index, self.clock())
            return  # hedged, and the cloud answer was recorded while this waited in the queue
        try:
            try:
                arrays, local_ms = self.heads.run_local_all(x)
            finally:
                self.timeline.edge_done(frame.index, self.clock())
        except Exception as exc:  # noqa: BLE001 - the device failed the run: this frame's failure
            self._local_failed(frame, pending if beside else None, self.health.failed("the whole model", exc))
            return
        self.health.ok()
        try:
            outputs = [a.reshape(o.shape) for a, o in zip(arrays, self.manifest.outputs, strict=True)]
        except Exception as exc:  # the last resort must not lose the frame either
            log.exception("local run of frame %d failed", frame.index)
            self._local_failed(frame, pending if beside else None, f"local run failed: {exc!r}")
            return
        timings = {"preprocess": preprocess_ms, "head": head_ms, "local": local_ms}
        self.complete(frame, self.K if reason is None else split, "local", outputs, timings, reason, pending=pending)
        self.observe(FrameOutcome(frame.index, split, "local", reason is None, head_ms, 0))

    def _local_failed(self, frame: Frame, beside: Pending | None, error: str) -> None:
        """A local run failed with `error`: the frame fails, unless it ran `beside` a cloud answer
        that may still come - then it waits for that (see the module doc)."""
        if beside is not None:
            no_answer = beside.local_failed(error)
            if no_answer is None:
                log.warning("frame %d: its local run failed (%s); it waits for its cloud answer", frame.index, error)
                return
            error = failed_both(error, no_answer)
        self.fail(frame, error)

    def complete(self, frame: Frame, split: int, where: str, outputs: list[np.ndarray], timings: dict[str, float],
                 fallback: str | None, replica: str = "", pending: Pending | None = None) -> bool:
        """End `frame` with a result; False if another path ended it first (nothing written). A frame
        a replica refused names it, as an answered one does: `replica` is the stream's peer either way."""
        replica = replica or (pending.refused_by if pending is not None else "")
        hedge_ms, hedged = (None, False) if pending is None else (pending.hedge_ms, pending.hedged)
        predicted_ms = None  # the plan's latency for the offload, ms after capture (its hedge time less the margin)
        if pending is not None and pending.hedge.basis == "predicted":
            predicted_ms = pending.hedge_ms - pending.hedge.margin_ms
        if hedged and where == "cloud":
            fallback = None  # the cloud answered first after all
        m = self.manifest
        # a detector's outputs become boxes in the frame's pixels; a classifier's are its scores.
        # The cloud answers a detector with its decoded detections (cloud_paths.outputs checked
        # them); a local run has the raw maps. Both give the same records, label and score too.
        try:
            detections = None
            if getattr(m, "detection", None):
                detections = (compact_records(outputs[0], m, frame.source_size) if where == "cloud"
                              else detection_records(outputs, m, frame.source_size))
            record = self.recorder.ok(frame, split, where, outputs[0].reshape(-1), timings, fallback, replica,
                                      hedge_ms=hedge_ms, hedged=hedged, predicted_ms=predicted_ms,
                                      detections=detections, raced=pending is not None and pending.raced,
                                      local_error=None if pending is None or where != "cloud" else pending.local_error)
        except Exception as exc:  # noqa: BLE001 - a result no record can be made of (a decoder's bug, say)
            # must still end its frame: raised here, it left the frame claimed and unfinished, and
            # the agent waited for its window slot for ever
            log.exception("frame %d: its %s result could not be made into a record", frame.index, where)
            self.fail(frame, f"{where} result could not be recorded: {exc!r}")
            return False

        def write() -> None:
            record()
            if fallback is not None:  # counted by the write that wins, not by a hedged run that lost
                self.recorder.count_fallback()
                self.fallback_digest.note(frame.index, fallback)

        won = self.ledger.finish(frame.index, write)
        self._release(frame.index, pending if where == "local" else None)
        return won
