"""The server's queue metric counts every frame's wait, also a frame that waited past its
budget and was refused: by Little's law rate(splitpoint_cloud_queue_seconds_sum) is the mean
queue length the queued-frames autoscaler reads (docs/scaling.md), and counting answered frames
only read it low exactly when frames expire in the queue (660 in one overloaded run)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from cloud_server.executor import QueueExpired, TailExecutor
from cloud_server.servicer import CloudMetrics, OffloadServicer
from splitpoint.errors import status_code_to_int
from splitpoint.v1 import offload_pb2

TIMEOUT_S = 10.0


class HeldRunner:
    """A tail that holds its worker until released: what a busy server's queue waits behind."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.started.set()
        assert self.release.wait(TIMEOUT_S)
        return np.zeros((len(batch), 2), np.float32)


def test_a_frame_expired_in_the_queue_counts_its_wait() -> None:
    runner = HeldRunner()
    ex = TailExecutor(SimpleNamespace(get=lambda k: runner), workers=1)
    try:
        manifest = SimpleNamespace(splits=[], outputs=[SimpleNamespace(name="scores")])
        metrics = CloudMetrics(CollectorRegistry())
        servicer = OffloadServicer(manifest, ex, 1 << 20, 1 << 20, metrics)
        first = ex.submit(1, np.zeros((1, 4), np.float32), time.monotonic())
        assert runner.started.wait(TIMEOUT_S)  # the worker is busy with the first frame
        queued_at = time.monotonic()
        second = ex.submit(1, np.zeros((1, 4), np.float32), queued_at, budget_ms=1)  # expires while it waits
        time.sleep(0.05)  # the wait the metric must count (50 ms), not a synchronisation
        runner.release.set()
        first.result(timeout=TIMEOUT_S)
        with pytest.raises(QueueExpired) as info:
            second.result(timeout=TIMEOUT_S)
        assert info.value.waited_ms >= 50.0
        resp = servicer._response(offload_pb2.InferRequest(frame_id=2, split=1), second, None)
        assert resp.error.code == status_code_to_int(grpc.StatusCode.DEADLINE_EXCEEDED)
        assert "in the queue, over its budget" in resp.error.message
        waited = metrics.queue_seconds.collect()[0]
        count = next(s.value for s in waited.samples if s.name.endswith("_count"))
        total = next(s.value for s in waited.samples if s.name.endswith("_sum"))
        assert count == 1 and total == pytest.approx(info.value.waited_ms / 1000)
    finally:
        runner.release.set()
        ex.close(timeout=TIMEOUT_S)


class ShortRunner:
    """A tail that answers fewer frames than it was given (a batch dimension it fixed itself)."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((1, 2), np.float32)


def test_a_batch_the_tail_answers_short_fails_every_frame_and_keeps_the_worker() -> None:
    """An answer per frame was indexed outside the guarded run: IndexError killed the worker
    thread, and the frames of its batch were never answered."""
    ex = TailExecutor(SimpleNamespace(get=lambda k: ShortRunner()), workers=1)
    try:
        with ex._cond:  # both frames queued before the worker takes them: one batch of two
            futures = [ex.submit(1, np.zeros((1, 4), np.float32), time.monotonic()) for _ in range(2)]
        for fut in futures:
            with pytest.raises(Exception) as info:
                fut.result(timeout=TIMEOUT_S)
            assert getattr(info.value, "status_code", None) == grpc.StatusCode.INTERNAL
        one = ex.submit(1, np.zeros((1, 4), np.float32), time.monotonic())
        assert one.result(timeout=TIMEOUT_S).outputs[0].shape == (2,)  # the worker still serves
    finally:
        ex.close(TIMEOUT_S)
