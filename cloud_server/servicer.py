"""The Offload service: the gRPC boundary, where library errors become status codes."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import splitpoint
from splitpoint.bundle import Manifest
from splitpoint.codec import dtype_enum, encode
from splitpoint.detection import COMPACT_NAME, decode_batch, to_compact
from splitpoint.errors import RequestError, SplitpointError, status_code_to_int
from splitpoint.metrics import LATENCY_BUCKETS
from splitpoint.v1 import offload_pb2, offload_pb2_grpc
from splitpoint.wire_metadata import DRAINING_DETAILS, REPLICA_METADATA_KEY

from .admission import InflightBytes, StreamAdmission, StreamRefused, agent_identity
from .executor import Postprocess, QueueExpired, TailExecutor, TailResult
from .infer_stream import StreamWakers, serve_stream
from .validation import validate_tensors

log = logging.getLogger(__name__)

MAX_PROBE_BYTES = 8 * 1024 * 1024
#: metrics label of frames naming a split the bundle does not have: one label per forged
#: value would grow the registry (and /metrics) without bound
OTHER_SPLIT_LABEL = "other"
SERVICE_NAME = offload_pb2.DESCRIPTOR.services_by_name["Offload"].full_name


class UnparseableMessage:
    """What the servicer gets instead of a request whose bytes are not the expected message.

    gRPC's own deserialization failure answers INTERNAL ("Exception deserializing request!")
    and logs a traceback per message: a peer could flood the log, and INTERNAL says "server
    bug". With `add_to_server` the bytes reach the servicer as this, and the call fails with
    INVALID_ARGUMENT instead.
    """

    def __init__(self, type_name: str, size: int, reason: str):
        self.type_name, self.size, self.reason = type_name, size, reason

    def error(self) -> RequestError:
        reason = self.reason if len(self.reason) <= 200 else self.reason[:197] + "..."
        return RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"a message of {self.size} bytes is not a valid {self.type_name} ({reason})")


def _tolerant_parser(cls: type[Message]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:  # DecodeError, or anything else protobuf raises on hostile bytes
            return UnparseableMessage(cls.DESCRIPTOR.full_name, len(data), f"{type(exc).__name__}: {exc}")
    return parse


def add_to_server(servicer: OffloadServicer, server: grpc.Server) -> None:
    """Register the Offload service like `offload_pb2_grpc.add_OffloadServicer_to_server`,
    except that unparseable requests reach the servicer (INVALID_ARGUMENT, no traceback)."""
    pb = offload_pb2
    handlers = {
        "Infer": grpc.stream_stream_rpc_method_handler(
            servicer.Infer, request_deserializer=_tolerant_parser(pb.InferRequest),
            response_serializer=pb.InferResponse.SerializeToString),
        "InferFrame": grpc.unary_unary_rpc_method_handler(
            servicer.InferFrame, request_deserializer=_tolerant_parser(pb.InferRequest),
            response_serializer=pb.InferResponse.SerializeToString),
        "Describe": grpc.unary_unary_rpc_method_handler(
            servicer.Describe, request_deserializer=_tolerant_parser(pb.DescribeRequest),
            response_serializer=pb.BundleInfo.SerializeToString),
        "Probe": grpc.unary_unary_rpc_method_handler(
            servicer.Probe, request_deserializer=_tolerant_parser(pb.ProbeRequest),
            response_serializer=pb.ProbeResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def detections_postprocess(cfg: dict[str, Any]) -> Postprocess:
    """A detector's batch of raw maps -> each frame's one compact detections array (N, 6): the
    same decoder the agent runs on a local result (splitpoint/detection.py), so the answer
    holds a few rows instead of the maps."""
    def post(outs: list[np.ndarray]) -> list[list[np.ndarray]]:
        return [[to_compact(dets)] for dets in decode_batch(outs, cfg)]
    return post


class CloudMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.frames = Counter("splitpoint_cloud_frames", "frames answered", ["split", "status"], registry=registry)
        self.bytes_received = Counter("splitpoint_cloud_received_bytes", "cut tensor bytes received", registry=registry)
        self.queue_seconds = Histogram(
            "splitpoint_cloud_queue_seconds", "wait before compute (or before a frame over its budget was refused)",
            buckets=LATENCY_BUCKETS, registry=registry
        )
        self.compute_seconds = Histogram(
            "splitpoint_cloud_compute_seconds", "tail compute per batch", ["split"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.streams = Gauge("splitpoint_cloud_streams", "open Infer streams", registry=registry)
        # the agents refused a stream run their frames locally: without this, a server whose
        # agents share a certificate (one agent to it) showed nothing on /metrics or in its log
        self.refused_streams = Counter("splitpoint_cloud_refused_streams", "Infer streams refused, by the limit they hit",
                                       ["limit"], registry=registry)
        self.certificate_expiry = Gauge(
            "splitpoint_cloud_certificate_expiry_timestamp_seconds",
            "when the TLS certificate served now ends (file: tls_cert, tls_client_ca), Unix time", ["file"],
            registry=registry)


class OffloadServicer(offload_pb2_grpc.OffloadServicer):
    def __init__(self, manifest: Manifest, executor: TailExecutor, max_tensor_bytes: int, max_message_bytes: int,
                 metrics: CloudMetrics, stream_idle_timeout_s: float = 0.0, max_stream_backlog: int | None = None,
                 admission: StreamAdmission | None = None, inflight: InflightBytes | None = None,
                 on_stream_end: Callable[[], None] | None = None):
        self.manifest = manifest
        self.executor = executor
        self.max_tensor_bytes = max_tensor_bytes
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        #: an Infer stream with nothing in flight and no frame for this long ends (0 = never)
        self.stream_idle_timeout_s = stream_idle_timeout_s
        #: frames of one stream without a response before the server stops reading that stream
        #: (HTTP/2 flow control then holds the client back): a client that sends and never
        #: reads cannot pile responses up in the server. Default: max_queue_per_agent.
        self.max_stream_backlog = max(1, max_stream_backlog or executor.max_queue_per_agent)
        #: Infer streams in all and per agent (not gRPC's maximum_concurrent_rpcs: health and
        #: control calls must never wait behind streams)
        self.admission = admission or StreamAdmission(max_streams=1 << 30, max_per_agent=1 << 30)
        #: request bytes accepted and not yet computed, over all streams
        self.inflight = inflight or InflightBytes(1 << 62)
        #: told when an Infer stream ends (the server trims the heap after bursts)
        self.on_stream_end = on_stream_end or (lambda: None)
        #: this server's name in the stream's initial metadata (set by CloudServer once bound)
        self.replica = ""
        self._split_labels = {s.split: str(s.split) for s in manifest.splits}
        #: the names of an answer's tensors: a detector's is its decoded detections, which the
        #: executor's workers make from the raw maps; a classifier's are the model's outputs
        detection = getattr(manifest, "detection", None)  # stand-in manifests (the bench's) have none
        if detection:
            executor.postprocess = detections_postprocess(detection)
            self._answer_names = [COMPACT_NAME]
        else:
            self._answer_names = [spec.name for spec in manifest.outputs]
        self._draining = threading.Event()
        self._wakers = StreamWakers()  # draining wakes every open stream's answering loop

    # ------------------------------------------------------------------ helpers

    def begin_drain(self) -> None:
        """Stop taking frames; frames already accepted still get their results."""
        self._draining.set()
        self._wakers.wake_all()

    def _split_label(self, k: int) -> str:
        return self._split_labels.get(k, OTHER_SPLIT_LABEL)

    def _load(self) -> offload_pb2.ServerLoad:
        queued, running, workers = self.executor.load()
        return offload_pb2.ServerLoad(queued=queued, running=running, workers=workers,
                                      streams=self.admission.open_streams)

    def _accept(self, req: offload_pb2.InferRequest, agent: str = "") -> Future:
        """Validate and queue one frame; RequestError when refused."""
        received = time.monotonic()
        if self._draining.is_set():
            raise RequestError(grpc.StatusCode.UNAVAILABLE, f"{DRAINING_DETAILS}; frame not accepted")
        try:
            spec, x = validate_tensors(req, self.manifest, self.max_tensor_bytes)
        except SplitpointError:
            raise
        except Exception as exc:  # a validation bug must fail its frame, not the stream or the call
            log.exception("validating frame %d failed", req.frame_id)
            raise RequestError(grpc.StatusCode.INTERNAL, f"validation failed: {type(exc).__name__}") from None
        self.metrics.bytes_received.inc(sum(len(t.data) for t in req.tensors))
        fut = self.executor.submit(spec.split, x, received, req.budget_ms, agent=agent)
        fut.received = received  # type: ignore[attr-defined]
        return fut

    def _response(self, req: offload_pb2.InferRequest, fut: Future | None, err: SplitpointError | None) -> offload_pb2.InferResponse:
        resp = offload_pb2.InferResponse(frame_id=req.frame_id, split=req.split)
        if err is None and fut is not None:
            exc = fut.exception()
            if exc is not None:
                err = exc if isinstance(exc, SplitpointError) else RequestError(grpc.StatusCode.INTERNAL, repr(exc))
        if err is not None:
            if isinstance(err, QueueExpired):  # it waited too: the queue metric counts every wait
                self.metrics.queue_seconds.observe(err.waited_ms / 1000)
            resp.error.code = status_code_to_int(err.status_code)
            resp.error.message = str(err)
            self.metrics.frames.labels(self._split_label(req.split), err.status_code.name).inc()
        else:
            assert fut is not None
            result: TailResult = fut.result()
            for name, out in zip(self._answer_names, result.outputs, strict=False):  # every output, by name
                resp.outputs.append(encode(np.asarray(out, np.float32)[None], name=name))
            resp.timing.queue_ms = result.queue_ms
            resp.timing.compute_ms = result.compute_ms
            resp.timing.batch_size = result.batch_size
            resp.timing.total_ms = (time.monotonic() - fut.received) * 1000  # type: ignore[attr-defined]
            self.metrics.frames.labels(self._split_label(req.split), "OK").inc()
            self.metrics.queue_seconds.observe(result.queue_ms / 1000)
            self.metrics.compute_seconds.labels(self._split_label(req.split)).observe(result.compute_ms / 1000)
        resp.load.CopyFrom(self._load())
        return resp

    def _safe_response(self, req: offload_pb2.InferRequest, fut: Future | None,
                       err: SplitpointError | None) -> offload_pb2.InferResponse:
        """_response that cannot raise: a frame without a response would hold its stream open."""
        try:
            return self._response(req, fut, err)
        except Exception as exc:
            log.exception("answering frame %d failed", req.frame_id)
            fallback = RequestError(grpc.StatusCode.INTERNAL, f"answering the frame failed: {type(exc).__name__}")
            resp = offload_pb2.InferResponse(frame_id=req.frame_id, split=req.split)
            resp.error.code = status_code_to_int(fallback.status_code)
            resp.error.message = str(fallback)
            return resp

    # ------------------------------------------------------------------ RPCs

    def Infer(self, request_iterator: Iterator[offload_pb2.InferRequest], context: grpc.ServicerContext) -> Iterator[offload_pb2.InferResponse]:
        agent = agent_identity(context)
        try:
            self.admission.admit(agent)
        except StreamRefused as err:
            self.metrics.refused_streams.labels(err.limit).inc()
            context.abort(err.status_code, str(err))
        # The stream holds a slot from here, and gives it back exactly once whatever raises:
        # send_initial_metadata raises for a call its client has already cancelled, and a slot
        # kept then was never freed - enough cancels refused every agent until a restart.
        try:
            self.metrics.streams.inc()
            try:
                context.send_initial_metadata(((REPLICA_METADATA_KEY, self.replica),))  # who took the stream
                yield from serve_stream(
                    request_iterator, context, agent, accept=self._accept, respond=self._safe_response,
                    inflight=self.inflight, max_backlog=self.max_stream_backlog,
                    idle_timeout_s=self.stream_idle_timeout_s, draining=self._draining, wakers=self._wakers,
                    unparseable=UnparseableMessage)
            finally:
                self.metrics.streams.dec()
        finally:
            self.admission.release(agent)
            self.on_stream_end()

    def InferFrame(self, request: offload_pb2.InferRequest, context: grpc.ServicerContext) -> offload_pb2.InferResponse:
        if isinstance(request, UnparseableMessage):
            err = request.error()
            self.metrics.frames.labels(OTHER_SPLIT_LABEL, err.status_code.name).inc()
            context.abort(err.status_code, str(err))
        try:
            fut = self._accept(request, agent_identity(context))
            remaining = context.time_remaining()
            fut.result(timeout=remaining)  # raises the frame's RequestError
        except SplitpointError as err:
            self.metrics.frames.labels(self._split_label(request.split), err.status_code.name).inc()
            context.abort(err.status_code, str(err))
        except (TimeoutError, concurrent.futures.TimeoutError):  # distinct types on Python 3.10
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "frame did not finish before the call's deadline")
        return self._response(request, fut, None)

    def Describe(self, request: offload_pb2.DescribeRequest, context: grpc.ServicerContext) -> offload_pb2.BundleInfo:
        if isinstance(request, UnparseableMessage):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request.error()))
        context.send_initial_metadata(((REPLICA_METADATA_KEY, self.replica),))  # who answered (agents name it)
        m = self.manifest
        warm = set(self.executor.tails.warm())
        # the splits it serves: a server started with --splits 3 listed every split of the bundle,
        # and an agent at split 5 had no word at start of the NOT_FOUND each of its frames got there
        served = set(self.executor.tails.servable)
        info = offload_pb2.BundleInfo(
            model_name=m.model_name, model_digest=m.model_digest, num_layers=m.num_layers,
            server_version=splitpoint.__version__, max_message_bytes=self.max_message_bytes,
        )
        for s in (s for s in m.splits if s.split in served):
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
        if isinstance(request, UnparseableMessage):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request.error()))
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
