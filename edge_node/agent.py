"""The edge agent: frames in, head on the edge, tail on the server, one result per frame.

    source -> preprocess -> policy picks k -> head_k -> [Infer stream] -> server tail -> result log
                                   \\-> k = K, or the link fails: the whole model runs here ("local")
                                   \\-> no answer by the frame's hedge time (edge_node/hedge.py): it
                                        also runs here; the first result is recorded (`hedged`)

Up to `window` frames are in flight (throughput mode: head(n+1) overlaps with
transfer and tail(n)); latency mode keeps one. Every frame read from the source
ends in exactly one record: a result from the cloud, a local result, an
explicit failure, or (live capture) an explicit drop. The ledger
(`edge_node/ledger.py`) enforces it: a frame holds a window slot from `admit` to
`finish`, and only the first `finish` writes its record and frees the slot; a
frame waiting for the cloud is claimed by exactly one of the paths racing for it
(answer thread, stream end; the deadline watchdog only with hedge = "off"). A hedged frame
is not claimed: its local run races the answer, and `finish` keeps the first. Every local run - k = K and every
fallback - runs on one local executor thread (`edge_node/local_executor.py`),
never on a gRPC thread or the watchdog.

Locks, in the order they may be taken: the recorder's lock (summary, records)
-> the results log's lock; the agent's `_lock` (closing, servers reached) is a leaf. The ledger's and the executor's locks are leaves:
nothing else is taken while they are held.

Capture (`capture`): survey reads the source only when a window slot is free,
so every frame is processed and none is dropped. Live runs a reader thread that
keeps reading the source into a buffer of `live_buffer` frames; when it is full
the oldest waiting frame is dropped and recorded as such (status "dropped").

Resume (`resume`): the results log is durable and holds one record per frame id
(= the source's frame index); on start the frames it already records are
skipped, so an agent killed and restarted continues where it stopped. Frames
that were read but not finished have no record and run again. A camera numbers
its frames from 0 each time it opens: there the new frames are numbered after
the largest recorded id instead.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from prometheus_client import CollectorRegistry

from scheduler.link import LinkEstimator, probe_bytes
from scheduler.planner import build_policy
from scheduler.policy import FrameOutcome, PolicyConfig, SplitPolicy
from splitpoint.bundle import load_bundle
from splitpoint.detection import detection_records
from splitpoint.errors import (
    ConfigError,
    RemoteError,
    ResultsWriteError,
    SplitpointError,
    status_code_from_int,
)
from splitpoint.metrics import serve_metrics
from splitpoint.v1 import offload_pb2

from .client import InferStream, OffloadClient
from .config import EdgeConfig
from .heads import EdgeHeads
from .hedge import HedgePlan, MarginLearner, plan_hedge
from .ledger import FrameLedger
from .local_executor import LocalExecutor
from .notices import FallbackDigest, nothing_to_do_message, unreached_message
from .outputs import cut_request_tensors, decode_outputs
from .recorder import DROP_REASON as DROP_REASON  # re-exported: tests and users import it from here
from .recorder import Recorder
from .results import ResultStore
from .run_report import EdgeMetrics, LiveBuffer, RunSummary
from .sources import Frame, FrameReadError, FrameSource

log = logging.getLogger(__name__)

#: reconnect backoff: first wait, cap (seconds); full jitter
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 5.0  # a drone should find a restarted server within seconds
#: a frame answered with one of these moves the agent off that stream's replica
MOVE_ON_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
#: the largest bandwidth probe (probes are sized to the estimate: scheduler.link.probe_bytes)
PROBE_BYTES = 64 * 1024
#: how often a thread waiting for a window slot looks at stop, grace and fatal errors
SLOT_POLL_S = 0.05


class CloudNotReachedError(SplitpointError):
    """require_cloud is set and no cloud server answered during the run."""


def _describe(policy: SplitPolicy) -> str:
    return getattr(policy, "describe", lambda: policy.name)()


@dataclass
class _Pending:
    frame: Frame
    split: int
    x: np.ndarray  # preprocessed input, kept for a local re-run
    head_ms: float
    preprocess_ms: float
    wire_bytes: int
    sent: float  # time.monotonic()
    deadline: float  # the hedge time (time.monotonic()); hedge = off: sent + frame_deadline_ms
    stream: InferStream
    hedge: HedgePlan
    hedge_ms: float  # the hedge time as ms after capture, for the record
    server_ms: float  # the time the policy expects the server to take (queue + tail); 0 without a prediction
    #: set by the watchdog when the hedge fired (the local run is queued); read by the other paths
    hedged: bool = False
    #: set by the cloud answer that won: a hedged local run still queued then does not run
    settled: threading.Event = field(default_factory=threading.Event)


class EdgeAgent:
    def __init__(self, config: EdgeConfig, policy: SplitPolicy | None = None,
                 on_result: Callable[[dict[str, Any]], None] | None = None):
        self.config = config
        self.bundle = load_bundle(config.bundle, side="edge")
        m = self.bundle.manifest
        self.K = m.num_layers
        for key, k in (("split", config.split), ("policy.split", config.policy.split)):
            if k is not None and k not in m.split_ids:
                raise ConfigError(key, k, f"not a split of {m.model_name}; candidates: {m.split_ids}")
        self.heads = EdgeHeads(self.bundle, config.device_spec, config.cpu_fallback, num_threads=config.threads)
        #: values in one answer's output tensor (a batch of one)
        self._num_scores = int(np.prod([d for d in m.output.shape if d and d > 0], dtype=np.int64))
        #: link and load estimates from live traffic and probes; adaptive policies plan with them
        self.link = LinkEstimator()
        if policy is None:
            policy = self._build_policy(config.policy)
        self.policy = policy
        self._reload: Callable[[], PolicyConfig] | None = None
        self._reload_requested = threading.Event()
        self._last_probe = 0.0
        self.registry = CollectorRegistry()
        self.metrics = EdgeMetrics(self.registry)
        self._stop = threading.Event()
        #: the results log, the summary and the metrics; a write error sets _stop
        self.recorder = Recorder(m.labels, self.metrics, on_fatal=self._stop.set, on_result=on_result)
        # One channel for every configured server: gRPC spreads streams over them (round_robin)
        # and skips a replica whose health is not SERVING, so a draining server loses its streams.
        self.client = OffloadClient(config.cloud, config.max_message_bytes, config.connect_timeout_s,
                                    config.security, keepalive_s=config.keepalive_s, agent_name=config.agent_name)
        #: frame ids the log recorded before this run (empty when not resuming)
        self._done_at_start: set[int] = set()
        self._stop_at: float | None = None  # when stop() was first called (the grace period starts)
        self._reached: set[str] = set()  # addresses that answered anything
        self._wanted_cloud = 0  # frames whose split sent (or meant to send) them to the cloud
        self.fallback_digest = FallbackDigest()
        self._skip_ids: set[int] = set()  # filtered here for sources without skip()
        self._filtered = 0
        self._reader: threading.Thread | None = None
        self._reader_error: BaseException | None = None
        self._ledger = FrameLedger(config.window_size)
        self._local = LocalExecutor()
        self._lock = threading.Lock()  # _closed, _reached, _late (see the lock order in the module doc)
        #: the margin a predicted latency gets before the frame is hedged, learnt from cloud answers
        self.margin = MarginLearner(config.hedge_margin)
        #: hedged frames whose cloud answer may still come: it teaches the estimates, not the log
        self._late: dict[int, _Pending] = {}
        self._stream: InferStream | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_START_S
        self._watchdog = threading.Thread(target=self._watch_deadlines, name="deadline-watchdog", daemon=True)
        # Probes run beside the frames, never in front of one: a 64 KiB probe on a 2 Mbps uplink
        # takes a quarter of a second, which a frame waiting behind it would pay.
        self._prober = threading.Thread(target=self._probe_loop, name="link-prober", daemon=True)
        self._metrics_server: Any = None
        self._closed = False
        self._closed_event = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def check_server(self) -> offload_pb2.BundleInfo | None:
        """Describe the server (a replica of the target). A digest mismatch is fatal, an
        unreachable server is not (frames run locally until one answers)."""
        mine = self.bundle.manifest.model_digest
        try:
            info = self.client.describe()
        except RemoteError as err:
            log.warning("cloud %s not reachable (%s); frames run locally until it is", self.client.address, err)
            return None
        if info.model_digest != mine:
            raise ConfigError(
                "cloud", self.client.address,
                f"the server runs bundle {info.model_name} {info.model_digest}, this agent {mine}: "
                "partition once and deploy the same bundle to both",
            )
        with self._lock:
            self._reached.add(self.client.address)
        log.info("cloud %s serves %s; warm tails %s", self.client.address, info.model_name,
                 [s.split for s in info.splits if s.warm])
        return info

    def run(self, source: FrameSource) -> RunSummary:
        """Process every frame of `source`; returns when each has its record."""
        t0 = time.perf_counter()
        try:  # everything after this point is undone by close(), also when a check fails
            self._open_results()
            served = serve_metrics(self.config.metrics_listen, self.registry)
            if served:
                self._metrics_server = served[0]
            self.check_server()
            self._watchdog.start()
            self._maybe_probe()  # before the first frame is captured: a first estimate costs no frame
            self._prober.start()  # idles while the policy is fixed (a reload may make it adaptive)
            self._resume(source)
            if self.config.capture == "live":
                self._run_live(source)
            else:
                self._run_survey(source)
            self._drain()
        finally:
            self.summary.seconds = time.perf_counter() - t0
            self.close()
            self.summary.skipped = int(getattr(source, "skipped", 0) or 0) + self._filtered
            if self._fatal is not None:
                raise self._fatal  # one message (the CLI's), naming the file and the error; exit 1
        self._report_end()  # not after an error: it would hide it
        return self.summary

    def _open_results(self) -> None:
        cfg = self.config
        self._done_at_start = self.recorder.open(cfg.results, cfg.results_format, cfg.results_fsync, cfg.resume)

    @property
    def summary(self) -> RunSummary:
        return self.recorder.summary

    @property
    def results(self) -> ResultStore | None:
        """The results log (opened by run())."""
        return self.recorder.results

    @property
    def _fatal(self) -> ResultsWriteError | None:
        return self.recorder.fatal

    def _report_end(self) -> None:
        """The end-of-run notices: skipped, dropped, abandoned, never reached a server."""
        s, cfg = self.summary, self.config
        self.fallback_digest.flush()
        if s.nothing_to_do:
            log.warning("%s", nothing_to_do_message(cfg.results, s.skipped))
        elif s.skipped:
            log.info("resumed: %d frames already recorded in %s were skipped", s.skipped, cfg.results)
        if s.dropped:
            log.warning("live capture: %d frames dropped (the agent fell behind the source)", s.dropped)
        if s.abandoned:
            log.warning("stopped: %d frames in flight got no answer within grace_s = %s; they have no record "
                        "and run again on resume", s.abandoned, cfg.grace_s)
        if self._reached or s.frames == 0:
            return
        s.unreached = [self.client.address]
        message = unreached_message(s.unreached, s.local)
        if cfg.require_cloud:
            raise CloudNotReachedError(f"require_cloud: {message}; results in {cfg.results}")
        if self._wanted_cloud:  # an all-edge run (k = K) never needed a server: no warning
            log.warning("%s", message)

    def _resume(self, source: FrameSource) -> None:
        """Skip what the log already records (or, for a camera, number after it)."""
        done = self._done_at_start
        if not done:
            return
        if getattr(source, "restarts_numbering", False):
            first = max(done) + 1
            number_from = getattr(source, "number_from", None)
            if number_from is None:
                raise ConfigError("resume", True, f"{source.description} restarts its frame numbers and cannot renumber; "
                                                  "use --no-resume or another results file")
            number_from(first)
            log.info("resuming %s (%d records): %s numbers its frames from %d", self.config.results, len(done),
                     source.description, first)
            return
        skip = getattr(source, "skip", None)
        if skip is not None:
            skip(done)
        else:
            self._skip_ids = done
        log.info("resuming %s: %d frames already have a record and are skipped", self.config.results, len(done))

    def _next_frame(self, it: Iterator[Frame]) -> Frame:
        """next(it), passing over frames already recorded (sources without skip())."""
        while True:
            try:
                frame = next(it)
            except FrameReadError as err:
                if err.index in self._skip_ids:
                    self._filtered += 1
                    continue
                raise
            if frame.index not in self._skip_ids:
                return frame
            self._filtered += 1

    def _run_survey(self, source: FrameSource) -> None:
        it = iter(source)
        count = 0
        while not self._stop.is_set():
            if self.config.max_frames is not None and count >= self.config.max_frames:
                break
            # Take a slot first, then read: a camera frame is captured when it can be worked on.
            if not self._acquire_slot(self._stop.is_set):
                break
            try:
                frame = self._next_frame(it)
            except StopIteration:
                self._ledger.release_unused()
                break
            except FrameReadError as err:
                count += 1
                self._ledger.release_unused()
                self.recorder.failed(err.index, err.origin, None, f"frame could not be read: {err}")
                continue
            count += 1
            self._ledger.admit(frame.index)
            self._process(frame)

    def _run_live(self, source: FrameSource) -> None:
        """A reader thread keeps up with the source; this loop processes the newest frames it can."""
        buffer = LiveBuffer(self.config.live_buffer)
        self._reader = threading.Thread(target=self._read_live, args=(iter(source), buffer), name="live-reader",
                                        daemon=True)
        self._reader.start()
        while True:
            # after stop() the buffered frames are still processed, within the grace period
            if not self._acquire_slot(self._grace_over):
                buffer.close()
                break
            frame = buffer.get(self._grace_over)  # after stop() or the end: what is still buffered, then None
            if frame is None:
                self._ledger.release_unused()
                break
            self._ledger.admit(frame.index)
            self._process(frame)
        self._reader.join(None if self._stop_at is None else max(0.0, self._grace_left()))
        if self._reader_error is not None:
            raise self._reader_error

    def _read_live(self, it: Iterator[Frame], buffer: LiveBuffer) -> None:
        count = 0
        try:
            while not self._stop.is_set():
                if self.config.max_frames is not None and count >= self.config.max_frames:
                    break
                try:
                    frame = self._next_frame(it)
                except StopIteration:
                    break
                except FrameReadError as err:
                    count += 1
                    self.recorder.failed(err.index, err.origin, None, f"frame could not be read: {err}")
                    continue
                count += 1
                evicted = buffer.put(frame)
                if evicted is not None:
                    self.recorder.dropped(evicted)
        except BaseException as exc:  # re-raised by run(); the buffered frames are still processed
            self._reader_error = exc
        finally:
            buffer.close()

    def stop(self) -> None:
        """Ask `run` to stop after the current frame; frames in flight get `grace_s` to finish.

        Safe from a signal handler: it only sets two fields."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        self._stop.set()

    def _grace_left(self) -> float:
        return float("inf") if self._stop_at is None else self._stop_at + self.config.grace_s - time.monotonic()

    def _grace_over(self) -> bool:
        """Stop waiting for frames: the grace period after stop() is over, or the log cannot be written."""
        return self._fatal is not None or self._grace_left() <= 0

    def _acquire_slot(self, give_up: Callable[[], bool]) -> bool:
        """A window slot, or False once `give_up()` or a fatal error says to stop waiting.

        Never an unbounded wait: a slot held by a frame the link never answers must not keep
        the agent from seeing SIGTERM or a fatal error."""
        while not self._ledger.acquire(timeout=SLOT_POLL_S):
            if self._fatal is not None or give_up():
                return False
        if self._fatal is not None:
            self._ledger.release_unused()
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._closed_event.set()
        self._stop.set()
        self._local.close()  # the local run in progress ends; queued ones are abandoned
        if self._prober.is_alive():
            self._prober.join(1.0)  # a probe in flight ends at its deadline or when the channel closes
        reader = self._reader
        if reader is not None and reader.is_alive() and reader is not threading.current_thread():
            # run() was interrupted: let the reader finish the read it is in (within grace after stop())
            reader.join(5.0 if self._stop_at is None else max(0.1, min(5.0, self._grace_left())))
            if reader.is_alive():
                log.warning("the live reader is still reading from the source; closing anyway")
        stream = self._stream
        if stream is not None:
            if self._ledger.open_frames:  # abandoned frames: their answers could not be recorded any more
                stream.cancel()
            else:
                stream.close()
            stream.ended.wait(2.0)
        self.client.close()
        self.recorder.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()

    # ------------------------------------------------------------------ policy

    def _build_policy(self, pcfg: PolicyConfig) -> SplitPolicy:
        m = self.bundle.manifest
        if pcfg.name == "fixed" and pcfg.split is None and self.config.split is None:
            log.info("no split given: every frame runs wholly on the edge (k = %d)", self.K)
        return build_policy(pcfg, m.model_digest, self.K, self.config.split, self.link)

    def on_reload(self, loader: Callable[[], PolicyConfig]) -> None:
        """Where `request_reload` gets the new [policy] table from (the CLI re-reads the config file)."""
        self._reload = loader

    def request_reload(self) -> None:
        """Safe from a signal handler: the policy is swapped between two frames."""
        self._reload_requested.set()

    def _maybe_reload(self) -> None:
        if not self._reload_requested.is_set() or self._reload is None:
            return
        self._reload_requested.clear()
        try:
            new = self._build_policy(self._reload())
        except SplitpointError as err:
            log.error("policy reload refused, keeping %s: %s", _describe(self.policy), err)
            return
        log.info("policy reloaded: %s -> %s", _describe(self.policy), _describe(new))
        self.policy = new

    def _plans_with_link(self) -> bool:
        return hasattr(self.policy, "link")  # a fixed policy does not plan with estimates

    def _probe_loop(self) -> None:
        """Background thread: probe whenever no frame has crossed the link for probe_idle_s."""
        while not self._stop.wait(min(0.25, self.config.policy.probe_idle_s / 4)):
            try:
                self._maybe_probe()
            except Exception as err:  # noqa: BLE001 - e.g. the channel closed under a probe at shutdown
                log.debug("link probe ended: %s", err)

    def _maybe_probe(self) -> None:
        """Measure the link when no frame has crossed it for a while (and at start)."""
        if not self._plans_with_link():  # also after a reload to a fixed policy
            return
        idle = self.config.policy.probe_idle_s
        now = time.monotonic()
        if self._last_probe and (self.link.idle_s() < idle or now - self._last_probe < idle):
            return
        if now < self._retry_at:
            return
        self._last_probe = now
        client = self.client
        size = min(PROBE_BYTES, probe_bytes(self.link.estimate().bandwidth_bps))  # ~50 ms of traffic, bounded
        timeout_s = self.config.connect_timeout_s + max(1.0, size * 8 / 100e3)  # 100 kbps floor
        try:
            rtt_ms, resp = client.probe(0, 0, timeout_s=timeout_s)
            self.link.observe_rtt(max(0.01, rtt_ms - resp.server_time_ms))
            bulk_ms, resp = client.probe(size, 0, timeout_s=timeout_s)
            self.link.observe_probe(size, bulk_ms, resp.server_time_ms)
            log.debug("probe: %s", self.link.estimate())
        except RemoteError as err:
            log.info("link probe failed: %s", err)

    # ------------------------------------------------------------------ one frame

    def _process(self, frame: Frame) -> None:
        t_start = time.monotonic()
        try:
            self._maybe_reload()
            k = self.policy.choose(self.heads.splits)
            prediction = self._prediction(k)
            est = self.link.estimate()
            self.metrics.bandwidth.set(est.bandwidth_bps)
            self.metrics.rtt.set(est.rtt_ms)
            self.metrics.queue.set(est.server_queue_ms)
            if k not in self.heads.splits:
                raise SplitpointError(f"policy {self.policy.name} chose split {k}, not loaded here ({self.heads.splits})")
            x = self.heads.preprocess(frame.raw)
        except SplitpointError as err:
            message = str(err)
            self._ledger.finish(frame.index, lambda: self.recorder.failed(frame.index, frame.origin, frame.label, message))
            return
        preprocess_ms = (time.monotonic() - t_start) * 1000
        self.metrics.split.set(k)
        if k == self.K:
            self._run_local(frame, x, k, preprocess_ms, reason=None)
            return
        self._wanted_cloud += 1
        head_start = time.monotonic()
        hedge = plan_hedge(self.config.hedge, prediction, self.margin, self.config.frame_deadline_ms)
        out = self.heads.run(k, x)
        stream = self._current_stream()
        if stream is None:
            self._run_local(frame, x, k, preprocess_ms, reason="cloud unreachable (waiting to reconnect)", head_ms=out.head_ms)
            return
        req = offload_pb2.InferRequest(
            frame_id=frame.index, model_digest=self.bundle.manifest.model_digest, split=k,
            capture_time_unix_ns=frame.capture_time_ns, budget_ms=self.config.frame_deadline_ms,
        )
        # every tensor of the cut (one, or several for a multi-tensor cut), each with its quantization
        req.tensors.extend(cut_request_tensors(out, self.bundle.manifest.split(k)))
        wire = sum(len(t.data) for t in req.tensors)
        now = time.monotonic()
        # counted from the head's start, as the prediction is; never after the frame's deadline
        hedge_at = min(head_start + hedge.budget_ms / 1000, now + self.config.frame_deadline_ms / 1000)
        since_capture_ms = (time.time_ns() - frame.capture_time_ns) / 1e6
        p = _Pending(frame, k, x, out.head_ms, preprocess_ms, wire, now, hedge_at, stream, hedge,
                     since_capture_ms + (hedge_at - now) * 1000, 0.0 if prediction is None else prediction[2])
        self._ledger.hold(frame.index, p)
        if stream.send(req):
            self.metrics.bytes_sent.inc(wire)
        else:
            self._take_and_fallback(frame.index, "stream closed before the frame was sent")

    def _prediction(self, k: int) -> tuple[float, bool, float] | None:
        """The policy's (latency ms, is_deadline, server ms) for split k, None without one (the fixed policy)."""
        predict = getattr(self.policy, "hedge_prediction", None)
        return None if predict is None else predict(k)

    def _current_stream(self) -> InferStream | None:
        """The open stream, a fresh one when it is old or gone, None while backing off."""
        stream = self._stream
        if stream is not None and stream.accepting and stream.age_s < self.config.stream_lifetime_s:
            return stream
        if stream is not None and stream.accepting:
            stream.close()  # old: let its frames finish, send new ones on a new stream
        if time.monotonic() < self._retry_at:
            return None
        self._stream = self.client.open_stream(self.config.stream_lifetime_s, self._on_response, self._on_stream_end)
        return self._stream

    def _on_response(self, stream: InferStream, resp: offload_pb2.InferResponse) -> None:
        p = self._ledger.claim(resp.frame_id)
        with self._lock:
            self._reached.add(self.client.address)
            late = self._late.pop(resp.frame_id, None)
        if p is None:
            if late is not None:  # hedged, and the local result won: the answer still teaches the estimates
                self._learn_late(late, resp)
            else:
                log.debug("late or unknown response for frame %d ignored", resp.frame_id)
            return
        self._backoff = BACKOFF_START_S  # the link works
        self._answered(p, resp)  # this thread now owns the frame: whatever the answer holds, one record

    def _answered(self, p: _Pending, resp: offload_pb2.InferResponse) -> None:
        rpc_ms = (time.monotonic() - p.sent) * 1000
        if resp.HasField("error") and resp.error.code != 0:
            code = status_code_from_int(resp.error.code)
            self.metrics.errors.labels(code.name).inc()
            if code in MOVE_ON_CODES and p.stream.accepting:
                # the replica is overloaded or draining: the next frame opens a new stream,
                # which round_robin places on another replica
                log.info("replica %s answered %s: moving to another stream", p.stream.replica or "?", code.name)
                p.stream.close()
            log.warning("frame %d failed in the cloud: %s %s", p.frame.index, code.name, resp.error.message)
            self._fallback(p, f"cloud {code.name}: {resp.error.message}")
            return
        outputs, problem = self._outputs(resp)
        if problem is not None:
            log.warning("frame %d: malformed answer from the cloud (%s); running it locally", p.frame.index, problem)
            self._fallback(p, f"malformed response: {problem}")
            return
        t = resp.timing
        timings = {
            "preprocess": p.preprocess_ms,
            "head": p.head_ms,
            "transfer": max(0.0, rpc_ms - t.total_ms),
            "server_queue": t.queue_ms,
            "server_compute": t.compute_ms,
            "rpc": rpc_ms,
        }
        p.settled.set()  # a hedged local run still queued need not run
        self._complete(p.frame, p.split, "cloud", outputs, timings, None, replica=p.stream.replica, pending=p)
        self._learn(p, resp, rpc_ms)

    def _learn(self, p: _Pending, resp: offload_pb2.InferResponse, rpc_ms: float) -> None:
        """A cloud answer, recorded or late: the link estimate and the hedge margin learn from it."""
        t = resp.timing
        self.policy.observe(FrameOutcome(
            p.frame.index, p.split, "cloud", True, p.head_ms, p.wire_bytes, rpc_ms, t.queue_ms, t.compute_ms, t.total_ms,
            resp.load.queued,
        ))
        if p.hedge.predicted_ms is not None and p.hedge.basis != "deadline":
            cap = MarginLearner.late_cap_ms(p.hedge.margin_ms) if p.hedged else None
            self.margin.observe(p.head_ms + rpc_ms, p.hedge.predicted_ms, cap)

    def _learn_late(self, p: _Pending, resp: offload_pb2.InferResponse) -> None:
        """The answer to a frame whose hedged local result was recorded first."""
        if resp.HasField("error") and resp.error.code != 0:
            return  # e.g. DEADLINE_EXCEEDED: the server gave up, nothing measured
        log.debug("frame %d: cloud answer after its hedge; used for the estimates only", p.frame.index)
        self._learn(p, resp, (time.monotonic() - p.sent) * 1000)

    def _outputs(self, resp: offload_pb2.InferResponse) -> tuple[list[np.ndarray], str | None]:
        """Every output of the answer (manifest order and shapes), or what is wrong with it
        (then the frame falls back)."""
        try:
            outputs = decode_outputs(resp, self.bundle.manifest)
        except Exception as exc:  # noqa: BLE001 - whatever the bytes hold, never a dead answer thread
            return [], f"output tensors unreadable: {exc}"
        if len(outputs) == 1 and outputs[0].size != self._num_scores:
            return [], f"output tensor of {outputs[0].size} values, expected {self._num_scores}"
        return outputs, None

    def _on_stream_end(self, stream: InferStream, error: RemoteError | None) -> None:
        lost = self._ledger.claim_where(lambda p: p.stream is stream)
        idle_close = error is not None and error.code == grpc.StatusCode.DEADLINE_EXCEEDED and not lost
        if idle_close:  # the server closed a stream we left idle: open a new one when needed, no backoff
            log.debug("idle stream closed by the server: %s", error)
        elif error is not None and error.code != grpc.StatusCode.CANCELLED:
            log.warning("stream to %s ended: %s", stream.replica or self.client.address, error)
            # the next stream is placed by round_robin on a replica that is SERVING, if any
            self._retry_at = time.monotonic() + random.uniform(0, self._backoff)
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
        reason = f"stream ended before the answer ({error.code.name if error else 'closed by server'})"
        with self._lock:  # no answer can come on this stream any more
            for fid in [fid for fid, p in self._late.items() if p.stream is stream]:
                del self._late[fid]
        for _, p in lost:
            self._fallback(p, reason)

    def _watch_deadlines(self) -> None:
        """Every 20 ms: frames past their hedge time. The watchdog only queues their local runs
        (on the local executor) and never runs one itself: a full-model run here would delay
        every other frame's hedge."""
        while not self._closed_event.wait(0.02):
            now = time.monotonic()
            with self._lock:
                late = list(self._late.values())
            for p in [p for _, p in self._ledger.held() if now > p.deadline] + late:
                # overdue is evidence now: the uplink is at most bytes / (elapsed - the server's expected time)
                self.link.observe_censored(p.wire_bytes, (now - p.sent) * 1000 - p.server_ms)
            if self.config.hedge == "off":
                def overdue(p: _Pending, now: float = now) -> bool:
                    return now > p.deadline

                for _, p in self._ledger.claim_where(overdue):
                    self._fallback(p, p.hedge.reason())
            else:
                for fid, p in self._ledger.held():
                    if now > p.deadline and not p.hedged:
                        self._hedge(fid, p)
            self._forget_late(now)

    def _hedge(self, fid: int, p: _Pending) -> None:
        """`p` passed its hedge time: run it locally too; it stays held, so the cloud answer,
        should it come first, is still recorded (the ledger keeps the first)."""
        with self._lock:
            if p.hedged:
                return
            p.hedged = True
            self._late[fid] = p
        log.debug("frame %d hedged after %.0f ms: %s", fid, p.hedge.budget_ms, p.hedge.reason())
        self._run_local(p.frame, p.x, p.split, p.preprocess_ms, reason=p.hedge.reason(), head_ms=p.head_ms, pending=p)

    def _forget_late(self, now: float) -> None:
        """Hedged frames whose answer is no longer expected: the server drops a frame whose budget
        (frame_deadline_ms) ran out, so twice that is ample."""
        horizon = 2 * self.config.frame_deadline_ms / 1000
        with self._lock:
            for fid in [fid for fid, p in self._late.items() if now - p.sent > horizon]:
                del self._late[fid]

    def _take_and_fallback(self, frame_id: int, reason: str) -> None:
        p = self._ledger.claim(frame_id)
        if p is not None:  # else another path has it already
            self._fallback(p, reason)

    def _fallback(self, p: _Pending, reason: str) -> None:
        """`p`, claimed from the ledger, runs locally instead of waiting for the cloud."""
        if p.hedged:  # its local run is queued already
            return
        self._run_local(p.frame, p.x, p.split, p.preprocess_ms, reason=reason, head_ms=p.head_ms, pending=p)

    def _run_local(self, frame: Frame, x: np.ndarray, split: int, preprocess_ms: float, reason: str | None,
                   head_ms: float = 0.0, pending: _Pending | None = None) -> None:
        """Queue the frame's local run on the local executor; the calling thread goes on at once.

        After close() nothing is queued: the frame stays unfinished (abandoned; resume re-runs it)."""
        self._local.submit(lambda: self._finish_local(frame, x, split, preprocess_ms, reason, head_ms, pending))

    def _finish_local(self, frame: Frame, x: np.ndarray, split: int, preprocess_ms: float, reason: str | None,
                      head_ms: float = 0.0, pending: _Pending | None = None) -> None:
        """Run the whole model here (k = K); `reason` set means a fallback from split `split`;
        `pending`: the frame as it was sent (its hedge, and whether the cloud answered first)."""
        if pending is not None and pending.settled.is_set():
            return  # hedged, and the cloud answer was recorded while this waited in the queue
        try:
            arrays, local_ms = self.heads.run_local_all(x)
            outputs = [a.reshape(o.shape) for a, o in zip(arrays, self.bundle.manifest.outputs, strict=True)]
        except Exception as exc:  # the last resort must not lose the frame either
            log.exception("local run of frame %d failed", frame.index)
            message = f"local run failed: {exc!r}"
            self._ledger.finish(frame.index, lambda: self.recorder.failed(frame.index, frame.origin, frame.label, message))
            return
        timings = {"preprocess": preprocess_ms, "head": head_ms, "local": local_ms}
        self._complete(frame, self.K if reason is None else split, "local", outputs, timings, reason, pending=pending)
        self.policy.observe(FrameOutcome(frame.index, split, "local", reason is None, head_ms, 0))

    def _complete(self, frame: Frame, split: int, where: str, outputs: list[np.ndarray], timings: dict[str, float],
                  fallback: str | None, replica: str = "", pending: _Pending | None = None) -> None:
        # the first path to end the frame writes its record and frees its slot; a later one does nothing
        hedge_ms, hedged = (None, False) if pending is None else (pending.hedge_ms, pending.hedged)
        if hedged and where == "cloud":
            fallback = None  # the cloud answered first after all
        m = self.bundle.manifest
        # a detector's outputs become boxes in the frame's pixels; a classifier's are its scores
        detections = detection_records(outputs, m, frame.source_size) if m.detection else None
        record = self.recorder.ok(frame, split, where, outputs[0].reshape(-1), timings, fallback, replica,
                                  hedge_ms=hedge_ms, hedged=hedged, detections=detections)

        def write() -> None:
            record()
            if fallback is not None:  # counted by the write that wins, not by a hedged run that lost
                self.recorder.count_fallback()
                self.fallback_digest.note(frame.index, fallback)

        self._ledger.finish(frame.index, write)

    def _drain(self) -> None:
        """Wait for every frame in flight: answered, fallen back, or timed out; after stop()
        for at most grace_s, after a fatal error not at all."""
        if not self._ledger.wait_idle(self._grace_over, SLOT_POLL_S) and self._fatal is None:
            self.summary.abandoned = self._ledger.open_frames
