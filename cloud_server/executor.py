"""Running tails: a bounded queue, a few worker threads, dynamic batching.

Frames of the same split that are waiting together run as one batch (no frame
waits for a batch to fill: a worker takes what is there). Frames wait in a
FairQueue (cloud_server/fair_queue.py): one queue per agent, served round-robin,
bounded in all (max_queue) and per agent (max_queue_per_agent); past either,
new frames fail with RESOURCE_EXHAUSTED rather than pile up.
Queue wait and compute time are measured per frame and returned to the agent.
A `postprocess` (set by the servicer for a detector bundle: its detections decoder) turns a
batch's outputs into each frame's answer on the worker, never on a gRPC thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import grpc
import numpy as np

from splitpoint.errors import RequestError, SplitpointError
from splitpoint.runtime.tails import TailPool

from .fair_queue import FairQueue

log = logging.getLogger(__name__)


class QueueExpired(RequestError):
    """A frame that waited in the queue past its budget: answered DEADLINE_EXCEEDED, not run.
    Its wait still counts in the queue metric: by Little's law the metric's rate is the mean
    queue length, which counting answered frames only read low exactly when frames expire."""

    def __init__(self, waited_ms: float):
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, f"frame waited {waited_ms:.0f} ms in the queue, over its budget")
        self.waited_ms = waited_ms


@dataclass
class TailResult:
    #: one float32 array per model output, this frame's (no batch axis); with a postprocess,
    #: what it made of them (a detector: one (N, 6) array of detections)
    outputs: list[np.ndarray]
    queue_ms: float
    compute_ms: float
    batch_size: int

    @property
    def output(self) -> np.ndarray:
        """The first output (a classifier's scores)."""
        return self.outputs[0]


@dataclass
class _Item:
    split: int
    x: list[np.ndarray]  # per cut tensor: (1, *shape) float32
    received: float  # time.monotonic()
    expires: float | None
    future: Future


#: a batch's outputs (each (n, ...), model order) -> each of its n frames' answer arrays
Postprocess = Callable[[list[np.ndarray]], list[list[np.ndarray]]]


def per_frame(outs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """The default postprocess: each frame's slice of every output."""
    return [[o[i] for o in outs] for i in range(len(outs[0]))]


class TailExecutor:
    def __init__(self, tails: TailPool, workers: int = 2, max_batch: int = 8, max_queue: int = 256,
                 max_queue_per_agent: int | None = None, postprocess: Postprocess | None = None):
        self.tails = tails
        #: runs on the worker after each batch (in compute_ms: the agent waits for it too)
        self.postprocess: Postprocess = postprocess or per_frame
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_queue_per_agent = max_queue_per_agent or max_queue
        self.workers = workers
        self._queue: FairQueue[_Item] = FairQueue(max_queue, self.max_queue_per_agent)
        self._cond = threading.Condition()
        self._running = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"tail-worker-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, split: int, x: np.ndarray | list[np.ndarray], received: float, budget_ms: int = 0,
               agent: str = "") -> Future:
        """Queue one frame of `agent` (x: its cut tensor, or one per tensor of a multi-tensor cut);
        RequestError (RESOURCE_EXHAUSTED, UNAVAILABLE) when refused."""
        fut: Future = Future()
        x = list(x) if isinstance(x, (list, tuple)) else [x]
        expires = received + budget_ms / 1000.0 if budget_ms > 0 else None
        with self._cond:
            if self._closed:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
            self._queue.push(agent, _Item(split, x, received, expires, fut))
            self._cond.notify()
        return fut

    def load(self) -> tuple[int, int, int]:
        """(queued, running, workers)."""
        with self._cond:
            return len(self._queue), self._running, self.workers

    def _take_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait(timeout=1.0)  # woken by submit and close; the timeout is a safety net
            batch = self._queue.pop_batch(self.max_batch)
            self._running += len(batch)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception:  # noqa: BLE001 - a bug past _run's own guard: the frames are still answered
                log.exception("answering a batch of %d failed", len(batch))
                err = RequestError(grpc.StatusCode.INTERNAL, "the server failed to answer this frame")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
            finally:
                with self._cond:
                    self._running -= len(batch)
                    self._cond.notify_all()

    def _run(self, batch: list[_Item]) -> None:
        start = time.monotonic()
        live = []
        for item in batch:
            if item.expires is not None and start > item.expires:
                item.future.set_exception(QueueExpired((start - item.received) * 1000))
            else:
                live.append(item)
        if not live:
            return
        try:
            runner = self.tails.get(live[0].split)
            t0 = time.monotonic()
            batches = [np.concatenate([i.x[j] for i in live]) for j in range(len(live[0].x))]
            # run_all: every input and output of a multi-tensor / multi-output tail; a runner with
            # only run() (one input, one output: stand-ins in the bench and tests) still serves
            run_all = getattr(runner, "run_all", None)
            outs = run_all(batches) if run_all is not None else [runner.run(batches[0])]
            answers = self.postprocess([np.asarray(o) for o in outs])
            if len(answers) != len(live):  # answered below, or a frame left unanswered (and a worker killed)
                raise ValueError(f"the tail answered {len(answers)} of a batch of {len(live)} frames")
            compute_ms = (time.monotonic() - t0) * 1000
        except SplitpointError as exc:
            for item in live:
                item.future.set_exception(exc)
            return
        except Exception as exc:  # a tail that fails must fail its frames, not the worker
            log.exception("tail %d failed on a batch of %d", live[0].split, len(live))
            err = RequestError(grpc.StatusCode.INTERNAL, f"tail {live[0].split} failed: {type(exc).__name__}")
            for item in live:
                item.future.set_exception(err)
            return
        for i, item in enumerate(live):
            item.future.set_result(TailResult(answers[i], (t0 - item.received) * 1000, compute_ms, len(live)))

    def close(self, timeout: float | None = None) -> None:
        """Run what is queued, then stop the workers. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._cond:  # anything left after the timeout fails explicitly
            for item in self._queue.drain():
                item.future.set_exception(
                    RequestError(grpc.StatusCode.UNAVAILABLE, "server shut down before this frame ran")
                )
