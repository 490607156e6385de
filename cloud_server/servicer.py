"""The Offload service: the gRPC boundary, where library errors become status codes."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import splitpoint
from splitpoint.bundle import Manifest
from splitpoint.codec import dtype_enum, encode
from splitpoint.errors import RequestError, SplitpointError, status_code_to_int
from splitpoint.metrics import LATENCY_BUCKETS
from splitpoint.v1 import offload_pb2, offload_pb2_grpc

from .executor import TailExecutor, TailResult
from .validation import validate_request

log = logging.getLogger(__name__)

MAX_PROBE_BYTES = 8 * 1024 * 1024


class CloudMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.frames = Counter("splitpoint_cloud_frames", "frames answered", ["split", "status"], registry=registry)
        self.bytes_received = Counter("splitpoint_cloud_received_bytes", "cut tensor bytes received", registry=registry)
        self.queue_seconds = Histogram(
            "splitpoint_cloud_queue_seconds", "wait before compute", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.compute_seconds = Histogram(
            "splitpoint_cloud_compute_seconds", "tail compute per batch", ["split"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.streams = Gauge("splitpoint_cloud_streams", "open Infer streams", registry=registry)


class OffloadServicer(offload_pb2_grpc.OffloadServicer):
    def __init__(self, manifest: Manifest, executor: TailExecutor, max_tensor_bytes: int, max_message_bytes: int,
                 metrics: CloudMetrics, stream_idle_timeout_s: float = 0.0):
        self.manifest = manifest
        self.executor = executor
        self.max_tensor_bytes = max_tensor_bytes
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        self.stream_idle_timeout_s = stream_idle_timeout_s
        self._draining = threading.Event()
        self._streams = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers

    def begin_drain(self) -> None:
        """Stop taking frames; frames already accepted still get their results."""
        self._draining.set()

    def _load(self) -> offload_pb2.ServerLoad:
        queued, running, workers = self.executor.load()
        return offload_pb2.ServerLoad(queued=queued, running=running, workers=workers, streams=self._streams)

    def _accept(self, req: offload_pb2.InferRequest) -> Future:
        """Validate and queue one frame; RequestError when refused."""
        received = time.monotonic()
        if self._draining.is_set():
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "server is shutting down; frame not accepted")
        spec, x = validate_request(req, self.manifest, self.max_tensor_bytes)
        self.metrics.bytes_received.inc(sum(len(t.data) for t in req.tensors))
        fut = self.executor.submit(spec.split, x, received, req.budget_ms)
        fut.received = received  # type: ignore[attr-defined]
        return fut

    def _response(self, req: offload_pb2.InferRequest, fut: Future | None, err: SplitpointError | None) -> offload_pb2.InferResponse:
        resp = offload_pb2.InferResponse(frame_id=req.frame_id, split=req.split)
        if err is None and fut is not None:
            exc = fut.exception()
            if exc is not None:
                err = exc if isinstance(exc, SplitpointError) else RequestError(grpc.StatusCode.INTERNAL, repr(exc))
        if err is not None:
            resp.error.code = status_code_to_int(err.status_code)
            resp.error.message = str(err)
            self.metrics.frames.labels(str(req.split), err.status_code.name).inc()
        else:
            assert fut is not None
            result: TailResult = fut.result()
            resp.outputs.append(encode(np.asarray(result.output, np.float32)[None], name="output"))
            resp.timing.queue_ms = result.queue_ms
            resp.timing.compute_ms = result.compute_ms
            resp.timing.batch_size = result.batch_size
            resp.timing.total_ms = (time.monotonic() - fut.received) * 1000  # type: ignore[attr-defined]
            self.metrics.frames.labels(str(req.split), "OK").inc()
            self.metrics.queue_seconds.observe(result.queue_ms / 1000)
            self.metrics.compute_seconds.labels(str(req.split)).observe(result.compute_ms / 1000)
        resp.load.CopyFrom(self._load())
        return resp

    # ------------------------------------------------------------------ RPCs

    def Infer(self, request_iterator: Iterator[offload_pb2.InferRequest], context: grpc.ServicerContext) -> Iterator[offload_pb2.InferResponse]:
        done: queue.Queue = queue.Queue()
        state = {"accepted": 0, "ended": False, "last": time.monotonic()}
        lock = threading.Lock()
        with self._lock:
            self._streams += 1
        self.metrics.streams.inc()
        peer = context.peer()

        def read() -> None:
            try:
                for req in request_iterator:
                    with lock:
                        state["accepted"] += 1
                        state["last"] = time.monotonic()
                    try:
                        fut = self._accept(req)
                    except SplitpointError as err:
                        done.put(self._response(req, None, err))
                        continue
                    fut.add_done_callback(lambda f, r=req: done.put(self._response(r, f, None)))
            except grpc.RpcError:
                pass  # the client went away; frames already accepted still finish
            except Exception:  # never let a reader die silently: end the stream
                log.exception("stream reader from %s failed", peer)
            finally:
                with lock:
                    state["ended"] = True
                done.put(None)

        reader = threading.Thread(target=read, name="infer-reader", daemon=True)
        reader.start()
        sent = 0
        try:
            while True:
                with lock:
                    if (state["ended"] or self._draining.is_set()) and sent >= state["accepted"]:
                        if not state["ended"]:
                            # Shutdown ends the stream with a status (the contract), not OK:
                            # frames the client sent that got no response were not accepted.
                            context.set_code(grpc.StatusCode.UNAVAILABLE)
                            context.set_details("server is shutting down; frames without a response were not accepted")
                        break
                    idle = time.monotonic() - state["last"]
                    if self.stream_idle_timeout_s and idle > self.stream_idle_timeout_s and sent >= state["accepted"]:
                        # A stream that never sends must not hold a thread (and a max_streams slot) forever.
                        context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
                        context.set_details(f"no frame for {self.stream_idle_timeout_s:g} s: stream closed")
                        break
                try:
                    item = done.get(timeout=0.1)
                except queue.Empty:
                    if not context.is_active():
                        break
                    continue
                if item is not None:
                    sent += 1
                    yield item
        finally:
            with self._lock:
                self._streams -= 1
            self.metrics.streams.dec()

    def InferFrame(self, request: offload_pb2.InferRequest, context: grpc.ServicerContext) -> offload_pb2.InferResponse:
        try:
            fut = self._accept(request)
            remaining = context.time_remaining()
            fut.result(timeout=remaining)  # raises the frame's RequestError
        except SplitpointError as err:
            self.metrics.frames.labels(str(request.split), err.status_code.name).inc()
            context.abort(err.status_code, str(err))
        except TimeoutError:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "frame did not finish before the call's deadline")
        return self._response(request, fut, None)

    def Describe(self, request: offload_pb2.DescribeRequest, context: grpc.ServicerContext) -> offload_pb2.BundleInfo:
        m = self.manifest
        warm = set(self.executor.tails.warm())
        info = offload_pb2.BundleInfo(
            model_name=m.model_name, model_digest=m.model_digest, num_layers=m.num_layers,
            server_version=splitpoint.__version__, max_message_bytes=self.max_message_bytes,
        )
        for s in m.splits:
            si = info.splits.add(split=s.split, wire_bytes=s.wire_bytes, warm=s.split in warm)
            for t in s.cut:
                ts = si.cut.add(name=t.name, dtype=dtype_enum(t.dtype), shape=list(t.shape))
                if t.quantization:
                    ts.quantization.scale.extend(t.quantization.scale)
                    ts.quantization.zero_point.extend(t.quantization.zero_point)
                    ts.quantization.axis = t.quantization.axis
        return info

    def Probe(self, request: offload_pb2.ProbeRequest, context: grpc.ServicerContext) -> offload_pb2.ProbeResponse:
        t0 = time.perf_counter()
        if request.response_bytes > MAX_PROBE_BYTES:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"response_bytes = {request.response_bytes}: probes answer at most {MAX_PROBE_BYTES} bytes",
            )
        return offload_pb2.ProbeResponse(
            payload=b"\0" * request.response_bytes,
            received_bytes=len(request.payload),
            server_time_ms=(time.perf_counter() - t0) * 1000,
            server_unix_ns=time.time_ns(),
        )
