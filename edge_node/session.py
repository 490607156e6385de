"""The agent's session with the cloud: channel, streams, failover, backoff, probes.

`OffloadSession` is the real `Session` (edge_node/session_api.py: the interface the agent
depends on, and what the session reports back through `SessionCallbacks`).

Inside: one channel for every configured server (round_robin spreads streams over the
replicas and skips one that is not SERVING). A stream older than stream_lifetime_s is
half-closed (its frames still get their answers) and the next frame opens a new one. An
answer with RESOURCE_EXHAUSTED or UNAVAILABLE half-closes its stream, so the next frame
lands on another replica. A stream that ends with an error starts a reconnect backoff
with full jitter (0.5 s doubling to 5 s), reset by the next answer; during it
`current_stream` is None (the agent runs frames locally). So does a stream the agent
gives up because it answered nothing for 2 x frame_deadline_ms (`give_up`). Failed streams are
logged by `notices.StreamFailures`: one WARNING a minute at most.

Locks: `OffloadSession._lock` (stream, backoff, reached) is a leaf; callbacks run without it.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable

import grpc

from scheduler.cost import transfer_ms
from scheduler.link import PROBE_TARGET_MS, LinkEstimator, probe_bytes
from splitpoint.errors import ConfigError, RemoteError, peer_text, status_code_from_int
from splitpoint.remote_hints import is_refusal, remote_hint
from splitpoint.v1 import offload_pb2
from splitpoint.wire_metadata import DRAINING_DETAILS

from .client import CloudLink, InferStream, Interrupted, OffloadClient
from .config import EdgeConfig
from .notices import StreamFailures
from .session_api import SessionCallbacks, Stream

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name

#: reconnect backoff: first wait, cap (seconds); full jitter
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 5.0  # a drone should find a restarted server within seconds
#: a frame answered with one of these moves the agent off that stream's replica
MOVE_ON_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
#: what a replica answers a frame of another bundle with (cloud_server/validation.py): backed off from
OTHER_BUNDLE_CODE = grpc.StatusCode.FAILED_PRECONDITION
#: a stream that ended with one of these may not have reached a server (refused connection, failed
#: handshake, no channel); any other status is a server's own answer
UNREACHED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN)
#: how a stream ends that the server ended on purpose (status text prefix -> what to say): a rotation,
#: not a failure - the next frame opens a new stream at once, no backoff. gRPC ends a stream still
#: open when its connection reaches max_connection_age_s and its grace (deploy/kubernetes: 600 s);
#: a draining replica (SIGTERM, a rollout) ends its streams once their frames are answered, and
#: health NOT_SERVING sends the next one to another replica (backed off, ~74 of 7,200 frames ran
#: here over two drains in s31-fleet's run; with no other replica the new stream fails and backs off)
ROTATIONS = {"UNAVAILABLE: max connection age": "with its connection (the server's max_connection_age_s)",
             f"UNAVAILABLE: {DRAINING_DETAILS}": "as its replica drains (shutting down)"}
#: the largest bandwidth probe (probes are sized to the estimate: scheduler.link.probe_bytes)
PROBE_BYTES = 64 * 1024
#: a probe that reads this many times the estimate it was sized by is repeated at once
REPROBE_RISE = 1.5
#: the prober never waits less than this between looks (a probe just fell due: poll again soon)
PROBE_WAKE_MIN_S = 0.005


class OffloadSession:
    """The real session: an OffloadClient and its Infer streams (see the module doc)."""

    def __init__(self, config: EdgeConfig, model_digest: str, link: LinkEstimator,
                 client: CloudLink | None = None,
                 jitter: Callable[[float], float] = lambda backoff: random.uniform(0, backoff),
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock  # backoff and probe times (the link estimator keeps its own clock)
        self.model_digest = model_digest
        self.link = link
        self.client: CloudLink = client or OffloadClient(
            config.cloud, config.max_message_bytes, config.connect_timeout_s, config.security,
            keepalive_s=config.keepalive_s, agent_name=config.agent_name)
        self.address = self.client.address
        self._jitter = jitter  # the wait before reconnecting, given the backoff (full jitter)
        self._callbacks: SessionCallbacks | None = None
        self._lock = threading.Lock()  # _stream, _retry_at, _backoff, _reached, the probe schedule (a leaf)
        self._stream: InferStream | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_START_S
        self._reached: set[str] = set()  # addresses that answered anything
        self._last_error: RemoteError | None = None  # what the last failed call or stream said
        self._backoff_cause: RemoteError | None = None  # why the current backoff began (None: a give-up)
        self._failures = StreamFailures(clock=clock)  # streams that failed: logged at a bounded rate
        self._last_probe = 0.0
        #: the wait before the next idle probe: probe_first_s after a frame measured the link's
        #: rate and while the camera keeps giving frames that do not (they run on the edge, or
        #: are cuts too quick on the wire to measure it: the link is the path, or the payload,
        #: they may be missing; a link that came back is seen within probe_first_s, not
        #: probe_idle_s); doubling up to probe_idle_s while neither happens (no frames: nothing
        #: to gain). _probed_traffic is the link's last_rate_sample right after our own last
        #: probe: when it moves, a frame measured the rate since; _probed_frames the agent's
        #: frames_planned() at that probe.
        self._probe_gap = 0.0
        self._reprobe = False  # the last probe read a rise: the next one is due now
        self._streams_handed = 0  # frames given a stream to be sent on (current_stream)
        self._probed_sends = 0  # _streams_handed when the last probe started
        self._probe_took_s = 0.0  # how long the last probe took (its RTT exchange and bulk)
        self._probed_traffic: float | None = None
        self._probed_frames = 0
        self._stop = threading.Event()
        # Probes run beside the frames, never in front of one: a 64 KiB probe on a 2 Mbps uplink
        # takes a quarter of a second, which a frame waiting behind it would pay.
        self._prober = threading.Thread(target=self._probe_loop, name="link-prober", daemon=True)

    # ------------------------------------------------------------------ the agent's side

    def check_server(self) -> offload_pb2.BundleInfo | None:
        """Describe the server (a replica of the target). A digest mismatch is fatal, an
        unreachable server is not (frames run locally until one answers)."""
        try:
            info = self.client.describe()
        except Interrupted:
            return None  # told to stop while asking: nothing to report
        except RemoteError as err:
            self._failed(err)
            hint = remote_hint(err)
            refused = is_refusal(err)
            log.warning("cloud %s %s (%s)%s; frames run locally until it %s", self.address,
                        "refused this agent" if refused else "not reachable", err, f"; {hint}" if hint else "",
                        "accepts it" if refused else "is")
            return None
        if not info.model_digest:  # every splitpoint.v1 server names its bundle
            raise ConfigError("cloud", self.address, "the server names no bundle in its Describe answer: a server of "
                                                     "another protocol version, or not a splitpoint server; run the "
                                                     "same splitpoint version on both sides")
        if info.model_digest != self.model_digest:
            # of several replicas, the one that answered (a rollout half done): the one to look at
            replica = self.client.described_by
            where = f" {replica}" if replica and replica != self.address else ""
            raise ConfigError(
                "cloud", self.address,
                f"the server{where} runs bundle {peer_text(info.model_name)} {peer_text(info.model_digest)}, "
                f"this agent {self.model_digest}: "
                "partition once and deploy the same bundle to both",
            )
        with self._lock:
            self._reached.add(self.address)
        log.info("cloud %s serves %s; warm tails %s", self.address, peer_text(info.model_name),
                 peer_text(str([s.split for s in info.splits if s.warm])))  # a Describe may list millions
        return info

    def start(self, callbacks: SessionCallbacks) -> None:
        self._callbacks = callbacks
        self.maybe_probe()  # before the first frame is captured: a first estimate costs no frame
        self._prober.start()  # idles while the policy is fixed (a reload may make it adaptive)

    def current_stream(self) -> InferStream | None:
        """The open stream, a fresh one when it is old or gone, None while backing off."""
        lifetime = self.config.stream_lifetime_s
        with self._lock:
            stream = self._stream
            if stream is not None and stream.accepting and stream.age_s < lifetime:
                self._streams_handed += 1
                return stream
            if stream is not None and stream.accepting:
                stream.close()  # old: let its frames finish, send new ones on a new stream
            if self._clock() < self._retry_at:
                return None
            self._stream = self.client.open_stream(lifetime, self._on_response, self._on_stream_end)
            self._streams_handed += 1
            return self._stream

    def reached(self) -> bool:
        with self._lock:
            return bool(self._reached)

    def last_error(self) -> RemoteError | None:
        with self._lock:
            return self._last_error

    def no_stream_reason(self) -> str:
        """Why current_stream() gave no stream (the backoff): the fallback_reason of the frames run
        meanwhile. A server that refused this agent is named as such, not as unreachable."""
        with self._lock:
            cause = self._backoff_cause
        if cause is not None and is_refusal(cause):
            return f"cloud refused this agent ({cause.code.name}) (waiting to retry)"
        if cause is not None and cause.code == OTHER_BUNDLE_CODE:
            return "cloud runs another bundle (waiting to retry)"
        if cause is not None and cause.code not in UNREACHED_CODES:
            # e.g. RESOURCE_EXHAUSTED: over max_streams_per_agent (drones sharing a certificate)
            return f"cloud refused the stream ({cause.code.name}) (waiting to retry)"
        return "cloud unreachable (waiting to reconnect)"

    def _failed(self, err: RemoteError) -> None:
        with self._lock:
            self._last_error = err

    def interrupt(self) -> None:
        """Give up the Describe or probe in progress, and any later one, at once: the agent was
        told to stop (SIGTERM), and those calls would otherwise hold it until their deadline.
        Safe from a signal handler: it sets an Event."""
        self.client.interrupted.set()

    def close(self, abandon: bool, timeout_s: float = 2.0) -> None:
        """End the session; `abandon`: frames are still in flight and their answers cannot be
        recorded any more, so the stream is cancelled rather than half-closed. `timeout_s`: how
        long a half-closed stream may take to end (what is left of the grace period); a server
        that never ends it is cut off then."""
        self._stop.set()
        if self._prober.is_alive():
            self._prober.join(1.0)  # a probe in flight ends at its deadline or when the channel closes
        with self._lock:
            stream = self._stream
        if stream is not None:
            if abandon:
                stream.cancel()
            else:
                stream.close()
            stream.ended.wait(max(0.0, timeout_s))
        self.client.close()
        self._failures.flush()

    def give_up(self, stream: Stream, why: str) -> None:
        """A server that takes frames and answers nothing is treated as one that failed: the
        stream is cancelled (stream_ended falls its frames back) and the backoff starts."""
        wait = self._back_off(None)
        self._failures.failed(f"stream to {stream.replica or self.address} given up: {why}; frames run here, "
                              f"a new stream in {wait:.1f} s")
        stream.cancel()

    # ------------------------------------------------------------------ the streams' side

    def _on_response(self, stream: InferStream, resp: offload_pb2.InferResponse) -> None:
        code = status_code_from_int(resp.error.code) if resp.HasField("error") and resp.error.code != 0 else None
        with self._lock:
            self._reached.add(self.address)
            if code != OTHER_BUNDLE_CODE:
                self._backoff = BACKOFF_START_S  # the link works
        if code != OTHER_BUNDLE_CODE:
            self._failures.answered()
        if code in MOVE_ON_CODES and stream.accepting:
            # the replica is overloaded or draining: the next frame opens a new stream,
            # which round_robin places on another replica
            log.info("replica %s answered %s: moving to another stream", stream.replica or "?", code.name)
            stream.close()
        elif code == OTHER_BUNDLE_CODE and stream.accepting:
            # it runs another bundle (restarted on a new one, or a rollout under way): every frame
            # sent there would be refused, uplink and battery spent for nothing. Frames run here for
            # a backoff that grows with each such answer, then a new stream (round_robin: perhaps
            # another replica, one still on this bundle) tries again.
            stream.close()
            wait = self._back_off(RemoteError(code, peer_text(resp.error.message)))
            log.info("replica %s runs another bundle: frames run here, a new stream in %.1f s",
                     stream.replica or self.address, wait)
        assert self._callbacks is not None
        self._callbacks.answer(stream, resp)

    def _on_stream_end(self, stream: InferStream, error: RemoteError | None) -> None:
        assert self._callbacks is not None
        lost = self._callbacks.stream_ended(stream, error)
        if error is None or error.code == grpc.StatusCode.CANCELLED:
            return
        if error.code == grpc.StatusCode.DEADLINE_EXCEEDED and not lost:
            # the server closed a stream we left idle: open a new one when needed, no backoff
            log.debug("idle stream closed by the server: %s", error)
            return
        rotation = next((why for text, why in ROTATIONS.items() if str(error).startswith(text)), None)
        if rotation is not None:  # the frames in flight fell back above; a backoff would run more here
            log.info("stream to %s ended %s; %d frame(s) in flight ran here; a new stream on a new connection",
                     stream.replica or self.address, rotation, lost)
            return
        hint = remote_hint(error) if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED else ""
        self._failures.failed(f"stream to {stream.replica or self.address} ended: {error}" + (f"; {hint}" if hint else ""))
        self._failed(error)
        # the next stream is placed by round_robin on a replica that is SERVING, if any
        self._back_off(error)

    def _back_off(self, cause: RemoteError | None) -> float:
        """No new stream for a random wait up to the backoff, which doubles (to BACKOFF_MAX_S)
        until an answer resets it; `cause` (None: a stream given up as silent) names it in the
        records of the frames run meanwhile (no_stream_reason). The wait, in seconds."""
        with self._lock:
            wait = self._jitter(self._backoff)
            self._backoff_cause = cause
            self._retry_at = self._clock() + wait
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
        return wait

    # ------------------------------------------------------------------ probes

    def _probe_loop(self) -> None:
        """Background thread: probe whenever no frame has measured the link's rate for a while
        (probe_first_s; doubling up to probe_idle_s once frames stop coming)."""
        policy = self.config.policy
        poll_s = min(0.1, policy.probe_first_s / 4, policy.probe_idle_s / 4)
        wait_s = poll_s
        while not self._stop.wait(wait_s):
            wait_s = poll_s
            try:
                # Wake when the next probe falls due rather than up to a poll later: with the
                # camera live the probe period is what bounds how soon a risen link is seen.
                wait_s = min(poll_s, max(PROBE_WAKE_MIN_S, self.maybe_probe()))
            except Exception as err:  # noqa: BLE001 - e.g. the channel closed under a probe at shutdown
                log.debug("link probe ended: %s", err)

    def maybe_probe(self) -> float:
        """Measure the link when no frame has measured its rate for a while (and at start): none
        was sent, or every one was on the wire for less than an RTT (scheduler/link.py: such a
        reading is only a lower bound, and an agent sending small cuts on a fast link would
        never see that a larger payload had become the quicker path). Returns
        the seconds until the next probe could fall due (the prober's wait; frames may push it)."""
        callbacks = self._callbacks
        if callbacks is None or not callbacks.wants_probes():  # also after a reload to fixed
            return math.inf
        policy = self.config.policy
        now = self._clock()
        first = min(policy.probe_first_s, policy.probe_idle_s)
        planned = callbacks.frames_planned()
        frames_on_link = callbacks.frames_on_link()  # asked before the lock: the session's is a leaf
        before = self.link.estimate()  # likewise (the link's lock)
        size = min(PROBE_BYTES, probe_bytes(before.bandwidth_bps))  # ~50 ms of traffic, bounded
        with self._lock:
            frame_crossed = self.link.last_rate_sample != self._probed_traffic  # and measured the rate
            if frame_crossed or self._streams_handed != self._probed_sends:
                # Frames are crossing (or on their way): they measure the link, and a re-probe
                # beside them delays them (in a step-only run, most likely what pushed one of
                # the first frames past its hedge time).
                self._reprobe = False
            if frame_crossed:  # a new idle spell
                self._probe_gap = first
            gap = self._probe_gap
            if self._last_probe and not self._reprobe:
                # The spell is timed from the last frame that measured the rate, or, when only our probes
                # did, from the last probe's start: timed from its end, every probe's own
                # transfer (130 ms for 32 KiB at 2 Mbps) stretched the period by that much.
                # Probes keep the link at most half busy: a slow one waits twice its length.
                wait = self._last_probe + max(gap, 2 * self._probe_took_s) - now
                if frame_crossed:
                    wait = max(wait, gap - self.link.idle_s())
                if wait > 0:
                    return wait
            if now < self._retry_at:
                return self._retry_at - now
            if frames_on_link:
                # A frame planned for the link (its head is running) would queue behind the probe:
                # the plan booked its transfer on a link it saw free. In the trace stage (RTT 10 ms,
                # 792d828) the one k = 89 frame sent after an all-edge spell on ATT-LTE-driving 0 s
                # and on Verizon-EVDO 1045 s ended hedged at 257 ms (3 frames late behind it) where
                # the fixed k = 89 run sent it in 27-29 ms. Frames on the link measure it anyway,
                # and their answers restart the spell: look again a poll later, not in 5 ms steps
                # for as long as a stalled frame holds the link.
                return first
            if (self._streams_handed != self._probed_sends and not self._reprobe
                    and transfer_ms(size, before.bandwidth_bps) > PROBE_TARGET_MS):
                # Frames are being sent, as cuts too quick on the wire to measure the rate: a
                # probe beside them is what could show that a larger payload has become the
                # quicker path, but it holds the link they use. Only while it is cheap (its
                # bytes in PROBE_TARGET_MS at the estimate: 32 KiB needs 5.2 Mbps): sent at
                # 4 Mbps beside TMobile-LTE-short's k = 89 frames (RTT 10 ms, one run), 32 KiB
                # held the link for ~65 ms of every 0.5 s, delayed frames by up to 22 ms and sent
                # others to the edge (1.026x the best fixed split, 1.009x without them), where no
                # larger payload could have won. "Being sent" is since this look, not since the
                # last probe: counted from the last probe, an agent that went all-edge with a low
                # estimate stayed "offloading" and was never probed again (15a619b: the whole
                # 50 Mbps phase of the step on the edge, and Verizon-LTE-short's last 2 s).
                self._probed_sends = self._streams_handed
                return first
            self._last_probe = now
            reprobing, self._reprobe = self._reprobe, False
            # Frames sent since the last probe: the agent is offloading (cuts too quick on the
            # wire to measure the rate), and its frames' own outcomes (hedges, late answers) are
            # its risk evidence (scheduler/risk.py); a probe is judged for the link's drops only
            # for an agent that has none. Judged beside the frames (TMobile-LTE-short, RTT 10 ms,
            # one run), an agent that had offloaded every frame ran 30 of its 200 on the edge,
            # each ~15 ms slower than the k = 89 it had been sending - most likely held there by
            # the drops its probes met (the reasons are not logged).
            offloading = self._streams_handed != self._probed_sends
            self._probed_sends = self._streams_handed
            # Frames planned since the last probe ran on the edge (none crossed): the camera is
            # live, so keep watching the link at probe_first_s. Costs up to one probe (32-48 KiB)
            # per probe_first_s while the agent is all-edge; no frames: back off.
            camera_live = planned != self._probed_frames
            self._probed_frames = planned
            self._probe_gap = first if camera_live else min(policy.probe_idle_s, 2 * gap)
        before_bps, measured = before.bandwidth_bps, before.samples > 0
        timeout_s = self.config.connect_timeout_s + max(1.0, size * 8 / 100e3)  # 100 kbps floor
        try:
            rtt_ms, resp = self.client.probe(0, 0, timeout_s=timeout_s)
            self.link.observe_rtt(max(0.01, rtt_ms - resp.server_time_ms))
            if callbacks.frames_on_link():
                # planned during the RTT exchange (an RTT or more: 10-70 ms): its plan did not see
                # this probe, so the bulk would go ahead of it. Checked again here, the window in
                # which a plan can miss a probe is the few microseconds to probe_sent below.
                log.debug("probe: a frame was planned for the link during the RTT exchange; no bulk")
                return 0.0
            callbacks.probe_sent(size, transfer_ms(size, before_bps), before.rtt_ms)  # the cost model's time
            answered = False
            try:
                bulk_ms, resp = self.client.probe(size, 0, timeout_s=timeout_s)
                answered = True
            finally:
                callbacks.probe_done(answered)
            # A re-probe is not judged for drops: its prediction is the one reading it repeats,
            # and a noisy high one (48 KiB is 8 ms on the wire at 50 Mbps) made the re-probe
            # after it look like a drop, which the hedge risk would count against offloading.
            sample_bps = self.link.observe_probe(size, bulk_ms, resp.server_time_ms,
                                                 judged=not reprobing and not offloading)
            with self._lock:
                self._probed_traffic = self.link.last_rate_sample
                self._probe_took_s = self._clock() - now
                # A link that rose during the probe: the reading blends the old rate and the new
                # (a 32 KiB probe at 2 Mbps that a rise to 50 Mbps hits half way through reads
                # 3.8 Mbps). Read it again at once rather than a probe period later; one
                # re-probe per reading, so a noisy link costs at most twice the probes.
                # Not after a first reading: the estimate it is compared with was a guess.
                self._reprobe = sample_bps > REPROBE_RISE * before_bps and not reprobing and measured
            log.debug("probe: %s", self.link.estimate())
        except RemoteError as err:
            if not isinstance(err, Interrupted):
                self._failed(err)
            log.info("link probe failed: %s", err)
        return 0.0  # look again at once: what is due next is worked out there
