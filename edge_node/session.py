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
logged by `notices.RepeatedFailures`: one WARNING a minute at most. The link's probes are the
session's `LinkProber` (edge_node/link_prober.py), on the same channel; its failed probes are
logged the same way, at INFO.

Locks: `OffloadSession._lock` (stream, backoff, reached, frames handed a stream) is taken
before a stream's lock (`current_stream` closes an old stream under it) and the renewing
channel's (it opens the new one), both leaves; never the other way round: a stream calls its
callbacks without its lock. Callbacks run without the session's lock, and the prober asks for
what it needs before taking its own.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection

import grpc

from scheduler.link import LinkEstimator
from splitpoint.bundle import split_ranges
from splitpoint.errors import ConfigError, RemoteError, peer_text, status_code_from_int
from splitpoint.remote_hints import is_refusal, remote_hint
from splitpoint.targets import may_be_several, parse_target
from splitpoint.v1 import offload_pb2
from splitpoint.wire_metadata import is_draining, is_other_bundle, is_split_not_served

from .client import CloudLink, InferStream, Interrupted, OffloadClient
from .config import EdgeConfig
from .link_prober import LinkProber
from .notices import RepeatedFailures
from .session_api import SessionCallbacks, Stream

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name

#: reconnect backoff: first wait, cap (seconds); full jitter
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 5.0  # a drone should find a restarted server within seconds
#: a frame answered with one of these moves the agent off that stream's replica
MOVE_ON_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
#: a stream that ended with one of these may not have reached a server (refused connection, failed
#: handshake, no channel); any other status is a server's own answer
UNREACHED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN)
#: the status text gRPC ends a stream with when its connection reaches max_connection_age_s and
#: its grace (deploy/kubernetes: 600 s)
MAX_AGE_DETAILS = "max connection age"


def rotation(error: RemoteError) -> str | None:
    """Why the server ended a stream on purpose (what to say), None when it failed: a rotation is
    no failure - the next frame opens a new stream at once, no backoff. A draining replica (SIGTERM,
    a rollout) ends its streams once their frames are answered, and health NOT_SERVING sends the
    next one to another replica (backed off, ~74 of 7,200 frames ran here over two drains in
    s31-fleet's run; with no other replica the new stream fails and backs off)."""
    if error.code == grpc.StatusCode.UNAVAILABLE and error.details.startswith(MAX_AGE_DETAILS):
        return "with its connection (the server's max_connection_age_s)"
    if is_draining(error.code, error.details):
        return "as its replica drains (shutting down)"
    return None


