"""What a run of the edge agent reports: its summary (returned by `EdgeAgent.run`) and its
Prometheus metrics, plus the live-capture read-ahead buffer. Kept apart from the agent's
control flow so the agent module holds only the frame pipeline."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from splitpoint.metrics import LATENCY_BUCKETS

from .bounded import LatencyMedian
from .sources import Frame


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.frames = Counter("splitpoint_edge_frames", "frames finished", ["where", "status"], registry=registry)
        self.errors = Counter("splitpoint_edge_errors", "frames that failed in the cloud, by status code", ["code"], registry=registry)
        self.stage_seconds = Histogram(
            "splitpoint_edge_stage_seconds", "time per stage", ["stage"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.split = Gauge("splitpoint_edge_split", "split used for the latest frame", registry=registry)
        self.bandwidth = Gauge("splitpoint_edge_link_bandwidth_bps", "uplink bandwidth estimate", registry=registry)
        self.rtt = Gauge("splitpoint_edge_link_rtt_ms", "round-trip time estimate", registry=registry)
        self.queue = Gauge("splitpoint_edge_server_queue_ms", "server queue wait estimate", registry=registry)
        self.bytes_sent = Counter("splitpoint_edge_sent_bytes", "cut tensor bytes sent", registry=registry)
        self.fallbacks = Counter("splitpoint_edge_fallbacks", "frames run locally instead of in the cloud, by "
                                 "reason (its text without details: edge_node.results_records.reason_group)",
                                 ["reason"], registry=registry)
        self.results_disk_free = Gauge("splitpoint_edge_results_disk_free_bytes",
                                       "free space where the results log is written", registry=registry)
        self.dropped = Counter("splitpoint_edge_dropped_frames", "frames dropped unprocessed by live capture (behind the camera)",
                               registry=registry)


class LiveBuffer:
    """The frames a live reader has read ahead; `put` on a full buffer evicts (returns) the oldest."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._frames: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, frame: Frame) -> Frame | None:
        with self._cond:
            evicted = self._frames.popleft() if len(self._frames) >= self.capacity else None
            self._frames.append(frame)
            self._cond.notify()
            return evicted

    def get(self, give_up: Callable[[], bool] = lambda: False, poll_s: float = 0.05) -> Frame | None:
        """The oldest waiting frame; None once closed and empty, or when `give_up()` says so
        (looked at every `poll_s`: a camera that hangs must not keep the agent from stopping)."""
        with self._cond:
            while not self._frames and not self._closed:
                if not self._cond.wait(poll_s) and give_up():
                    return None
            return self._frames.popleft() if self._frames else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class RunSummary:
    frames: int = 0  # records written by this run: cloud + local + failed + dropped
    cloud: int = 0
    local: int = 0
    failed: int = 0
    dropped: int = 0  # live capture: frames dropped unprocessed (each has a "dropped" record)
    skipped: int = 0  # resume: source frames passed over because the log already records them
    fallbacks: int = 0
    #: ok frames run here instead of in the cloud, by reason group (results_records.reason_group)
    local_instead: dict[str, int] = field(default_factory=dict)
    correct: int = 0
    labelled: int = 0
    by_split: dict[int, int] = field(default_factory=dict)
    #: every ok frame's end-to-end latency, for the median (bounded: a run may last weeks)
    end_to_end: LatencyMedian = field(default_factory=LatencyMedian)
    seconds: float = 0.0
    #: the configured servers, when none of them answered anything during the run (else empty)
    unreached: list[str] = field(default_factory=list)
    #: in flight when the grace period after SIGTERM/SIGINT ran out: no record, they run again on resume
    abandoned: int = 0
    #: a detector bundle's results: frames decoded for detections (ok records with a `detections`
    #: list), how many of them had at least one, the detections in all and per label name
    detector_frames: int = 0
    frames_with_detections: int = 0
    detections: int = 0
    detections_by_label: dict[str, int] = field(default_factory=dict)

    def count_detections(self, detections: list[dict]) -> None:
        """One ok record's detections (the caller holds the recorder's lock)."""
        self.detector_frames += 1
        self.frames_with_detections += bool(detections)
        self.detections += len(detections)
        for d in detections:
            name = str(d.get("label_name", d.get("class")))
            self.detections_by_label[name] = self.detections_by_label.get(name, 0) + 1

    def detection_summary(self) -> str | None:
        """'37 detections in 20 of 24 frames (3: 10, 7: 9, ...)', most frequent label first;
        None when no frame was decoded for detections (not a detector bundle)."""
        if not self.detector_frames:
            return None
        ranked = sorted(self.detections_by_label.items(), key=lambda kv: (-kv[1], kv[0]))
        per_label = f" ({', '.join(f'{name}: {n}' for name, n in ranked)})" if ranked else ""
        return (f"{self.detections} detections in {self.frames_with_detections} of {self.detector_frames} "
                f"frames{per_label}")

    @property
    def nothing_to_do(self) -> bool:
        """A resumed run that found every frame already recorded."""
        return self.frames == 0 and self.skipped > 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def median_ms(self) -> float | None:
        return self.end_to_end.median()
