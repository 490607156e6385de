"""The agent's records: one per frame in the results log, with the summary and metrics.

`Recorder` builds a frame's record (ok, failed, dropped), writes it, and updates
the run summary and the Prometheus metrics with it, under one lock so that the
log and the summary always agree. It is what a frame's `FrameLedger.finish`
runs. A results log that cannot be written is fatal: the first
ResultsWriteError is kept in `fatal`, `on_fatal` is called (the agent stops),
and nothing more is written; `EdgeAgent.run` raises it. After `close()` nothing
is written either (frames still ending then are abandoned, resume re-runs them).

With `rotate_s` (results_rotate_h), `rotate_if_due` - called by the capture loop before each
frame - starts a new log at the same path once the current one has been open that long: the
old one is closed (complete, its last record durable) and renamed NAME.<UTC time>Z.EXT
(results_file.rotate_results), so a run of weeks leaves day-sized logs, each safe to copy off
and delete once renamed, and a restart resumes only the newest (or, when a restart came before
the new log held a record, a camera numbers after the newest renamed one). Records wait on the lock while
it happens: each is in exactly one log. A new log that cannot be made is fatal, as a write
that fails is; the renamed one is intact.

Lock order: `Recorder._lock` -> the results log's lock; callbacks (`on_result`,
`on_fatal`) run outside the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from splitpoint.errors import ConfigError, ResultsWriteError
from splitpoint.verify import DECISION_THRESHOLD

from .bounded import RecordedOrigins
from .disk_space import DiskWatch
from .results import ResultStore, describe_os_error, open_results
from .results_file import rotate_results, rotated_logs
from .results_records import last_frame_id, reason_group
from .run_report import EdgeMetrics, RunSummary
from .sources import Frame

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name

#: the reason of a live-capture drop record
DROP_REASON = "live mode: the agent fell behind the camera"


def top_class(scores: np.ndarray, labels: int) -> tuple[int, float]:
    """A classifier's label and its score: the argmax of its scores. One score and two labels
    (partition checked it is a probability): a binary classifier's sigmoid, labels[1] from 0.5
    up, scored as a 2-way softmax would be - its argmax was always 0, so every record said labels[0]."""
    flat = np.asarray(scores).ravel()
    if flat.size == 1 and labels == 2:
        p = float(flat[0])
        return (1, p) if p >= DECISION_THRESHOLD else (0, 1.0 - p)  # NaN: 0, its score not finite (null)
    label = int(np.argmax(flat))
    return label, float(flat[label])


class Recorder:
    def __init__(self, labels: list[str], metrics: EdgeMetrics, on_fatal: Callable[[], None],
                 on_result: Callable[[dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, model: str | None = None):
        self.labels = labels
        #: written in every record after its origin ("digits-cnn@sha256:f63acfb5b365", `model_tag`): a
        #: resumed log of another model would have this one skip frames it never ran
        self.model = model
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.on_result = on_result
        self.summary = RunSummary()
        #: opened by `open`, once the source is open: a source that fails to open leaves no empty log
        self.results: ResultStore | None = None
        #: the free space where the log is written, watched from `open`
        self._disk: DiskWatch | None = None
        #: the first results write that failed
        self.fatal: ResultsWriteError | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._clock = clock  # when the log was opened, for rotate_if_due
        #: how `open` opened the log (path, format, fsync), for a new one at the same path
        self._opened_as: tuple[str, str, bool] | None = None
        self._rotate_s = 0.0  # results_rotate_h in seconds; 0: never
        self._log_opened_at = 0.0
        #: where the logs rotated in this run went, oldest first
        self.rotated: list[Path] = []

    def open(self, path: str, fmt: str, fsync: bool, resume: bool,
             stop: Callable[[], bool] = lambda: False, rotate_s: float = 0.0) -> RecordedOrigins:
        """Open (or, without resume, first move aside) the log; the frame ids it already records,
        each with the origin its record names. `stop`: once true, reading the log is given up
        (results_records.ReadingStopped).
        The log is this agent's alone until `close()`: a second agent on it is refused (ConfigError)."""
        results = open_results(path, fmt, fsync, fresh=not resume, stop=stop)
        if results.moved_aside is not None:
            log.warning("resume is off: the old results log %s was renamed to %s; starting over", path,
                        results.moved_aside)
        self.results = results
        self._disk = DiskWatch(path, self.metrics.results_disk_free)
        self._opened_as, self._rotate_s, self._log_opened_at = (path, fmt, fsync), rotate_s, self._clock()
        return results.done_origins() if resume else RecordedOrigins()

    def rotate_if_due(self) -> Path | None:
        """A new log once the current one has been open rotate_s (see the module doc); where the
        old one went, or None. A clock compare when none is due: the capture loop calls it per frame."""
        if not self._rotate_s or self._clock() - self._log_opened_at < self._rotate_s:
            return None
        return self.rotate()

    def rotate(self) -> Path | None:
        """Close the log, rename it (rotate_results) and open a new one at its path; where the old
        one went. None when there was nothing to rotate: closed, failed, or no record yet (its
        time starts again)."""
        with self._lock:
            self._log_opened_at = self._clock()
            if self._closed or self.fatal is not None or self.results is None or self._opened_as is None:
                return None
            old = self.results
            if not len(old):
                return None
            path, fmt, fsync = self._opened_as
            old.close()
            self.results = None  # until the new one is open: a write meanwhile would be refused as closed
            try:
                moved = rotate_results(path)
            except OSError as exc:
                self._fail(ResultsWriteError(path, f"the log could not be renamed to start a new one "
                                                   f"(results_rotate_h): {describe_os_error(exc)}; its records "
                                                   "stay intact"))
                return None
            try:
                self.results = open_results(path, fmt, fsync)
            except (ResultsWriteError, ConfigError) as err:
                why = err.reason if isinstance(err, ResultsWriteError) else str(err)
                self._fail(ResultsWriteError(path, f"no new log could be started after the old one was renamed "
                                                   f"{moved.name} (results_rotate_h): {why}; its records stay intact"))
                return None
            self.rotated.append(moved)
        log.info("results log rotated (results_rotate_h): %s closed with %d records, complete and safe to copy "
                 "off; new records go to a new %s", moved, len(old), path)
        return moved

    def last_rotated_id(self, stop: Callable[[], bool] = lambda: False) -> tuple[Path, int] | None:
        """The newest log rotated from this one (beside it, as rotate_results named it) that
        records a frame, with its largest frame id: what a camera numbers after when this log has
        no record yet (a restart between a rotation and the next record). One that cannot be
        read is named in a warning and passed over; ReadingStopped once `stop()` says so."""
        if self._opened_as is None:
            return None
        for older in reversed(rotated_logs(self._opened_as[0])):
            try:
                last = last_frame_id(older, stop)
            except (OSError, ConfigError) as exc:
                why = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
                log.warning("the rotated results log %s could not be read for its last frame id (%s): "
                            "frame numbers may repeat ones it records", older, why)
                continue
            if last is not None:
                return older, last
        return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self.results is not None:
                self.results.close()

    def count_fallback(self) -> None:
        with self._lock:
            self.summary.fallbacks += 1

    # ------------------------------------------------------------------ records

    def ok(self, frame: Frame, split: int, where: str, scores: np.ndarray, timings: dict[str, float],
           fallback: str | None, replica: str = "", hedge_ms: float | None = None,
           hedged: bool = False, predicted_ms: float | None = None,
           detections: list[dict[str, Any]] | None = None, raced: bool = False,
           local_error: str | None = None) -> Callable[[], None]:
        """The record of a result, as the write for the frame's `FrameLedger.finish`. `hedge_ms`:
        an offloaded frame's hedge time (ms after capture); `hedged`: it passed with no answer,
        so the frame also ran locally, and `where` says which result came first; `predicted_ms`:
        the latency (ms after capture) its plan expected of the offload, when the hedge was
        set from it - what the choice was made on, beside what it got; `raced`: it was run here and
        sent as k = 0 at once (the plan's choice), and `where` says which result came first;
        `local_error`: a hedged or raced frame's local run failed, and the cloud answer came after."""
        e2e_ms = frame.age_ns() / 1e6
        if detections is not None:  # a detector: the record's label and score are its top detection's
            label = int(detections[0]["class"]) if detections else -1
            score = float(detections[0]["score"]) if detections else 0.0
        else:
            label, score = top_class(scores, len(self.labels))
        record: dict[str, Any] = {
            "frame_id": frame.index,
            "origin": frame.origin,
            **self._model(),
            "status": "ok",
            "split": split,
            "where": where,
            "label": label,
            # a detector's frame without a detection has label -1 and no name (it was "-1")
            "label_name": self.labels[label] if 0 <= label < len(self.labels) else None if label < 0 else str(label),
            "score": round(score, 6) if np.isfinite(score) else None,
            "true_label": frame.label,
            "capture_time_unix_ns": frame.capture_time_ns,
            "timings_ms": {k: round(v, 3) for k, v in timings.items()} | {"end_to_end": round(e2e_ms, 3)},
        }
        if detections is not None:
            record["detections"] = detections
        if not np.isfinite(score):  # JSON has no Infinity/NaN: null, and why
            record["score_not_finite"] = str(score)
        if fallback:
            record["fallback_reason"] = fallback
        if replica:  # which server answered (several behind one target); a local record: which refused it
            record["replica"] = replica
        if hedge_ms is not None:  # offloaded: when it would run (or ran) locally too, and whether it did
            record["hedge_ms"] = round(hedge_ms, 3)
            record["hedged"] = hedged
        if raced:
            record["raced"] = True
        if local_error is not None:
            record["local_error"] = local_error
        if predicted_ms is not None:
            record["predicted_ms"] = round(predicted_ms, 3)
        return lambda: self._write_ok(record, frame, split, where, label, timings, e2e_ms)

    def _write_ok(self, record: dict[str, Any], frame: Frame, split: int, where: str, label: int,
                  timings: dict[str, float], e2e_ms: float) -> None:
        # why it ran here instead of in the cloud, without the details: the summary's and the metric's key
        group = reason_group(record["fallback_reason"]) if "fallback_reason" in record else None
        with self._lock:  # the log line and the summary change together
            if not self._write(record):  # fatal, closed, or a second record (a bug the log reports)
                return
            s = self.summary
            s.frames += 1
            s.cloud += where == "cloud"
            s.local += where == "local"
            s.by_split[split] = s.by_split.get(split, 0) + 1
            s.end_to_end.add(e2e_ms)
            if group is not None:
                s.local_instead[group] = s.local_instead.get(group, 0) + 1
            if "detections" in record:  # a detector: counted from the record itself, so the two agree
                s.count_detections(record["detections"])
            if frame.label is not None:
                s.labelled += 1
                s.correct += int(label == frame.label)
        self.metrics.frames.labels(where, "ok").inc()
        if group is not None:
            self.metrics.fallbacks.labels(group).inc()
        for stage, ms in timings.items():
            self.metrics.stage_seconds.labels(stage).observe(ms / 1000)
        self.metrics.stage_seconds.labels("end_to_end").observe(e2e_ms / 1000)
        self._tell(record)

    def _model(self) -> dict[str, str]:
        return {} if self.model is None else {"model": self.model}

    def failed(self, frame_id: int, origin: str, true_label: int | None, error: str) -> None:
        record = {"frame_id": frame_id, "origin": origin, **self._model(), "status": "failed", "error": error,
                  "true_label": true_label}
        with self._lock:
            if not self._write(record):
                return
            self.summary.frames += 1
            self.summary.failed += 1
        self.metrics.frames.labels("none", "failed").inc()
        log.error("frame %d failed: %s", frame_id, error)
        self._tell(record)

    def dropped(self, frame: Frame) -> None:
        """Live capture fell behind: `frame` leaves the buffer unprocessed, with a record saying so."""
        record = {"frame_id": frame.index, "origin": frame.origin, **self._model(), "status": "dropped",
                  "reason": DROP_REASON, "true_label": frame.label}
        with self._lock:
            if not self._write(record):
                return
            self.summary.frames += 1
            self.summary.dropped += 1
        self.metrics.dropped.inc()
        self.metrics.frames.labels("none", "dropped").inc()
        log.debug("frame %d dropped: %s", frame.index, DROP_REASON)
        self._tell(record)

    def _write(self, record: dict[str, Any]) -> bool:
        """Write one record (the caller holds self._lock); False when not written."""
        if self.fatal is not None or self._closed or self.results is None:
            return False
        try:
            written = self.results.write(record)
        except ResultsWriteError as err:
            self._fail(err)
            return False
        if self._disk is not None:
            self._disk.after_write()  # a statvfs every 30 s at most
        return written

    def _fail(self, err: ResultsWriteError) -> None:
        """The log cannot be written (the caller holds self._lock): fatal, the agent stops."""
        self.fatal = err
        self.on_fatal()  # only sets an event: safe under the lock

    def _tell(self, record: dict[str, Any]) -> None:
        if self.on_result is not None:
            self.on_result(record)