class OffloadSession:
    """The real session: an OffloadClient and its Infer streams (see the module doc)."""

    def __init__(self, config: EdgeConfig, model_digest: str, link: LinkEstimator,
                 client: CloudLink | None = None,
                 jitter: Callable[[float], float] = lambda backoff: random.uniform(0, backoff),
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock  # backoff and probe times (the link estimator keeps its own clock)
        self.model_digest = model_digest
        self.client: CloudLink = client or OffloadClient(
            config.cloud, config.max_message_bytes, config.connect_timeout_s, config.security,
            keepalive_s=config.keepalive_s, agent_name=config.agent_name)
        self.address = self.client.address
        #: a list of replicas (or a name of several): a silent stream is set aside for another one
        self._replicas = may_be_several(parse_target("cloud", self.address))
        self._jitter = jitter  # the wait before reconnecting, given the backoff (full jitter)
        self._callbacks: SessionCallbacks | None = None
        self._lock = threading.Lock()  # _stream, _retry_at, _backoff, _reached, _streams_handed (a leaf)
        self._stream: InferStream | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_START_S
        self._reached: set[str] = set()  # addresses that answered anything
        self._last_error: RemoteError | None = None  # what the last failed call or stream said
        self._backoff_cause: RemoteError | None = None  # why the current backoff began (None: a give-up)
        self._failures = RepeatedFailures("streams", logging.WARNING, clock=clock)  # streams that failed: logged at a bounded rate
        #: streams set aside for their silence and silent since (set_aside): ended with frames owed, a failure
        self._silent_aside: dict[int, Stream] = {}  # by id(): held until it ends or answers
        self._streams_handed = 0  # frames given a stream to be sent on (current_stream): the prober's
        # `link` is the prober's: the estimate its probes feed (the agent's frames feed it too)
        self.prober = LinkProber(config, link, self.client, sends=self._sends, backoff_until=self._backoff_until,
                                 on_failure=self._failed, clock=clock, several_servers=self._replicas)

    # ------------------------------------------------------------------ the agent's side

    def check_server(self, offloaded: Collection[int] = ()) -> offload_pb2.BundleInfo | None:
        """Describe the server (a replica of the target). A digest mismatch is fatal, an
        unreachable server is not (frames run locally until one answers). `offloaded`: the splits
        this agent may send; a server of the same model without some of them (partitioned with
        other --splits) is warned of, as frames sent there at those splits are refused."""
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
        served = {s.split for s in info.splits}
        missing = sorted(k for k in offloaded if k not in served)
        if missing:
            # frames there were refused NOT_FOUND one by one, with no word at start (a replica
            # partitioned with --splits 2,4 among replicas of the whole bundle)
            replica = self.client.described_by or self.address
            log.warning("cloud %s has no tail for split(s) %s of this bundle (it serves %s): an adaptive policy plans "
                        "without them for the rest of the run, a fixed one runs those frames here; serve them on "
                        "every replica, or leave them out of this agent's splits", replica, split_ranges(missing),
                        peer_text(split_ranges(served))[:200])
        return info

    def start(self, callbacks: SessionCallbacks) -> None:
        self._callbacks = callbacks
        self.prober.start(callbacks)

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
        if cause is not None and is_split_not_served(cause.code, cause.details):
            return "cloud does not serve a split this agent sent (waiting to retry)"
        if cause is not None and is_other_bundle(cause.code, cause.details):
            return "cloud runs another bundle (waiting to retry)"
        if cause is not None and cause.code not in UNREACHED_CODES:
            # e.g. RESOURCE_EXHAUSTED: over max_streams_per_agent (drones sharing a certificate)
            return f"cloud refused the stream ({cause.code.name}) (waiting to retry)"
        return "cloud unreachable (waiting to reconnect)"

    def _failed(self, err: RemoteError) -> None:
        with self._lock:
            self._last_error = err

    def _sends(self) -> int:
        with self._lock:
            return self._streams_handed

    def _backoff_until(self) -> float:
        with self._lock:
            return self._retry_at

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
        self.prober.stop()
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

    def set_aside(self, stream: Stream, why: str) -> bool:
        """No new frame on `stream`; those on it may still be answered. The next frame opens a new
        stream, which round_robin places on another replica (no backoff: others may be fine). With
        one server there is no other: the stream is kept until give_up, as before. True when it
        was set aside now."""
        if not (self._replicas and isinstance(stream, InferStream) and stream.accepting):
            return False
        log.info("stream to %s %s: new frames go on a new stream", stream.replica or self.address, why)
        with self._lock:
            self._silent_aside[id(stream)] = stream
        stream.close()
        return True

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
        # a replica on another bundle is backed off from; any other refusal (a tail of this bundle
        # that cannot be loaded: FAILED_PRECONDITION too) is that frame's alone
        other_bundle = is_other_bundle(code, resp.error.message)
        with self._lock:
            self._silent_aside.pop(id(stream), None)  # it answers after all
            self._reached.add(self.address)
            if not other_bundle:
                self._backoff = BACKOFF_START_S  # the link works
        if not other_bundle:
            self._failures.answered()
        if code in MOVE_ON_CODES and stream.accepting:
            # the replica is overloaded or draining: the next frame opens a new stream,
            # which round_robin places on another replica
            log.info("replica %s answered %s: moving to another stream", stream.replica or "?", code.name)
            stream.close()
        elif other_bundle and stream.accepting:
            # it runs another bundle (restarted on a new one, or a rollout under way): every frame
            # sent there would be refused, uplink and battery spent for nothing. Frames run here for
            # a backoff that grows with each such answer, then a new stream (round_robin: perhaps
            # another replica, one still on this bundle) tries again.
            stream.close()
            wait = self._back_off(RemoteError(code, peer_text(resp.error.message)))
            log.info("replica %s %s (%s): frames run here, a new stream in %.1f s", stream.replica or self.address,
                     "does not serve that split" if is_split_not_served(code, resp.error.message) else "runs another bundle",
                     peer_text(resp.error.message)[:200], wait)
        assert self._callbacks is not None
        self._callbacks.answer(stream, resp)

    def _on_stream_end(self, stream: InferStream, error: RemoteError | None) -> None:
        assert self._callbacks is not None
        lost = self._callbacks.stream_ended(stream, error)
        with self._lock:
            silent = self._silent_aside.pop(id(stream), None) is not None
        if silent and lost and (error is None or error.code != grpc.StatusCode.CANCELLED):
            # set aside as silent, then ended by the server with its frames unanswered (a server that
            # takes frames and answers none, but ends the stream we half-closed): a failure, not a
            # clean end - without a backoff every next frame went to it on a new stream
            wait = self._back_off(error)
            self._failures.failed(f"stream to {stream.replica or self.address} ended with {lost} frame(s) unanswered "
                                  f"after answering nothing for frame_deadline_ms; frames run here, a new stream in "
                                  f"{wait:.1f} s")
            return
        if error is None or error.code == grpc.StatusCode.CANCELLED:
            return
        if error.code == grpc.StatusCode.DEADLINE_EXCEEDED and not lost:
            # the server closed a stream we left idle: open a new one when needed, no backoff
            log.debug("idle stream closed by the server: %s", error)
            return
        why = rotation(error)
        if why is not None:  # the frames in flight fell back above; a backoff would run more here
            log.info("stream to %s ended %s; %d frame(s) in flight ran here; a new stream on a new connection",
                     stream.replica or self.address, why, lost)
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
