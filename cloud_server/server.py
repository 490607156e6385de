"""The cloud server's lifecycle: build, start, drain, stop.

`CloudServer(config).start()` binds (port 0 picks a free port; `.port` says
which), loads and warms the tails, and serves Offload plus grpc.health.v1.
`stop()` is idempotent and graceful: health goes NOT_SERVING, new frames are
refused with UNAVAILABLE, frames already accepted finish (within the grace
period), then the gRPC server stops.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from splitpoint.bundle import load_bundle
from splitpoint.config import parse_address
from splitpoint.errors import SplitpointError
from splitpoint.metrics import serve_metrics
from splitpoint.runtime.tails import TailPool, tensorflow_devices
from splitpoint.v1 import offload_pb2

from .config import CloudConfig
from .executor import TailExecutor
from .servicer import CloudMetrics, OffloadServicer, add_to_server

log = logging.getLogger(__name__)

SERVICE_NAME = offload_pb2.DESCRIPTOR.services_by_name["Offload"].full_name

#: the shortest interval between two client keepalive pings with no data between them that the
#: server accepts; faster pingers get GOAWAY too_many_pings. Agents ping after keepalive_s
#: (default 20 s, at least this) without traffic, so a frame every 40 s keeps its stream.
PERMITTED_PING_INTERVAL_MS = 5_000


class CloudServer:
    def __init__(self, config: CloudConfig):
        self.config = config
        self.bundle = load_bundle(config.bundle, side="cloud")
        self.registry = CollectorRegistry()
        self.metrics = CloudMetrics(self.registry)
        devices = tensorflow_devices()
        log.info("TensorFlow devices: %s", ", ".join(devices))
        self.tails = TailPool(self.bundle, budget=config.warm_tails)
        self.executor = TailExecutor(self.tails, config.workers, config.max_batch, config.max_queue)
        self.servicer = OffloadServicer(
            self.bundle.manifest, self.executor,
            max_tensor_bytes=config.max_message_bytes, max_message_bytes=config.max_message_bytes,
            metrics=self.metrics, stream_idle_timeout_s=config.stream_idle_timeout_s,
        )
        self.health = health.HealthServicer()
        self._server: grpc.Server | None = None
        self._metrics_server: Any = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def address(self) -> str:
        host, _ = parse_address("listen", self.config.listen)
        return f"{host}:{self.port}"

    def start(self) -> CloudServer:
        cfg = self.config
        options = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Keepalive: accept agents' pings (also between streams) up to one every
            # PERMITTED_PING_INTERVAL_MS; gRPC's default (5 min) closes idle agents' streams.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", PERMITTED_PING_INTERVAL_MS),
            ("grpc.http2.min_ping_interval_without_data_ms", PERMITTED_PING_INTERVAL_MS),
            ("grpc.http2.max_ping_strikes", 2),
        ]
        # A streaming RPC holds a thread for its life; readers take one more each.
        pool = futures.ThreadPoolExecutor(max_workers=2 * cfg.max_streams + 4, thread_name_prefix="grpc")
        security = cfg.security
        server = grpc.server(pool, options=options, maximum_concurrent_rpcs=cfg.max_streams,
                             interceptors=security.interceptors())
        add_to_server(self.servicer, server)  # unparseable bytes: INVALID_ARGUMENT, no traceback
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        creds = security.credentials()
        if creds is None:
            log.warning("*** PLAINTEXT: serving without TLS (insecure = true): anyone on the network can read "
                        "and send frames. Use tls_cert/tls_key (and tls_client_ca) outside development. ***")
            port = server.add_insecure_port(cfg.listen)
        else:
            port = server.add_secure_port(cfg.listen, creds)
        if port == 0:
            raise SplitpointError(f"listen = {cfg.listen!r}: cannot bind (address in use or not local)")
        server.start()
        self._server, self.port = server, port
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        served = serve_metrics(cfg.metrics_listen, self.registry)
        if served:
            self._metrics_server, self.metrics_port = served
        log.info("serving %s (%s) on %s with %s%s", self.bundle.manifest.model_name,
                 self.bundle.manifest.model_digest[:19], self.address, security.mode,
                 " and a bearer token" if cfg.token_file else "")
        return self

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop. Safe to call twice and from a signal handler's thread."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.config.grace_s if grace is None else grace
            log.info("shutting down: finishing in-flight frames (grace %.1fs)", grace)
            self.health.enter_graceful_shutdown()
            self.servicer.begin_drain()
            self.executor.close(timeout=grace)
            if self._server is not None:
                self._server.stop(grace).wait()
            if self._metrics_server is not None:
                self._metrics_server.shutdown()
            self._stopped.set()
            log.info("stopped")

    def wait(self) -> None:
        self._stopped.wait()

    def __enter__(self) -> CloudServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(config: CloudConfig, ready: Any = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code. Prints the bound address on stdout."""
    server = CloudServer(config).start()
    print(f"splitpoint cloud listening on {server.address}", flush=True)
    if server.metrics_port:
        print(f"metrics on http://{parse_address('metrics_listen', config.metrics_listen)[0]}:{server.metrics_port}/metrics", flush=True)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        threading.Thread(target=server.stop, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if ready is not None:
        ready(server)
    while not server._stopped.wait(0.5):
        pass
    sys.stdout.flush()
    return 0
