"""`splitpoint cloud` configuration (TOML keys = flags)."""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass

from splitpoint import wire_metadata
from splitpoint.config import option, parse_address
from splitpoint.errors import ConfigError
from splitpoint.security import ServerSecurity

MAX_STREAM_WINDOW_KB = 2**31 // 1024 - 1  # gRPC takes the window in bytes, a 32-bit int
#: workers start as threads at once: 30000 was a 'can't start new thread' traceback 50 s in, and a
#: 20-digit count got the server OOM-killed. Tails are batched and TensorFlow spreads each batch over
#: the cores itself, so past the core count more workers add memory, not throughput.
MAX_WORKERS = 256
#: the server's counts of frames and streams: far past any deployment, yet a typo such as 10**12
#: is refused at start instead of sizing the gRPC thread pool (two threads a stream) for it, or
#: letting one batch or queue hold frames until the memory is gone. (key, most, what it counts)
MAX_BATCH = 1024
MAX_QUEUE = 100_000
MAX_STREAMS = 10_000
_COUNT_BOUNDS = (("max_batch", MAX_BATCH, "frames run as one batch"),
                 ("max_queue", MAX_QUEUE, "frames waiting"),
                 ("max_queue_per_agent", MAX_QUEUE, "frames waiting"),
                 ("max_streams", MAX_STREAMS, "Infer streams; the gRPC pool has two threads for each"),
                 ("max_streams_per_agent", MAX_STREAMS, "Infer streams"))

