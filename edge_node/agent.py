"""The edge agent: frames in, head on the edge, tail on the server, one result per frame.

    source -> capture -> process: preprocess -> choose_split -> head_k -> cloud_paths -> session -> server tail
                                                      \\-> k = K: edge_work runs the whole model here ("local")
    (the frame's paths after it is sent: edge_node/cloud_paths.py; a diagram in docs/architecture.md)

The agent composes its collaborators and takes them as constructor arguments, so
that unit tests drive it with fakes (tests/unit/test_agent_loop.py); `from_config`
builds the real ones from an EdgeConfig (edge_node/assembly.py). The collaborators:

    capture.py      the capture loops (survey, live) and resume; each frame -> `process`
    session.py      the cloud: channel, streams, failover, backoff, probes (`Session` protocol)
    cloud_paths.py  the link's work: send, answer, error, malformed, stream end, hedge, fallback
    edge_work.py    the edge's work: heads, local runs on the local executor, the record ending a frame
    device_health.py  runs that fail in a row: a few stop the agent (the device is opened again on restart)
    watchdog.py     frames past their hedge time
    ledger.py       every frame admitted ends exactly once (record written, window slot freed)
    recorder.py     the results log, summary and metrics

Up to `window` frames are in flight (throughput mode: head(n+1) overlaps with
transfer and tail(n)). Latency mode keeps one with a fixed policy; with an adaptive
policy it also allows `window`, and the policy plans each frame's path by when the edge
and the uplink will be free (`scheduler/paths.py`: the agent's `timeline`), so the next
frame never waits behind one on a stalled link. Every frame read from the source
ends in exactly one record: a result from the cloud, a local result, an explicit
failure, or (live capture) an explicit drop; the ledger enforces it.

Where a frame's path is chosen: `choose_split`, by `policy.plan` over the timeline of
the two resources. The plan books the head (or the local run) and the transfer; the
head's end (`process`), local runs (edge_work.py) and sends, answers, stream ends and
given-up answers (cloud_paths.py) release them.

Locks, in the order they may be taken: the recorder's lock (summary, records) -> the
results log's lock; the session's (stream, backoff, servers reached) -> a stream's and the
renewing channel's (edge_node/session.py); the policy's -> the timeline's (plan books while
it holds it). Every other lock is a leaf, nothing else is taken while it is held: the
agent's `_lock` (closing), the ledger's, the local executor's, CloudPaths' (late frames,
`hedged`), a held frame's (`Pending._ends`), the session's failed streams' and the prober's
failed probes' (notices.RepeatedFailures), the margin learner's, the heads' accelerator lock,
the device health's.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from scheduler.link import LinkEstimator
from scheduler.objectives import PolicyConfig
from scheduler.paths import Timeline
from scheduler.policy_base import (
    FrameOutcome,
    SplitPolicy,
    may_offload,
    offload_splits,
    plans_paths,
)
from splitpoint.errors import SplitpointError
from splitpoint.metrics import serve_metrics

from .bounded import RecordedOrigins
from .capture import SLOT_POLL_S, Capture
from .cloud_paths import CloudPaths
from .config import EdgeConfig
from .device_health import DeviceHealth
from .edge_work import EdgeWork, Executor
from .hedge import MarginLearner, plan_hedge
from .ledger import FrameLedger
from .notices import CloudNotReachedError as CloudNotReachedError  # re-exported
from .notices import FallbackDigest, report_end
from .recorder import DROP_REASON as DROP_REASON  # re-exported: tests and users import it from here
from .recorder import Recorder
from .results import ResultStore
from .results_records import ReadingStopped
from .run_report import EdgeMetrics
from .run_report import RunSummary as RunSummary  # re-exported: tests import it from here
from .session import MOVE_ON_CODES as MOVE_ON_CODES  # re-exported
from .session_api import Session
from .sources import Frame, FrameSource
from .watchdog import DeadlineWatchdog

log = logging.getLogger(__name__)

#: the quantile of recent (actual - predicted) cloud latencies an offload's gain must exceed
#: (experiment exp-overrun: chosen from a what-if over the recorded runs, docs/agent-experiments.md)
OVERRUN_QUANTILE = 0.75


def _describe(policy: SplitPolicy) -> str:
    return getattr(policy, "describe", lambda: policy.name)()


class EdgeAgent:
    def __init__(self, config: EdgeConfig, *, bundle: Any, heads: Any, session: Session, link: LinkEstimator,
                 policy: SplitPolicy, recorder: Recorder, local: Executor, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic, watchdog_period_s: float | None = 0.02,
                 build_policy: Callable[[PolicyConfig], SplitPolicy] | None = None):
        """`bundle`: anything with the edge bundle's `manifest`; `heads`: `splits`, `preprocess`,
        `run(k, x)`, `run_local_all(x)` (edge_node/heads.py); `recorder`: its `on_fatal` is
        rebound here (a results write error stops the agent); `clock`: monotonic seconds for
        send times and hedge times; `watchdog_period_s` None: no watchdog thread, the caller
        ticks `watchdog.tick()`; `build_policy`: a reload's [policy] table to a policy on this
        bundle, raising SplitpointError to refuse it (edge_node/assembly.policy_for)."""
        self.config = config
        self.bundle = bundle
        m = bundle.manifest
        self.K = m.num_layers
        self.heads = heads
        self.session = session
        #: link and load estimates from live traffic and probes; adaptive policies plan with them
        self.link = link
        self.policy = policy
        self.recorder = recorder
        self.metrics: EdgeMetrics = recorder.metrics
        self.registry = registry
        self.clock = clock
        self._stop = threading.Event()
        recorder.on_fatal = self._stop.set
        self._reload: Callable[[], PolicyConfig] | None = None
        self._build_policy = build_policy
        self._reload_requested = threading.Event()
        self._stop_at: float | None = None  # when stop() was first called (the grace period starts)
        self._done_at_start = RecordedOrigins()  # frame id -> origin the log recorded before this run
        self._wanted_cloud = 0  # frames whose split sent (or meant to send) them to the cloud
        self._planned = 0  # frames planned (any path): the session probes faster while it moves
        self.fallback_digest = FallbackDigest()
        #: when the edge and the uplink will be free: what the policy plans each frame's path with
        self.timeline = Timeline()
        self.ledger = FrameLedger(config.window if plans_paths(policy) else config.window_size)
        #: latency mode on an unpaced source: one frame in flight, and no next frame to plan for
        self._one_in_flight = False
        self.local = local
        #: the margin a predicted latency gets before the frame is hedged, learnt from cloud answers
        self.margin = MarginLearner(config.hedge_margin, clock=clock)
        self._attach_overrun(self.policy)
        self.edge = EdgeWork(m, heads, self.ledger, recorder, local, self._observe, self.fallback_digest,
                             self.timeline, DeviceHealth(str(getattr(heads, "device", "the edge")), self.stop),
                             clock)
        self.cloud = CloudPaths(config, m, session, self.ledger, self.edge, self.metrics, self.margin,
                                self._observe, self.timeline, clock)
        self.watchdog = DeadlineWatchdog(self.cloud, self.ledger, link, config.hedge, clock, self.timeline,
                                         watchdog_period_s, lambda: self.edge.local_ms_guess, self._hedge_delay_ms)
        self.capture = Capture(config, self.ledger, recorder, self.process, self._stop, self._grace_over,
                               self._grace_left)
        self._metrics_server: Any = None
        self._lock = threading.Lock()  # _closed (a leaf)
        self._closed = False

    @classmethod
    def from_config(cls, config: EdgeConfig, policy: SplitPolicy | None = None,
                    on_result: Callable[[dict[str, Any]], None] | None = None) -> EdgeAgent:
        """The agent with its real collaborators (edge_node/assembly.py)."""
        from .assembly import build_agent  # it imports this module

        return build_agent(config, policy, on_result)

    # ------------------------------------------------------------------ lifecycle

    def check_server(self) -> Any:
        """Describe the server; a digest mismatch is fatal (ConfigError), an unreachable server is not."""
        return self.session.check_server()

    def run(self, source: FrameSource, on_ready: Callable[[], None] | None = None) -> RunSummary:
        """Process every frame of `source`; returns when each has its record. `on_ready`: called
        once the agent has started (the session's first probe done), right before the first
        frame is asked for - when a paced source's clock starts. A driver that replays a link
        trace restarts it then (`splitpoint edge --events`): told before the first probe, every
        adaptive run met the trace shifted by that probe's time (tens of ms to over a second)
        against the fixed runs, which do not probe."""
        t0 = time.perf_counter()
        self.capture.check(source)
        if self.config.mode == "latency" and self.ledger.window > 1 and not getattr(source, "paced", False):
            # An unpaced source (files; synthetic frames without fps) is read when a slot frees and
            # a frame's latency counts from its read: a frame read early only waits for the edge
            # or the link, so no mix of paths beats one frame in flight. Paced frames (a camera,
            # fps) come whether or not the agent is ready: those may overlap on the two resources.
            self.ledger.narrow(1)
            self._one_in_flight = True
        try:  # everything after this point is undone by close(), also when a check fails
            self.start()
            if on_ready is not None and self.results is not None:  # not when stopped before the log opened
                on_ready()
            self.capture.resume(source, self._done_at_start)
            if self.config.capture == "live":
                self.capture.live(source)
            else:
                self.capture.survey(source)
            self.drain()
        finally:
            self.summary.seconds = time.perf_counter() - t0
            self.close()
            self.summary.skipped = int(getattr(source, "skipped", 0) or 0) + self.capture.filtered
            if self._fatal is not None:
                raise self._fatal  # one message (the CLI's), naming the file and the error; exit 1
        self.fallback_digest.flush()
        # not after an error: it would hide it
        report_end(self.summary, self.config, self.session, wanted_cloud=self._wanted_cloud > 0)
        return self.summary

    def start(self) -> None:
        """Open the metrics endpoint, check the server, start the watchdog and the session (its
        first probe), then open the results log; `process` may then be given admitted frames.
        The log is opened last: with resume off it moves an earlier log aside, and it cuts a torn
        last line, which a refusal before it (a metrics port in use, the server's other bundle)
        or a stop while the server was asked (a Describe or probe given up at SIGTERM) would have
        done for a run that never ran. Told to stop before then, it leaves the log untouched
        (`results` stays None: the command says "stopped before the first frame")."""
        cfg = self.config
        if self.registry is not None:
            served = serve_metrics(cfg.metrics_listen, self.registry)
            if served:
                self._metrics_server = served[0]
        if cfg.contacts_server(self._may_offload()):
            offloaded = offload_splits(self.policy, self.heads.splits, self.K)
            self.cloud.served.described(self.session.check_server(offloaded), offloaded)
        else:  # no frame will ask the server anything: no "not reachable" warning about it either
            log.debug("the policy runs every frame on the edge: the server is not described")
        self.watchdog.start()
        self.session.start(self.cloud.callbacks(self._plans_with_link, lambda: self._planned))
        if self._stop.is_set():  # no frame is read (capture sees stop); close() ends the session
            return
        try:
            self._done_at_start = self.recorder.open(cfg.results, cfg.results_format, cfg.results_fsync, cfg.resume,
                                                     stop=self._stop.is_set, rotate_s=cfg.results_rotate_h * 3600)
        except ReadingStopped:  # told to stop while a long log was read: no frame is read (capture sees stop)
            log.info("stopped while reading the results log %s; it is left as it was", cfg.results)

    @property
    def summary(self) -> RunSummary:
        return self.recorder.summary

    @property
    def results(self) -> ResultStore | None:
        """The results log (opened by run())."""
        return self.recorder.results

    @property
    def _fatal(self) -> SplitpointError | None:
        """What stopped the run: the results log could not be written, or the edge device failed."""
        return self.recorder.fatal or self.edge.health.fatal

    def stop(self) -> None:
        """Ask `run` to stop after the current frame; frames in flight get `grace_s` to finish.

        Safe from a signal handler: it only sets two fields and the session's interrupt flag
        (a Describe or probe at start-up is given up at once, not at its deadline)."""
        if self._stop_at is None:
            self._stop_at = self.clock()
        self._stop.set()
        self.session.interrupt()

    def _grace_left(self) -> float:
        return float("inf") if self._stop_at is None else self._stop_at + self.config.grace_s - self.clock()

    def _grace_over(self) -> bool:
        """Stop waiting for frames: the grace period after stop() is over, or the log cannot be written.
        A failed edge device is a stop (DeviceHealth calls stop()): the frames it has at the
        cloud can still be answered and recorded, so they get grace_s as at SIGTERM."""
        return self.recorder.fatal is not None or self._grace_left() <= 0

    def drain(self) -> None:
        """Wait for every frame in flight: answered, fallen back, or timed out; after stop()
        for at most grace_s, after the results log failed not at all (nothing more can be recorded)."""
        if not self.ledger.wait_idle(self._grace_over, SLOT_POLL_S) and self.recorder.fatal is None:
            # no record: resume runs them again (also a hedged frame whose local run failed)
            self.summary.abandoned = self.ledger.open_frames

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.watchdog.stop()
        self._stop.set()
        self.local.close()  # the local run in progress ends; queued ones are abandoned
        self.capture.close()
        # abandoned frames: their answers could not be recorded any more, so their stream is cancelled
        # a half-closed stream gets what is left of the grace period to end (2 s when not stopping)
        self.session.close(abandon=self.ledger.open_frames > 0, timeout_s=min(2.0, max(0.0, self._grace_left())))
        self.recorder.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()

    # ------------------------------------------------------------------ policy

    def on_reload(self, loader: Callable[[], PolicyConfig]) -> None:
        """Where `request_reload` gets the new [policy] table from (the CLI re-reads the config file)."""
        self._reload = loader

    def request_reload(self) -> None:
        """Safe from a signal handler: the policy is swapped between two frames."""
        self._reload_requested.set()

    def _maybe_reload(self) -> None:
        if not self._reload_requested.is_set() or self._reload is None or self._build_policy is None:
            return
        self._reload_requested.clear()
        try:
            new = self._build_policy(self._reload())
        except SplitpointError as err:
            log.error("policy reload refused, keeping %s: %s", _describe(self.policy), err)
            return
        log.info("policy reloaded: %s -> %s", _describe(self.policy), _describe(new))
        self._attach_overrun(new)
        self.policy = new

    def _may_offload(self) -> bool:
        """False for a fixed policy at k = K (all on the edge); a reload may change it."""
        return may_offload(self.policy, self.K)

    def _plans_with_link(self) -> bool:
        return plans_paths(self.policy)  # a fixed policy does not plan with estimates

    def _arrived(self, frame: Frame, now: float) -> float:
        """When the frame came from the camera, on this agent's clock: its age back from now;
        never in the future."""
        if not frame.capture_time_ns:
            return now
        return now - max(0.0, frame.age_ns() / 1e9)

    def _observe(self, outcome: FrameOutcome) -> None:
        self.policy.observe(outcome)  # the policy of now: a reload may have swapped it

    def _attach_overrun(self, policy: SplitPolicy) -> None:
        """An adaptive policy weighs offloading against a usual overrun: the margin learner's."""
        if hasattr(policy, "overrun_ms"):
            policy.overrun_ms = lambda: self.margin.quantile_ms(OVERRUN_QUANTILE)

    def _hedge_delay_ms(self, now: float, run_ms: float) -> float:
        """What a hedge's local run queued now costs the following frames, by the policy of now
        (the watchdog weighs it against what the run saves); 0 for a policy that plans nothing."""
        charge = getattr(self.policy, "hedge_delay_ms", None)
        return 0.0 if charge is None else charge(now, self.timeline, run_ms)

    # ------------------------------------------------------------------ one frame

    def choose_split(self, frame: Frame) -> tuple[int, tuple[float, bool, float] | None, bool]:
        """The one place a frame's path is chosen: split k (K = all on the edge), the policy's
        (latency ms, is_deadline, server ms) prediction for it (None without one), and whether
        the frame is raced (run here and sent as k = 0 at once; `PathChoice.raced`).

        The policy plans by predicted finish time given the timeline (scheduler/paths.py) and
        books the frame's use of the edge and the link on it; a fixed policy books nothing."""
        now = self.clock()
        self._planned += 1  # read by the session's prober (an int: no lock needed)
        # one frame in flight: the next is read only when this one ends, so a path that keeps the
        # edge busy delays no other frame (math.inf: no next frame to charge)
        choice = self.policy.plan(frame.index, self.cloud.served.candidates(self.heads.splits, self.K), now,
                                  self.timeline, arrived=self._arrived(frame, now),
                                  next_arrival=math.inf if self._one_in_flight else None)
        k = choice.split
        if choice.local_ms is not None:
            self.edge.local_ms_guess = choice.local_ms  # what a hedge's or fallback's local run books
        predict = getattr(self.policy, "hedge_prediction", None)
        prediction = None if predict is None else predict(k)
        est = self.link.estimate()
        self.metrics.bandwidth.set(est.bandwidth_bps)
        self.metrics.rtt.set(est.rtt_ms)
        self.metrics.queue.set(est.server_queue_ms)
        if k not in self.heads.splits:
            raise SplitpointError(f"policy {self.policy.name} chose split {k}, not loaded here ({self.heads.splits})")
        return k, prediction, choice.raced

    def process(self, frame: Frame) -> None:
        """One admitted frame: its split chosen, its head run here, then sent (cloud_paths) or run
        whole on the local executor. Returns without waiting for the cloud."""
        t_start = self.clock()
        try:
            self._maybe_reload()
            k, prediction, raced = self.choose_split(frame)
            x: np.ndarray = self.heads.preprocess(frame.raw)
        except SplitpointError as err:
            self.edge.fail(frame, str(err))  # also releases what a plan booked for it
            return
        preprocess_ms = (self.clock() - t_start) * 1000
        self.metrics.split.set(k)
        if k == self.K:
            self.edge.run_local(frame, x, k, preprocess_ms, reason=None)
            return
        self._wanted_cloud += 1
        hedge = plan_hedge(self.config.hedge, prediction, self.margin, self.config.frame_deadline_ms)
        out = self.edge.run_head(frame, k, x)  # edge work ends here; the rest is the link's
        if out is None:
            return  # the head failed: the frame has its failure record
        head_end = self.clock()
        if not raced:  # a raced frame's booking is its local run's (k = 0 takes no edge time)
            self.timeline.edge_done(frame.index, head_end)
        # the hedge time counts from when the head really started: a wait for the accelerator (a
        # local run in progress) is in the plan's queue, not in its prediction, and counting it
        # would hedge frames because the edge was busy - more local runs, a busier edge
        head_start = head_end - out.head_ms / 1000
        self.cloud.offload(frame, x, out, preprocess_ms, head_start, hedge,
                           0.0 if prediction is None else prediction[2], raced=raced)

