"""One admitted Infer stream: a reader thread takes frames, the gRPC thread answers them.

The answering loop sleeps until something happens - an answer is ready, the reader ended, the
client went away, the server began draining, or the stream's idle time ran out - instead of
polling: a fleet's streams spend most of their life idle (between missions, on a parked drone),
and 300 of them polling every 0.1 s took 11% of a server core doing nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import grpc

from splitpoint.errors import SplitpointError
from splitpoint.v1 import offload_pb2
from splitpoint.wire_metadata import DRAINING_DETAILS

from .admission import InflightBytes

log = logging.getLogger(__name__)

#: put on a stream's queue to make its answering loop look at the stream's state again
WAKE = object()
#: the longest the answering loop sleeps with nothing to wait for: a safety net only, every
#: event that ends a stream also wakes it
SAFETY_WAKE_S = 5.0
#: how often a reader blocked on backpressure looks whether the stream ended
BACKPRESSURE_POLL_S = 0.2

Accept = Callable[[offload_pb2.InferRequest, str], Future]
Respond = Callable[[offload_pb2.InferRequest, "Future | None", "SplitpointError | None"], offload_pb2.InferResponse]


class StreamWakers:
    """The open streams' queues, so that draining wakes every one of them at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a leaf lock: nothing is taken while it is held
        self._queues: set[queue.Queue] = set()

    def add(self, q: queue.Queue) -> None:
        with self._lock:
            self._queues.add(q)

    def discard(self, q: queue.Queue) -> None:
        with self._lock:
            self._queues.discard(q)

    def wake_all(self) -> None:
        with self._lock:
            queues = list(self._queues)
        for q in queues:
            q.put(WAKE)


def serve_stream(request_iterator: Iterator[Any], context: grpc.ServicerContext, agent: str, *,
                 accept: Accept, respond: Respond, inflight: InflightBytes, max_backlog: int,
                 idle_timeout_s: float, draining: threading.Event, wakers: StreamWakers,
                 unparseable: type[Any]) -> Iterator[offload_pb2.InferResponse]:
    """Answer one stream's frames in the order they finish.

    `accept` validates and queues a frame (raises SplitpointError when refused), `respond`
    builds its response and never raises. A message of type `unparseable` ends the stream with
    its error once the accepted frames are answered.
    """
    done: queue.Queue = queue.Queue()
    state: dict[str, Any] = {"accepted": 0, "ended": False, "last_request": time.monotonic(), "fault": None}
    lock = threading.Lock()  # guards state; a leaf lock
    room = threading.Semaphore(max_backlog)  # one slot per frame without a response
    closing = threading.Event()  # the response side is done: the reader stops waiting for room
    peer = context.peer()

    def read() -> None:
        try:
            for req in request_iterator:
                if isinstance(req, unparseable):
                    # No frame_id to answer: a stream-level fault, like a message over the size
                    # limit. The stream ends with the status once accepted frames are answered.
                    with lock:
                        state["fault"] = req.error()
                    return
                # Backpressure: past max_backlog unanswered frames, stop reading until
                # responses go out, so a client that never reads cannot fill memory.
                while not room.acquire(timeout=BACKPRESSURE_POLL_S):
                    if closing.is_set():
                        return
                # ... and, over all streams, past max_inflight_mb of frames not yet computed
                size = req.ByteSize()
                while not inflight.acquire(size, timeout=BACKPRESSURE_POLL_S):
                    if closing.is_set():
                        room.release()
                        return
                with lock:
                    state["accepted"] += 1
                    state["last_request"] = time.monotonic()
                try:
                    fut = accept(req, agent)
                except SplitpointError as err:
                    inflight.release(size)
                    done.put(respond(req, None, err))
                    continue

                def finished(f: Future, r: offload_pb2.InferRequest = req, n: int = size) -> None:
                    inflight.release(n)  # the frame's tensors are no longer held
                    done.put(respond(r, f, None))

                fut.add_done_callback(finished)
        except grpc.RpcError:
            pass  # the client went away; frames already accepted still finish
        except Exception:  # never let a reader die silently: end the stream
            log.exception("stream reader from %s failed", peer)
        finally:
            with lock:
                state["ended"] = True
            done.put(None)

    sent = 0
    last_response = time.monotonic()
    # Every way a stream ends wakes the loop: the reader puts None, draining and the client
    # going away put WAKE (add_callback runs when the RPC terminates, cancelled or not).
    wakers.add(done)
    context.add_callback(lambda: done.put(WAKE))
    try:
        reader = threading.Thread(target=read, name="infer-reader", daemon=True)
        reader.start()
        while True:
            with lock:
                answered_all = sent >= state["accepted"]
                if (state["ended"] or draining.is_set()) and answered_all:
                    fault = state["fault"]
                    if fault is not None:
                        context.set_code(fault.status_code)
                        context.set_details(str(fault))
                    elif not state["ended"]:
                        # Shutdown ends the stream with a status (the contract), not OK:
                        # frames the client sent that got no response were not accepted.
                        context.set_code(grpc.StatusCode.UNAVAILABLE)
                        context.set_details(f"{DRAINING_DETAILS}; frames without a response were not accepted")
                    break
                idle_since = max(state["last_request"], last_response)
            wait_s = SAFETY_WAKE_S
            if idle_timeout_s > 0 and answered_all:
                idle_left = idle_since + idle_timeout_s - time.monotonic()
                if idle_left <= 0:
                    # A stream that never sends (or stopped sending) must not hold a max_streams
                    # slot and two threads forever. Measured from the last request or response,
                    # whichever is later: an agent waiting for a slow answer is not idle.
                    context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
                    context.set_details(f"no frame for {idle_timeout_s:g} s: stream closed")
                    break
                wait_s = min(wait_s, idle_left)
            try:
                item = done.get(timeout=wait_s)
            except queue.Empty:
                item = WAKE
            if item is WAKE:
                if not context.is_active():
                    break
                continue
            if item is not None:
                sent += 1
                room.release()
                yield item
                last_response = time.monotonic()
    finally:
        closing.set()
        wakers.discard(done)