@dataclass
class CloudConfig:
    bundle: str = option(help="bundle directory made by `splitpoint partition`", group="serving")
    listen: str = option("127.0.0.1:50051", "HOST:PORT to serve on; port 0 picks a free port and prints it", group="serving")
    workers: int = option(2, "threads running tails (1 to 256)", group="capacity")
    max_batch: int = option(8, "frames of the same split run together when they queue up (1 to 1024)", group="capacity")
    max_queue: int = option(256, "frames waiting for a worker before new ones get RESOURCE_EXHAUSTED (1 to 100000)",
                            group="capacity")
    max_streams: int = option(256, "Infer streams open at once, over all agents; more get RESOURCE_EXHAUSTED (health and "
                                   "control calls are never counted; 1 to 10000)", group="capacity")
    max_streams_per_agent: int = option(4, "Infer streams one agent (client certificate, `splitpoint-agent` name, "
                                           "or connection) may hold open (1 to 10000)", group="capacity")
    max_queue_per_agent: int = option(16, "frames of one agent waiting for a worker (its fair share); more get "
                                          "RESOURCE_EXHAUSTED (1 to 100000)", group="capacity")
    max_inflight_mb: float = option(256.0, "request bytes accepted but not yet computed, over all streams, MiB; "
                                           "past it streams are read no further until frames finish", group="capacity")
    stream_window_kb: int = option(1024, "HTTP/2 receive window of each stream, KiB: what an unread stream may hold "
                                         "in buffers; one stream's uplink is at most window / RTT", group="capacity")
    max_connection_age_s: float = option(0.0, "close each client connection after this long (GOAWAY; its streams get "
                                              "max_connection_age_grace_s to finish), so clients re-resolve a DNS "
                                              "target and find new replicas; 0 = never, else at least 1", group="capacity")
    max_connection_age_grace_s: float = option(
        330.0, "how long the streams of a connection closed for its age may still run: longer than the agents' "
               "stream_lifetime_s (300 s), each stream then ends as the agent replaces it and no frame is cut off",
        group="capacity")
    warm_tails: int = option(0, "tails kept loaded (least recently used evicted); 0 keeps all", group="serving")
    splits: list[int] = option(default_factory=list, help="serve only these splits (e.g. 3,7): only their tails are "
                               "loaded, frames for others get NOT_FOUND; empty serves every split", group="serving")
    max_message_mb: float = option(32.0, "largest request accepted, MiB (RESOURCE_EXHAUSTED above)", group="capacity")
    tls_cert: str = option("", "server certificate (PEM) for TLS", group="security")
    tls_key: str = option("", "private key (PEM) of tls_cert", group="security")
    tls_client_ca: str = option("", "CA (PEM) that signs client certificates: set it for mutual TLS", group="security")
    token_file: str = option("", "file holding the bearer token every call must carry", group="security")
    insecure: bool = option(False, "serve plaintext without TLS (development only; the server warns loudly)", group="security")
    allow_plaintext_token: bool = option(
        False, "accept token_file's bearer token over plaintext (insecure); refused without this, as anyone on "
               "the network can read the token (development only; the server warns loudly)", group="security")
    grace_s: float = option(10.0, "on SIGTERM/SIGINT, seconds in-flight frames get to finish", group="capacity")
    health_listen: str = option("", "HOST:PORT serving only grpc.health.v1 in plaintext, for probes that cannot "
                                    "speak TLS (Kubernetes gRPC probes); empty = off", group="serving")
    metrics_listen: str = option("", "HOST:PORT for Prometheus /metrics; empty = off", group="output")
    stream_idle_timeout_s: float = option(
        120.0, "an Infer stream with nothing in flight and no frame for this long ends with DEADLINE_EXCEEDED; 0 = never", group="capacity")
    keepalive_s: float = option(
        60.0, "ping each client connection after this long without traffic; one that does not answer within "
              "min(keepalive_s, 10) s is closed, so a drone that vanished (power cut, link lost) frees its "
              "connection then, not after gRPC's 2 h; 0 = gRPC's 2 h, else at least 1", group="capacity")
    log_level: str = option("info", "logging level", choices=("debug", "info", "warning", "error"), group="output")

    @property
    def security(self) -> ServerSecurity:
        return ServerSecurity(self.tls_cert, self.tls_key, self.tls_client_ca, self.token_file, self.insecure,
                              self.allow_plaintext_token)

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)

    def validate(self) -> None:
        _check_distinct_ports([(key, getattr(self, key)) for key in ("listen", "health_listen", "metrics_listen")
                               if getattr(self, key) or key == "listen"])
        for key in ("workers", "max_batch", "max_queue", "max_streams", "max_streams_per_agent", "max_queue_per_agent",
                    "stream_window_kb"):
            if getattr(self, key) < 1:
                raise ConfigError(key, getattr(self, key), "must be at least 1")
        if self.workers > MAX_WORKERS:
            raise ConfigError("workers", self.workers, f"must be at most {MAX_WORKERS} (threads running tails; "
                                                       "about the CPU cores or GPUs is enough)")
        for key, most, what in _COUNT_BOUNDS:
            if getattr(self, key) > most:
                raise ConfigError(key, getattr(self, key), f"must be at most {most} ({what})")
        if self.stream_window_kb > MAX_STREAM_WINDOW_KB:  # 2097152 was an OverflowError once the tails had loaded
            raise ConfigError("stream_window_kb", self.stream_window_kb, f"must be at most {MAX_STREAM_WINDOW_KB} (2 GiB)")
        bad = [k for k in self.splits if k < 0]
        if bad:
            raise ConfigError("splits", bad, "split numbers are >= 0")
        if self.warm_tails < 0:
            raise ConfigError("warm_tails", self.warm_tails, "must be >= 0 (0 keeps all tails warm)")
        if not 0.001 <= self.max_message_mb <= wire_metadata.MAX_MESSAGE_MB:
            raise ConfigError("max_message_mb", self.max_message_mb, f"must be between 0.001 and {wire_metadata.MAX_MESSAGE_MB}")
        if not (math.isfinite(self.stream_idle_timeout_s) and self.stream_idle_timeout_s >= 0):
            raise ConfigError("stream_idle_timeout_s", self.stream_idle_timeout_s, "must be >= 0 and finite (0 = never)")
        if not (math.isfinite(self.keepalive_s) and (self.keepalive_s == 0 or self.keepalive_s >= 1)):
            raise ConfigError("keepalive_s", self.keepalive_s, "must be 0 (gRPC's 2 h) or at least 1 s")
        if not (math.isfinite(self.max_inflight_mb) and self.max_inflight_mb > 0):
            raise ConfigError("max_inflight_mb", self.max_inflight_mb, "must be > 0")
        if not (math.isfinite(self.max_connection_age_s) and self.max_connection_age_s >= 0):
            raise ConfigError("max_connection_age_s", self.max_connection_age_s, "must be >= 0 and finite (0 = never)")
        if 0 < self.max_connection_age_s < 1:
            # it exists so that clients re-resolve now and then (docs/scaling.md); below 1 ms it was 0 ms
            # to gRPC, and under a second a connection closes before an agent's handshake, Describe and
            # first frames are through: every agent reconnecting all the time, as for no server at all
            raise ConfigError("max_connection_age_s", self.max_connection_age_s,
                              "must be 0 (never) or at least 1 s (the deployment's ConfigMap uses 600)")
        if not (math.isfinite(self.max_connection_age_grace_s) and self.max_connection_age_grace_s >= 1):
            raise ConfigError("max_connection_age_grace_s", self.max_connection_age_grace_s,
                              "must be a number of seconds >= 1")
        if self.grace_s < 0:
            raise ConfigError("grace_s", self.grace_s, "must be >= 0")
        self.security.validate()  # last: value errors are named first


#: hosts that bind every address: a port bound there clashes with the same port on any host
_WILDCARDS = ("0.0.0.0", "::", "")


def _addresses(host: str) -> set[str]:
    """The addresses `host` binds ("localhost": 127.0.0.1 and ::1), so that `localhost:P` and
    `127.0.0.1:P` are seen to clash; asked only of two listeners on one port. A name that does
    not resolve: none (the bind says why)."""
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        return set()


def _check_distinct_ports(listeners: list[tuple[str, str]]) -> None:
    """ConfigError when a listener's address is malformed, or when two of the server's listeners
    would take the same port: the second bind failed only after TensorFlow and every tail had
    loaded (seconds to minutes), with "Address already in use" and no word that the other user
    was this server itself."""
    bound = [(key, text, parse_address(key, text)) for key, text in listeners]
    for i, (key, text, (host, port)) in enumerate(bound):
        for other, other_text, (other_host, other_port) in bound[:i]:
            if port and port == other_port and (host == other_host or host in _WILDCARDS or other_host in _WILDCARDS
                                                or _addresses(host) & _addresses(other_host)):
                raise ConfigError(key, text, f"is also this server's {other} ({other_text}): give each its own port")
