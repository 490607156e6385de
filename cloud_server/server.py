"""The cloud server's lifecycle: build, start, drain, stop.

`CloudServer(config).start()` binds (port 0 picks a free port; `.port` says
which), loads and warms the tails, and serves Offload plus grpc.health.v1.
`stop()` is idempotent and graceful: health goes NOT_SERVING and open health
Watch streams end, new frames are refused with UNAVAILABLE, frames already
accepted finish (within the grace period), then the gRPC server stops.
`splitpoint cloud` (splitpoint/cli_cloud.py) runs one and calls `stop()` on SIGTERM/SIGINT.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Callable
from concurrent import futures
from functools import partial
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from splitpoint import native_logs
from splitpoint.bundle import load_bundle
from splitpoint.config import format_address, parse_address
from splitpoint.errors import SplitpointError
from splitpoint.metrics import serve_metrics
from splitpoint.runtime.tails import TailPool, tensorflow_devices
from splitpoint.v1 import offload_pb2
from splitpoint.wire_metadata import PERMITTED_PING_INTERVAL_MS

from .admission import InflightBytes, StreamAdmission
from .config import CloudConfig
from .executor import TailExecutor
from .health import DrainingHealthServicer
from .memory import MemoryTrimmer
from .servicer import CloudMetrics, OffloadServicer, add_to_server

log = logging.getLogger(__name__)

SERVICE_NAME = offload_pb2.DESCRIPTOR.services_by_name["Offload"].full_name
#: gRPC threads beyond those streams can hold: health checks, Describe, Probe and refusals
#: always find one (an Infer stream holds a thread for its life, and so does an agent's
#: health Watch, which client-side health checking keeps open)
CONTROL_THREADS = 32
#: how long a client may leave the server's keepalive ping unanswered before its connection is
#: closed (keepalive_s, when shorter, is the timeout: a ping is not outlived by the next)
PEER_PING_TIMEOUT_S = 10.0

#: PERMITTED_PING_INTERVAL_MS (splitpoint/wire_metadata.py): the shortest ping
#: interval without data the server accepts. Agents ping after keepalive_s (default 20 s, at
#: least this) without traffic, so a frame every 40 s keeps its stream.


#: gRPC's own line when a port cannot be bound, and the system's reason in it
_ADD_PORT_FAILED = re.compile(r"Failed to add port")
_BIND_REASON = re.compile(r"Error in bind for address '[^']*': ([^)]*)\)")


def _bind(add_port: Callable[[], int], key: str, listen: str) -> int:
    """The port gRPC bound. When it could not (older grpcio returns 0, newer raises
    RuntimeError('Failed to bind ...')): one SplitpointError naming `key` and the system's
    reason, which gRPC writes to stderr natively ("E1206 ... add_port.cc:83] Failed to add
    port ... Address already in use") - taken from there, not printed above our own line."""
    said: list[str] = []
    with native_logs.filtered_stderr(taken=_ADD_PORT_FAILED, into=said):
        try:
            port = add_port()
        except RuntimeError:
            port = 0
    if port == 0:
        reasons = [m.group(1) for line in said if (m := _BIND_REASON.search(line))]
        raise SplitpointError(f'{key} = "{listen}": cannot bind ({reasons[0] if reasons else "address in use or not local"})')
    return port


def check_resolves(key: str, listen: str) -> None:
    """SplitpointError naming `key` when its host does not resolve: gRPC says only that it could not
    bind ('address in use or not local' for nosuchhost.invalid or 256.1.1.1), and only after the
    tails have loaded. Exit 1, as the metrics port says it: a name may resolve when DNS is back."""
    host, port = parse_address(key, listen)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise SplitpointError(f'{key} = "{listen}": cannot listen there: {host} does not resolve '
                              f"({err.strerror or err})") from None


def replica_name(listen: str, port: int) -> str:
    """How a server names itself to agents (each stream's `splitpoint-replica` metadata, the
    `replica` of their records, loadtest's per-replica share): its listen address, unless that is
    a wildcard (0.0.0.0, [::]: every pod of deployment.yaml), which every replica shares - then its
    host name, on Kubernetes the pod's name."""
    host, _ = parse_address("listen", listen)
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name: it names this server
        wildcard = False
    return format_address(socket.gethostname() if wildcard else host, port)


class CloudServer:
    def __init__(self, config: CloudConfig, stopping: Callable[[], bool] = lambda: False):
        """`stopping`: a stop came while the server starts (splitpoint/cli_cloud.py): the tails
        still to load are left, and the caller does not start it."""
        self.config = config
        config.security.check_files()  # a bad certificate named now, not as 'Failed to bind' after the tails load
        for key in ("listen", "health_listen", "metrics_listen"):  # as early, for a host that does not resolve
            if getattr(config, key):
                check_resolves(key, getattr(config, key))
        self.bundle = load_bundle(config.bundle, side="cloud")
        self.registry = CollectorRegistry()
        self.metrics = CloudMetrics(self.registry)
        devices = tensorflow_devices()
        log.info("TensorFlow devices: %s", ", ".join(devices))
        self.tails = TailPool(self.bundle, budget=config.warm_tails, splits=config.splits, stopping=stopping)
        self._trimmer = MemoryTrimmer()
        self.executor = TailExecutor(self.tails, config.workers, config.max_batch, config.max_queue,
                                     config.max_queue_per_agent)
        self.servicer = OffloadServicer(
            self.bundle.manifest, self.executor,
            max_tensor_bytes=config.max_message_bytes, max_message_bytes=config.max_message_bytes,
            metrics=self.metrics, stream_idle_timeout_s=config.stream_idle_timeout_s,
            admission=StreamAdmission(config.max_streams, config.max_streams_per_agent),
            inflight=InflightBytes(int(config.max_inflight_mb * 1024 * 1024)),
            on_stream_end=self._trimmer.stream_ended,
        )
        self.health = DrainingHealthServicer()
        self._server: grpc.Server | None = None
        self._health_server: grpc.Server | None = None
        self.health_port: int | None = None
        self._metrics_server: Any = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def address(self) -> str:
        host, _ = parse_address("listen", self.config.listen)
        return format_address(host, self.port or 0)

    def start(self) -> CloudServer:
        cfg = self.config
        options = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # A fixed receive window per stream instead of one grown by BDP probing: a stream
            # that is not read (its agent over its backlog, or a client that never reads its
            # answers) then holds at most this much in gRPC's buffers. One stream's uplink is
            # bounded by window / RTT: 1 MiB at 150 ms is 56 Mbit/s, above a drone's uplink.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", int(cfg.stream_window_kb * 1024)),
            # Keepalive: accept agents' pings (also between streams) up to one every
            # PERMITTED_PING_INTERVAL_MS; gRPC's default (5 min) closes idle agents' streams.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", PERMITTED_PING_INTERVAL_MS),
            ("grpc.http2.min_ping_interval_without_data_ms", PERMITTED_PING_INTERVAL_MS),
            ("grpc.http2.max_ping_strikes", 2),
        ]
        if cfg.keepalive_s > 0:
            # The server's own pings: a client gone without a word (a drone's power cut, its link
            # lost: no FIN) leaves an ESTABLISHED connection, its fd and its buffers, which gRPC's
            # default pings (2 h) were the only thing to close; a fleet of short flights piles them
            # up. Clients accept any rate of server pings; ours ping once a minute by default.
            # gRPC 1.85 waits for the ack for ping_timeout_ms (60 s by default), not keepalive_timeout_ms
            ack_ms = int(min(cfg.keepalive_s, PEER_PING_TIMEOUT_S) * 1000)
            options += [("grpc.keepalive_time_ms", int(cfg.keepalive_s * 1000)),
                        ("grpc.keepalive_timeout_ms", ack_ms), ("grpc.http2.ping_timeout_ms", ack_ms)]
        if cfg.max_connection_age_s > 0:
            # a scaled-up fleet is found by clients only when they reconnect and re-resolve
            options += [("grpc.max_connection_age_ms", int(cfg.max_connection_age_s * 1000)),
                        ("grpc.max_connection_age_grace_ms", int(cfg.max_connection_age_grace_s * 1000))]
        # Infer streams are admitted by the servicer (max_streams), not by gRPC's
        # maximum_concurrent_rpcs, which would count health checks with them.
        pool = futures.ThreadPoolExecutor(max_workers=2 * cfg.max_streams + CONTROL_THREADS, thread_name_prefix="grpc")
        security = cfg.security
        server = grpc.server(pool, options=options, interceptors=security.interceptors())
        add_to_server(self.servicer, server)  # unparseable bytes: INVALID_ARGUMENT, no traceback
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        certs = security.certificates()
        if certs is not None:
            for key in certs.served_until:  # read at scrape time: a renewed certificate moves it
                self.metrics.certificate_expiry.labels(key).set_function(partial(certs.ends, key))
        creds = certs.credentials() if certs is not None else None
        if creds is None:
            log.warning("*** PLAINTEXT: serving without TLS (insecure = true): anyone on the network can read "
                        "and send frames. Use tls_cert/tls_key (and tls_client_ca) outside development. ***")
            port = _bind(lambda: server.add_insecure_port(cfg.listen), "listen", cfg.listen)
        else:
            port = _bind(lambda: server.add_secure_port(cfg.listen, creds), "listen", cfg.listen)
        try:
            # every port bound before the server serves: metrics_listen in use stopped a server that
            # had already answered SERVING and taken frames (and, under systemd, did so at each restart)
            if cfg.health_listen:
                self._health_server, self.health_port = self._start_health_server(cfg.health_listen)
            served = serve_metrics(cfg.metrics_listen, self.registry)
        except SplitpointError:
            if self._health_server is not None:
                self._health_server.stop(None)
                self._health_server = None
            raise
        if served:
            self._metrics_server, self.metrics_port = served
        server.start()
        self._trimmer.start()
        self._server, self.port = server, port
        self.servicer.replica = replica_name(cfg.listen, port)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s (%s) on %s with %s%s", self.bundle.manifest.model_name,
                 self.bundle.manifest.model_digest[:19], self.address, security.mode,
                 " and a bearer token" if cfg.token_file else "")
        return self

    def _start_health_server(self, listen: str) -> tuple[grpc.Server, int]:
        """grpc.health.v1 alone, in plaintext, for probes that cannot speak TLS (kubelet's).
        It shares the HealthServicer, so it says NOT_SERVING as soon as a drain starts.
        Without SO_REUSEPORT (gRPC sets it by default), as for listen: a second server on the same
        port is refused (exit 1) instead of sharing it, and a dead server's probes answered by it."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="health"),
                             options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        port = _bind(lambda: server.add_insecure_port(listen), "health_listen", listen)
        server.start()
        host, _ = parse_address("health_listen", listen)
        log.info("health checks (grpc.health.v1 only, plaintext) on %s", format_address(host, port))
        return server, port

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop. Safe to call twice and from a signal handler's thread."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.config.grace_s if grace is None else grace
            log.info("shutting down: finishing in-flight frames (grace %.1fs)", grace)
            self.health.enter_graceful_shutdown()
            self.health.end_watches()  # an open Watch would hold the gRPC server's stop for all of grace
            self.servicer.begin_drain()
            self.executor.close(timeout=grace)
            if self._server is not None:
                self._server.stop(grace).wait()
            if self._health_server is not None:
                self._health_server.stop(0).wait()  # after the main server: probes see NOT_SERVING while it drains
            if self._metrics_server is not None:
                self._metrics_server.shutdown()
            self._trimmer.stop()
            self._stopped.set()
            log.info("stopped")

    def wait(self) -> None:
        self._stopped.wait()

    def __enter__(self) -> CloudServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
