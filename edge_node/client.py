"""The agent's side of the wire: a channel, unary calls with deadlines, Infer streams."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from splitpoint.errors import RemoteError, peer_text
from splitpoint.security import ClientSecurity
from splitpoint.targets import balanced_options, parse_target
from splitpoint.v1 import offload_pb2, offload_pb2_grpc
from splitpoint.wire_metadata import AGENT_METADATA_KEY, REPLICA_METADATA_KEY

from .renewing_channel import RenewingChannel

log = logging.getLogger(__name__)

#: gRPC's keepalive_timeout_ms, which gRPC 1.85 does not apply: an unanswered ping ends the
#: connection after grpc.http2.ping_timeout_ms, 60 s (see the channel options below)
KEEPALIVE_TIMEOUT_S = 10.0
#: the longest wait between gRPC's own attempts to connect again (its default is 120 s): the
#: agent's backoff (session.py) only decides when to try a new stream, and a stream on a channel
#: still waiting out gRPC's backoff fails at once - after a link loss of 4 minutes the first
#: frame was offloaded 22 s after the link came back, up to 2 minutes after longer ones
RECONNECT_MAX_S = 5.0
#: how often a Describe or a probe in progress looks whether it was interrupted: a blocking
#: call would hold SIGTERM's handler until its deadline (connect_timeout_s, 27 s seen)
INTERRUPT_POLL_S = 0.1


class Unreadable:
    """What a tolerant deserializer (`readable_or_not`) gives for bytes that are no message of
    the expected type: the call that got it fails with `error()`, a plain RemoteError."""

    def __init__(self, expected: str, size: int, why: str):
        self.expected, self.size, self.why = expected, size, why

    def error(self) -> RemoteError:
        return RemoteError(grpc.StatusCode.INTERNAL,
                           f"the server's answer ({self.size} bytes) is not a splitpoint.v1.{self.expected} "
                           f"({self.why}): a server of another version, or another service on that address")


def readable_or_not(message: Any) -> Callable[[bytes], Any]:
    """A response deserializer for `message` (a protobuf class) that never raises: bytes that
    do not parse become an `Unreadable`. gRPC's own logs each failure at ERROR with a Python
    traceback ("Exception deserializing message!") - in the agent's output for every answer of
    a broken or foreign server - and ends the call with the bare INTERNAL "Exception
    deserializing response!"."""

    def deserialize(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as err:
            return Unreadable(message.DESCRIPTOR.name, len(data), str(err))

    return deserialize


def offload_stub(channel: grpc.Channel) -> offload_pb2_grpc.OffloadStub:
    """The generated stub, its calls' answers read by `readable_or_not`."""
    stub = offload_pb2_grpc.OffloadStub(channel)
    service = "/splitpoint.v1.Offload/"
    stub.Infer = channel.stream_stream(service + "Infer", request_serializer=offload_pb2.InferRequest.SerializeToString,
                                       response_deserializer=readable_or_not(offload_pb2.InferResponse),
                                       _registered_method=True)
    stub.Describe = channel.unary_unary(service + "Describe",
                                        request_serializer=offload_pb2.DescribeRequest.SerializeToString,
                                        response_deserializer=readable_or_not(offload_pb2.BundleInfo),
                                        _registered_method=True)
    stub.Probe = channel.unary_unary(service + "Probe", request_serializer=offload_pb2.ProbeRequest.SerializeToString,
                                     response_deserializer=readable_or_not(offload_pb2.ProbeResponse),
                                     _registered_method=True)
    return stub


class Interrupted(RemoteError):
    """A call given up because the agent was told to stop (`OffloadClient.interrupted`)."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.CANCELLED, "given up: the agent was told to stop")


class OffloadClient:
    """One channel to a server, or to every replica of a target (splitpoint/targets.py: streams
    spread with round_robin, replicas not SERVING skipped). Every call has a deadline; failures
    are RemoteError."""

    def __init__(self, address: str, max_message_bytes: int = 32 << 20, timeout_s: float = 5.0,
                 security: ClientSecurity | None = None, keepalive_s: float = 20.0, agent_name: str = ""):
        self.address = address
        self.timeout_s = timeout_s
        #: sent with every Infer stream: the server's fair share counts per agent
        self.metadata = [(AGENT_METADATA_KEY, agent_name)] if agent_name else []
        security = security or ClientSecurity(insecure=True)
        #: the channel new calls go on: built again when the TLS files are renewed
        self.channels = RenewingChannel(
            security,
            parse_target("cloud", address),
            [
                # one connection per agent (a drone has its own), even when a process runs several
                *balanced_options(max_message_bytes, own_connection=True),
                # Notice a dead link on an idle stream within keepalive_s + 60 s instead of hours:
                # gRPC 1.85 waits for a ping's ack for grpc.http2.ping_timeout_ms (60 s), not for
                # keepalive_timeout_ms (measured: 62 s with keepalive 2 s against a SIGSTOPped
                # server). Left at 60 s: a ping sent while a large cut is still going up on a
                # slow uplink waits behind up to a stream window (1 MiB: 8 s at 1 Mbps) of it,
                # and a shorter timeout would cut a live upload; a frame on a dead link is
                # hedged and its stream given up by the agent first (session.give_up).
                # The server must permit this rate: it accepts a ping every 5 s without data
                # (cloud_server/server.py, PERMITTED_PING_INTERVAL_MS); pinging faster than the
                # server permits gets the connection closed (GOAWAY too_many_pings).
                ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
                ("grpc.keepalive_permit_without_calls", 0),  # only while a stream is open
                # No cap on pings between two frames: a frame every 40 s still has its link checked.
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.max_reconnect_backoff_ms", int(RECONNECT_MAX_S * 1000)),
            ],
        )
        #: set (from a signal handler too: it only sets a flag) to give up Describe and probes at
        #: once; frames' streams are not touched (they get the grace period)
        self.interrupted = threading.Event()
        #: the replica that answered the last Describe (its splitpoint-replica metadata; "" unknown)
        self.described_by = ""

    @property
    def channel(self) -> grpc.Channel:
        """The channel new calls go on now."""
        return self.channels.current

    def _unary(self, name: str, request: Any, timeout_s: float) -> Any:
        """The call `name`(request) with its deadline, waited for in steps so that `interrupted` ends it."""
        return self._call(name, request, timeout_s)[0]

    def _call(self, name: str, request: Any, timeout_s: float) -> tuple[Any, Any]:
        """(answer, the finished call) of `_unary`: the call holds the server's initial metadata."""
        if self.interrupted.is_set():
            raise Interrupted
        channel = self.channels.acquire()
        try:
            future = getattr(offload_stub(channel), name).future(request, timeout=timeout_s)
            return self._wait(future), future
        finally:
            self.channels.release(channel)

    def _wait(self, future: Any) -> Any:
        while True:
            try:
                answer = future.result(timeout=INTERRUPT_POLL_S)
            except grpc.FutureTimeoutError:
                if self.interrupted.is_set():
                    future.cancel()
                    raise Interrupted from None
                continue  # not answered yet
            except grpc.FutureCancelledError:
                raise Interrupted from None
            except grpc.RpcError as err:
                raise RemoteError.from_rpc_error(err) from None
            if isinstance(answer, Unreadable):
                raise answer.error()
            return answer

    def describe(self, timeout_s: float | None = None) -> offload_pb2.BundleInfo:
        info, call = self._call("Describe", offload_pb2.DescribeRequest(), timeout_s or self.timeout_s)
        # which replica of the target answered: the one to fix when its bundle is not this agent's
        self.described_by = peer_text(str(dict(call.initial_metadata() or ()).get(REPLICA_METADATA_KEY, "")))
        return info

    def probe(self, payload_bytes: int = 0, response_bytes: int = 0, timeout_s: float | None = None) -> tuple[float, offload_pb2.ProbeResponse]:
        """(round-trip ms, response) for a probe carrying payload_bytes up and response_bytes down."""
        req = offload_pb2.ProbeRequest(payload=b"\0" * payload_bytes, response_bytes=response_bytes)
        t0 = time.perf_counter()
        resp = self._unary("Probe", req, timeout_s or self.timeout_s)
        rtt_ms = (time.perf_counter() - t0) * 1000
        # The link estimate takes the server's time off the round trip: NaN read a 48 KiB probe as
        # 4800 Mbps and restarted the estimate there (every frame then sent to the cloud); the
        # server's time is part of the round trip, so it is a number from 0 to that.
        if not 0 <= resp.server_time_ms <= rtt_ms:  # NaN fails too
            raise RemoteError(grpc.StatusCode.INTERNAL, f"the probe's answer says the server took "
                                                        f"{resp.server_time_ms!r} ms of a {rtt_ms:.1f} ms round trip")
        return rtt_ms, resp

    def open_stream(self, lifetime_s: float, on_response: Callable[[InferStream, offload_pb2.InferResponse], None],
                    on_end: Callable[[InferStream, RemoteError | None], None]) -> InferStream:
        channel = self.channels.acquire()

        def ended(stream: InferStream, error: RemoteError | None) -> None:
            self.channels.release(channel)  # a replaced channel closes with its last stream
            on_end(stream, error)

        try:
            return InferStream(offload_stub(channel), lifetime_s, on_response, ended, self.metadata)
        except BaseException:
            self.channels.release(channel)
            raise

    def close(self) -> None:
        self.channels.close()


class CloudLink(Protocol):
    """What the session (edge_node/session.py) asks of its client: OffloadClient, or NoLink."""

    address: str
    #: set (from a signal handler too) to give up Describe and probes at once
    interrupted: threading.Event
    #: the replica that answered the last Describe ("" unknown)
    described_by: str

    def describe(self, timeout_s: float | None = None) -> offload_pb2.BundleInfo: ...

    def probe(self, payload_bytes: int = 0, response_bytes: int = 0,
              timeout_s: float | None = None) -> tuple[float, offload_pb2.ProbeResponse]: ...

    def open_stream(self, lifetime_s: float, on_response: Callable[[InferStream, offload_pb2.InferResponse], None],
                    on_end: Callable[[InferStream, RemoteError | None], None]) -> InferStream: ...

    def close(self) -> None: ...


class NoLink:
    """The client of an agent that contacts no server: a fixed policy at k = K, not require_cloud,
    and neither TLS (tls_ca) nor plaintext (insecure) chosen. No channel is built - there are no
    credentials to build one with, and a plaintext one is what nobody asked for. No call is made
    (such an agent describes and probes nothing, and a reload that would offload is refused:
    EdgeConfig.check_transport); one that were would fail as an unreachable server does."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.interrupted = threading.Event()
        self.described_by = ""

    def _refuse(self) -> RemoteError:
        return RemoteError(grpc.StatusCode.UNAVAILABLE, "no cloud link: this agent runs every frame on the edge "
                                                        "and was given neither tls_ca nor insecure")

    def describe(self, timeout_s: float | None = None) -> offload_pb2.BundleInfo:
        raise self._refuse()

    def probe(self, payload_bytes: int = 0, response_bytes: int = 0,
              timeout_s: float | None = None) -> tuple[float, offload_pb2.ProbeResponse]:
        raise self._refuse()

    def open_stream(self, lifetime_s: float, on_response: Callable[[InferStream, offload_pb2.InferResponse], None],
                    on_end: Callable[[InferStream, RemoteError | None], None]) -> InferStream:
        raise self._refuse()

    def close(self) -> None:
        pass


class InferStream:
    """One Infer call: `send()` queues requests, a thread hands responses to `on_response`.

    `on_end(stream, error)` runs once when the call ends (error None for a clean
    end). The call's deadline is its lifetime plus a margin; the agent replaces
    streams before they get old, so the deadline only ends a stream that hangs.
    """

    _ids = iter(range(1, 1 << 62))

    def __init__(self, stub: offload_pb2_grpc.OffloadStub, lifetime_s: float,
                 on_response: Callable[[InferStream, offload_pb2.InferResponse], None],
                 on_end: Callable[[InferStream, RemoteError | None], None],
                 metadata: list[tuple[str, str]] | None = None):
        self.id = next(self._ids)
        #: the replica that took the stream (its initial metadata), once known
        self.replica = ""
        #: why the call ended, once it has (None while open, or after a clean end)
        self.end_error: RemoteError | None = None
        self.opened = time.monotonic()
        self.lifetime_s = lifetime_s
        self._requests: queue.Queue = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self.ended = threading.Event()
        self._call = stub.Infer(self._iter_requests(), timeout=lifetime_s * 1.5 + 5, metadata=metadata or None)
        self._thread = threading.Thread(target=self._receive, args=(on_response, on_end), name=f"infer-stream-{self.id}", daemon=True)
        self._thread.start()

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.opened

    @property
    def accepting(self) -> bool:
        return not self._closed and not self.ended.is_set()

    def _iter_requests(self) -> Iterator[offload_pb2.InferRequest]:
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def send(self, req: offload_pb2.InferRequest) -> bool:
        with self._lock:
            if not self.accepting:
                return False
            self._requests.put(req)
            return True

    def close(self) -> None:
        """Half-close: no more requests; responses still arrive."""
        with self._lock:
            self._end_requests()

    def _end_requests(self) -> None:
        """Under the lock: no more requests; the request iterator ends (once)."""
        if not self._closed:
            self._closed = True
            self._requests.put(None)

    def cancel(self) -> None:
        self.close()
        self._call.cancel()

    def _receive(self, on_response: Callable, on_end: Callable) -> None:
        error: RemoteError | None = None
        try:
            # in every cloud record and log line about the stream: the server's words, cut short
            self.replica = peer_text(str(dict(self._call.initial_metadata() or ()).get(REPLICA_METADATA_KEY, "")))
            for resp in self._call:
                if isinstance(resp, Unreadable):  # no InferResponse: nothing more on this stream is trusted
                    error = resp.error()
                    self._call.cancel()
                    break
                on_response(self, resp)
        except grpc.RpcError as err:
            error = RemoteError.from_rpc_error(err)
        except Exception as exc:  # a bug in a callback must still end the stream visibly
            log.exception("stream %d: response handling failed", self.id)
            error = RemoteError(grpc.StatusCode.INTERNAL, f"response handling failed: {exc!r}")
        finally:
            with self._lock:
                self.end_error = error
                # gRPC's thread reading the requests waits in _iter_requests until it gets the
                # end: a call that ended with an error (the server gone, a reset) kept that
                # thread, its queue and this stream for the rest of the run
                self._end_requests()
            self.ended.set()
            on_end(self, error)
