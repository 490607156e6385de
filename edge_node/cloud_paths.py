"""The link's side of a frame: sending it, and every way its wait for the cloud ends.

    offload(frame) -> held in the ledger -> session stream -> one of:
        answer               -> recorded, where "cloud"; the link estimate and the hedge margin learn
        error answer         -> local fallback, its record naming the replica (the session moves off a RESOURCE_EXHAUSTED/UNAVAILABLE replica;
                                a draining replica's refusal is said at INFO, as its stream's end is)
        malformed answer     -> local fallback
        stream end           -> local fallback for every frame held on that stream
        hedge time passes    -> `hedge`: the local run is queued and the frame stays held; the first
                                result is recorded (edge_node/watchdog.py calls it)
        raced (k = 0)        -> the local run is queued as soon as the frame is sent; the first
                                result is recorded; a hedge then only tells the planner of the stall
        hedged or raced, its local run fails -> it stays held for its answer (edge_node/pending.py):
                                recorded "cloud" (`local_error`) if it comes; failed, with both
                                reasons, at a stream end, error answer or the horizon (a stop:
                                abandoned, no record, as every frame unanswered then: resume reruns it)
        no stream (backoff)  -> local run at once
        silent stream        -> see below (`check_silence`)

A held frame is claimed from the ledger by exactly one of the answer thread and the
stream-end handler (and the watchdog with hedge = "off"), which then owns it: whatever
the answer holds, the frame ends in one record. A hedged frame whose local result won
is kept in `_late` so that its cloud answer, should it come, still teaches the estimates.

The timeline (scheduler/paths.py) hears of the link's use: `link_sent` when the bytes go
out, `link_done` when the answer comes (also a late one), and `link_done(answered=False)`
when none will: the send failed, the stream ended, a hedged frame's answer is forgotten or
its stream set aside. A frame left booked would look like a stalled transfer for ever. The
session's bulk probes are booked the same way (`probe_sent` to `probe_done`).

A server that takes frames and answers none (hung, or behind a link that died without a
reset) would otherwise cost every frame its whole frame_deadline_ms, for ever. A stream
that has answered nothing - not even an error - for 2 x frame_deadline_ms (the horizon after
which no answer is expected) while frames sent on it wait is given up like a failed one
(backoff, frames local meanwhile); with several replicas it is set aside at once
frame_deadline_ms. A server merely slower than the deadline answers within the horizon.

Locks: `CloudPaths._lock` (the `_late` frames, `Pending.hedged`, the streams' last answers) is a leaf; nothing else is
taken while it is held. The session's callbacks run on gRPC receive threads.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from scheduler.paths import Timeline
from scheduler.policy_base import FrameOutcome
from splitpoint.errors import RemoteError, peer_text, status_code_from_int
from splitpoint.v1 import offload_pb2
from splitpoint.wire_metadata import is_draining, is_split_not_served

from .config import EdgeConfig
from .edge_work import EdgeWork
from .heads import HeadOutput
from .hedge import HedgePlan, MarginLearner
from .ledger import FrameLedger
from .outputs import cut_request_tensors, decode_detections, decode_outputs, timing_problem
from .pending import Pending, failed_both
from .run_report import EdgeMetrics
from .served_splits import ServedSplits
from .session_api import Session, SessionCallbacks, Stream
from .sources import Frame

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name

#: seconds between two WARNINGs about the server's error answers of one status code; every such
#: frame runs locally and the fallback digest (edge_node/notices.py) counts them meanwhile
ERROR_WARN_PERIOD_S = 60.0


class CloudPaths:
    def __init__(self, config: EdgeConfig, manifest: Any, session: Session, ledger: FrameLedger, edge: EdgeWork,
                 metrics: EdgeMetrics, margin: MarginLearner, observe: Callable[[FrameOutcome], None],
                 timeline: Timeline, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.manifest = manifest
        self.session = session
        self.ledger = ledger
        self.edge = edge
        self.metrics = metrics
        self.margin = margin
        self.observe = observe  # the current policy's observe (a reload swaps the policy)
        self.clock = clock
        self.timeline = timeline  # the agent's one timeline: the planner reads what every path books
        self.served = ServedSplits()  # splits the cloud refused as not served: an adaptive plan leaves them out
        self._lock = threading.Lock()  # _late and Pending.hedged (a leaf)
        #: hedged frames whose cloud answer may still come: it teaches the estimates, not the log
        self._late: dict[int, Pending] = {}
        #: per stream, since its last answer of any kind: (when the first frame after it was sent,
        #: frames sent since); the streams given up as silent, with the reason their frames get
        self._owed: weakref.WeakKeyDictionary[Stream, tuple[float, int]] = weakref.WeakKeyDictionary()
        self._silenced: weakref.WeakKeyDictionary[Stream, str] = weakref.WeakKeyDictionary()
        #: status code -> when an error answer of that code was last logged as a WARNING
        self._warned: dict[str, float] = {}

    def callbacks(self, wants_probes: Callable[[], bool], frames_planned: Callable[[], int]) -> SessionCallbacks:
        # looked up now, not bound at construction: tests spy on these methods
        return SessionCallbacks(self.on_answer, self.on_stream_end, wants_probes, frames_planned,
                                self.on_probe_sent, self.on_probe_done, self.timeline.frames_on_link)

    def on_probe_sent(self, wire_bytes: int, transfer_ms: float, after_ms: float, stall_evidence: bool = True) -> None:
        """The session's bulk probe is on the link: frames planned meanwhile queue behind it."""
        self.timeline.probe_sent(wire_bytes, self.clock(), transfer_ms, after_ms, stall_evidence)

    def on_probe_done(self, answered: bool) -> None:
        self.timeline.probe_done(self.clock(), answered)

    # ------------------------------------------------------------------ sending

    def offload(self, frame: Frame, x: np.ndarray, out: HeadOutput, preprocess_ms: float, head_start: float,
                hedge: HedgePlan, server_ms: float, raced: bool = False) -> None:
        """Send the head's output of `frame` (split out.split) to the cloud; without a stream, run it here.
        `raced`: the plan also runs it here at once (k = 0 beside a local run; its edge time is booked)."""
        k = out.split
        stream = self.session.current_stream()
        if stream is None:
            if raced:  # the local run the plan booked is all there is
                self.edge.run_local(frame, x, k, preprocess_ms, reason=None)
                return
            self.edge.run_local(frame, x, k, preprocess_ms, reason=self.session.no_stream_reason(),
                                head_ms=out.head_ms)
            return
        req = offload_pb2.InferRequest(
            frame_id=frame.index, model_digest=self.manifest.model_digest, split=k,
            capture_time_unix_ns=frame.capture_time_ns, budget_ms=self.config.frame_deadline_ms,
        )
        # every tensor of the cut (one, or several for a multi-tensor cut), each with its quantization
        req.tensors.extend(cut_request_tensors(out, self.manifest.split(k)))
        wire = sum(len(t.data) for t in req.tensors)
        now = self.clock()
        # counted from the head's start, as the prediction is; never after the frame's deadline
        hedge_at = min(head_start + hedge.budget_ms / 1000, now + self.config.frame_deadline_ms / 1000)
        since_capture_ms = frame.age_ns() / 1e6
        p = Pending(frame, k, x, out.head_ms, preprocess_ms, wire, now, hedge_at, stream, hedge,
                    since_capture_ms + (hedge_at - now) * 1000, server_ms, raced=raced)
        self.ledger.hold(frame.index, p)
        if raced:
            with self._lock:  # its answer teaches the estimates even when the local result wins
                self._late[frame.index] = p
        self.timeline.link_sent(frame.index, wire, now)
        with self._lock:
            since, sent = self._owed.get(stream, (now, 0))
            self._owed[stream] = (since, sent + 1)
        if stream.send(req):
            self.metrics.bytes_sent.inc(wire)
        else:
            self.timeline.link_done(frame.index, self.clock(), answered=False)
            with self._lock:
                self._late.pop(frame.index, None)
                # closed (perhaps ended) before the send: nothing more is owed on it that we wait for
                self._owed.pop(stream, None)
            ended = stream.end_error  # e.g. a server that refused the token ended it before the send
            self.take_and_fallback(frame.index, "stream closed before the frame was sent" if ended is None
                                   else f"stream ended before the frame was sent ({ended})")
        if raced:  # sent first: the transfer is the longer of the two, and k = 0 needs no accelerator
            self.edge.run_local(frame, x, k, preprocess_ms, reason=None, pending=p, beside=True)

    # ------------------------------------------------------------------ answers

    def on_answer(self, stream: Stream, resp: offload_pb2.InferResponse) -> None:
        now = self.clock()
        with self._lock:
            self._owed.pop(stream, None)  # the server is alive, whatever the answer holds
            late = self._late.get(resp.frame_id)
        held = dict(self.ledger.held()).get(resp.frame_id)
        if any(p is not None and p.stream is not stream for p in (held, late)):
            # sent on another stream (perhaps to another replica): this one never had it, so
            # whatever it says is no answer - taken, it was recorded under the other's name
            log.debug("answer for frame %d on a stream it was not sent on ignored", resp.frame_id)
            return
        self.timeline.link_done(resp.frame_id, now)  # its bytes are through, whoever wins
        p = self.ledger.claim(resp.frame_id)
        with self._lock:
            late = self._late.pop(resp.frame_id, None)
        if p is None:
            if late is not None:  # hedged, and the local result won: the answer still teaches the estimates
                self.learn_late(late, resp)
            else:
                log.debug("late or unknown response for frame %d ignored", resp.frame_id)
            return
        self.answered(p, resp)  # this thread now owns the frame: whatever the answer holds, one record

    def answered(self, p: Pending, resp: offload_pb2.InferResponse) -> None:
        rpc_ms = (self.clock() - p.sent) * 1000
        if resp.HasField("error") and resp.error.code != 0:
            code = status_code_from_int(resp.error.code)
            self.metrics.errors.labels(code.name).inc()
            message = peer_text(resp.error.message)  # the server's words: escaped and cut short
            p.refused_by = p.stream.replica  # "" when its stream never said (an older server)
            if is_draining(code, resp.error.message):
                # sent as its replica began to drain (a rollout, a scale-in): routine, as the stream's
                # end that follows is (the session's `rotation`); the next frame goes to another replica
                log.log(min(logging.INFO, self._error_level("draining")),  # its own period: not UNAVAILABLE's
                        "frame %d was refused by %s as it drains (%s); it runs here", p.frame.index,
                        p.stream.replica or "its replica", message)
            else:
                log.log(self._error_level(code.name), "frame %d failed in the cloud: %s %s", p.frame.index,
                        code.name, message)
                if is_split_not_served(code, resp.error.message):
                    self.served.refused(p.split, p.stream.replica)
            self.fallback(p, f"cloud {code.name}: {message}")
            return
        outputs, problem = self.outputs(resp)
        problem = problem or timing_problem(resp.timing)
        if problem is not None:
            log.warning("frame %d: malformed answer from the cloud (%s); running it locally", p.frame.index, problem)
            self.fallback(p, f"malformed response: {problem}")
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
        self.edge.complete(p.frame, p.split, "cloud", outputs, timings, None, replica=p.stream.replica, pending=p)
        self.learn(p, resp, rpc_ms)

    def _error_level(self, code: str) -> int:
        """WARNING for the first error answer of `code` in ERROR_WARN_PERIOD_S, DEBUG for the rest."""
        now = self.clock()
        with self._lock:
            last = self._warned.get(code)
            if last is not None and now - last < ERROR_WARN_PERIOD_S:
                return logging.DEBUG
            self._warned[code] = now
        return logging.WARNING

    def learn(self, p: Pending, resp: offload_pb2.InferResponse, rpc_ms: float) -> None:
        """A cloud answer, recorded or late: the link estimate and the hedge margin learn from it."""
        t = resp.timing
        with self._lock:
            hedged = p.hedged
        now = self.clock()
        self.observe(FrameOutcome(
            p.frame.index, p.split, "cloud", True, p.head_ms, p.wire_bytes, rpc_ms, t.queue_ms, t.compute_ms, t.total_ms,
            resp.load.queued, hedged=hedged, late_ms=max(0.0, (now - p.deadline) * 1000), at=now, raced=p.raced,
        ))
        if p.hedge.predicted_ms is not None and p.hedge.basis != "deadline":
            # censored, as a hedged frame's: a raced frame's local result may have stood in for it
            cap = MarginLearner.late_cap_ms(p.hedge.margin_ms) if p.local_queued else None
            self.margin.observe(p.head_ms + rpc_ms, p.hedge.predicted_ms, cap)

    def learn_late(self, p: Pending, resp: offload_pb2.InferResponse) -> None:
        """The answer to a frame whose hedged local result was recorded first."""
        if resp.HasField("error") and resp.error.code != 0:
            return  # e.g. DEADLINE_EXCEEDED: the server gave up, nothing measured
        if timing_problem(resp.timing) is not None:
            return  # nothing to learn from: the figures it would learn are the unusable ones
        log.debug("frame %d: cloud answer after its hedge; used for the estimates only", p.frame.index)
        self.learn(p, resp, (self.clock() - p.sent) * 1000)

    def outputs(self, resp: offload_pb2.InferResponse) -> tuple[list[np.ndarray], str | None]:
        """Every output of the answer (manifest order and shapes), or what is wrong with it
        (then the frame falls back). A detector's answer is its one compact detections tensor
        (splitpoint/detection.py), returned as the only output."""
        if getattr(self.manifest, "detection", None):
            try:
                return [decode_detections(resp, self.manifest)], None
            except Exception as exc:  # noqa: BLE001 - whatever the bytes hold, never a dead answer thread
                return [], f"detections unreadable: {exc}"
        try:
            return decode_outputs(resp, self.manifest), None
        except Exception as exc:  # noqa: BLE001 - whatever the bytes hold, never a dead answer thread
            return [], f"output tensors unreadable: {exc}"

    def on_stream_end(self, stream: Stream, error: RemoteError | None) -> int:
        """No more answers come on `stream`: its frames fall back. Returns how many it held."""
        lost = self.ledger.claim_where(lambda p: p.stream is stream)
        # the server's words as well as the code (cut by RemoteError): "INTERNAL" alone did not
        # say that the answer was bytes of another service, nor UNAVAILABLE that a proxy reset it
        reason = f"stream ended before the answer ({error if error else 'closed by server'})"
        with self._lock:  # no answer can come on this stream any more
            reason = self._silenced.get(stream, reason)
            self._owed.pop(stream, None)
            gone = [(fid, p) for fid, p in self._late.items() if p.stream is stream]
            for fid, _ in gone:
                del self._late[fid]
        now = self.clock()
        for fid, p in dict(gone + lost).items():  # a hedged frame may be both held and late
            self.timeline.link_done(fid, now, answered=False)
            self._raced_lost(p, now)
        for _, p in lost:
            self.fallback(p, reason)
        return len(lost)

    # ------------------------------------------------------------------ hedges and fallbacks

    def hedge(self, fid: int, p: Pending) -> None:
        """`p` passed its hedge time: run it locally too; it stays held, so the cloud answer,
        should it come first, is still recorded (the ledger keeps the first). A raced frame's
        local run is queued already (its local result may even be recorded): the hedge only
        tells the planner and the risk that its answer is late, as any offload's would be."""
        with self._lock:
            if p.hedged:
                return
            p.hedged = True
            self._late[fid] = p
        log.debug("frame %d hedged after %.0f ms: %s", fid, p.hedge.budget_ms, p.hedge.reason())
        self.timeline.link_hedged(fid)  # the planner sees the stall until its answer (scheduler/risk.py)
        # the policy counts it (scheduler/risk.py): no rpc_ms, nothing crossed the link yet
        self.observe(FrameOutcome(fid, p.split, "cloud", False, p.head_ms, p.wire_bytes, hedged=True, at=self.clock(),
                                  raced=p.raced))
        if not p.raced:
            self.edge.run_local(p.frame, p.x, p.split, p.preprocess_ms, reason=p.hedge.reason(), head_ms=p.head_ms,
                                pending=p, beside=True)

    def check_silence(self, now: float) -> None:
        """Give up every stream that has answered nothing for 2 x frame_deadline_ms since a frame
        was sent on it (the module doc); at once frame_deadline_ms, set it aside (a hung replica
        got the frames after the first overdue one too, each waiting its full deadline, while
        other replicas stood by). The watchdog calls it every tick."""
        horizon_s = self._answer_horizon_s()
        with self._lock:
            overdue = [(stream, since) for stream, (since, _) in self._owed.items() if now - since >= horizon_s / 2]
            silent = {stream: owed for stream, owed in self._owed.items()
                      if now - owed[0] >= horizon_s and stream not in self._silenced}
            for stream, (since, _) in silent.items():
                self._silenced[stream] = (f"nothing came back on its stream for {(now - since) * 1000:.0f} ms "
                                          f"(over twice frame_deadline_ms = {self.config.frame_deadline_ms}): "
                                          "server or link stalled")
        for stream, since in overdue:
            if self.session.set_aside(stream, f"answered nothing for {(now - since) * 1000:.0f} ms (frame_deadline_ms)"):
                self._not_the_link(stream, now)
        for stream, (since, sent) in silent.items():
            self.session.give_up(stream, f"nothing came back for {(now - since) * 1000:.0f} ms (2 x frame_deadline_ms) "
                                         f"while {sent} frame(s) sent on it waited")

    def _not_the_link(self, stream: Stream, now: float) -> None:
        """`stream` was set aside for another replica: its hedged frames, late on a replica left
        behind, no longer hold the planner's link as a stall (a late answer still teaches the
        estimates). Held to forget_late, they kept an adaptive agent on the edge 2 x
        frame_deadline_ms when one of three replicas hung; a stalled link shows on the next transfer."""
        with self._lock:
            late = [fid for fid, p in self._late.items() if p.stream is stream]
        for fid in late:
            self.timeline.link_done(fid, now, answered=False)

    def _answer_horizon_s(self) -> float:
        """How long after its send an answer is still expected: the server drops a frame whose
        budget (frame_deadline_ms) ran out, so twice that is ample."""
        return 2 * self.config.frame_deadline_ms / 1000

    def late_frames(self) -> list[Pending]:
        """Frames whose local run is queued or done and whose cloud answer may still come."""
        with self._lock:
            return list(self._late.values())

    def forget_late(self, now: float) -> None:
        """Hedged frames whose answer is no longer expected (`_answer_horizon_s`); those whose
        local run failed end failed then."""
        horizon = self._answer_horizon_s()
        with self._lock:
            gone = [(fid, p) for fid, p in self._late.items() if now - p.sent > horizon]
            for fid, _ in gone:
                del self._late[fid]
        for fid, p in gone:
            self.timeline.link_done(fid, now, answered=False)
            self._raced_lost(p, now)
        self.give_up_failed(f"none within 2 x frame_deadline_ms = {2 * self.config.frame_deadline_ms:g} ms",
                            lambda p: now - p.sent > horizon)

    def give_up_failed(self, reason: str, which: Callable[[Pending], bool]) -> None:
        """End failed every held frame whose local run failed (and `which`): no answer came (`reason`)."""
        for _, p in self.ledger.claim_where(lambda p: p.local_error is not None and which(p)):
            self.fallback(p, reason)

    def _raced_lost(self, p: Pending, now: float) -> None:
        """A hedged raced frame's answer will never come: the hit its hedge did not count."""
        with self._lock:
            hedged = p.hedged
        if p.raced and hedged:
            self.observe(FrameOutcome(p.frame.index, p.split, "cloud", False, p.head_ms, p.wire_bytes, hedged=True,
                                      at=now, raced=True, lost=True))

    def take_and_fallback(self, frame_id: int, reason: str) -> None:
        p = self.ledger.claim(frame_id)
        if p is not None:  # else another path has it already
            self.fallback(p, reason)

    def fallback(self, p: Pending, reason: str) -> None:
        """`p`, claimed from the ledger, runs locally instead of waiting for the cloud."""
        with self._lock:
            queued = p.local_queued
        if queued:  # its local run is queued already: it ends the frame, unless it failed already
            failed = p.left_to_local(reason)
            if failed is not None:
                self.edge.fail(p.frame, failed_both(failed, reason))
            return
        self.edge.run_local(p.frame, p.x, p.split, p.preprocess_ms, reason=reason, head_ms=p.head_ms, pending=p)
