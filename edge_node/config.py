"""`splitpoint edge` configuration (TOML keys = flags)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from scheduler.objectives import PolicyConfig
from splitpoint import wire_metadata
from splitpoint.config import MAX_SECONDS, option, parse_address
from splitpoint.errors import ConfigError
from splitpoint.runtime.litert import Device
from splitpoint.security import ClientSecurity
from splitpoint.targets import check_tls_name, parse_target

#: LiteRT threads at the most: far more than any edge board's cores, far less than the
#: thousands that exhaust the process
MAX_THREADS = 256
#: the most frames a run may be told to take (`max_frames`, `synthetic:N`): a billion, over three
#: years at 10 fps. Any count was taken (synthetic:10**4000, a run that never ends)
MAX_RUN_FRAMES = 10**9
#: the most frames in flight (`window`) or waiting in live capture (`live_buffer`): each holds its
#: camera image and input (a 224 px float32 input is 600 KB), and a server takes at most
#: max_queue_per_agent (16 by default) of one agent's frames at once
MAX_FRAMES_HELD = 1024
MAX_AGENT_NAME = 128  # gRPC refuses metadata over 16 KiB in all; a drone's name is short
#: what gRPC accepts as a metadata value (the agent's name): printable ASCII, no outer spaces
_METADATA_VALUE = re.compile(r"[!-~]([ -~]*[!-~])?")


@dataclass
class EdgeConfig:
    bundle: str = option(help="bundle directory made by `splitpoint partition`", group="input")
    source: str = option(help="frames: a directory of images, a video file, camera:N or synthetic:N (N <= 10**9)",
                         group="input")
    cloud: str = option("127.0.0.1:50051", "the cloud server(s): HOST:PORT; several by IP address, comma-separated, or "
                                            "dns:///NAME:PORT for every address NAME resolves to: streams are spread "
                                            "over them (round_robin) and a replica that is not SERVING is skipped",
                         group="cloud link")
    agent_name: str = option("", "this agent's name for the server's fair share (sent as splitpoint-agent metadata; "
                                 "under mutual TLS the certificate's name counts instead); empty: its connection",
                             group="cloud link")
    split: int | None = option(None, "fixed split k (layers run on the edge); unset: all on the edge", group="cloud link")
    device: str = option("cpu", "where heads run: cpu, edgetpu, edgetpu:usb[:N], edgetpu:pci[:N]", group="edge device")
    cpu_fallback: bool = option(False, "run heads on the CPU when the Edge TPU, or a head compiled for it, cannot be used, instead of failing", group="edge device")
    threads: int = option(1, "CPU threads for LiteRT heads", group="edge device")
    splits: list[int] = option(default_factory=list, help="load only these splits' heads (e.g. 0,8,89; K always): "
                               "less memory and start-up, and the policy chooses among them; empty loads every split",
                               group="edge device")
    results: str = option("results.jsonl", "results log, one record per frame id (format: results_format)", group="output")
    mode: str = option("throughput", "throughput: overlap frames; latency: one frame in flight (an adaptive policy "
                       "on a paced source - a camera, or fps: up to `window`, each frame's path planned so none "
                       "waits behind the link)",
                       choices=("throughput", "latency"), group="cloud link")
    window: int = option(4, "frames in flight in throughput mode, and in latency mode with an adaptive policy on a "
                            "paced source",
                         group="cloud link")
    fps: float | None = option(None, "pace the source like a camera at this rate", group="input")
    max_frames: int | None = option(None, "stop after this many frames", group="input")
    frame_deadline_ms: int = option(2000, "a frame not answered this long after it was sent runs locally; a stream that "
                                          "answers nothing for twice this is given up and the agent backs off",
                                    group="cloud link")
    hedge: str = option("auto", "auto: an offloaded frame not answered by its hedge time (the policy's predicted latency "
                                "+ a margin learnt from recent errors; min-energy: deadline_ms; fixed: frame_deadline_ms) "
                                "also runs locally and the first result wins; off: wait for frame_deadline_ms",
                        choices=("auto", "off"), group="cloud link")
    hedge_margin: float = option(20.0, "hedge = auto: the least margin (ms) added to a predicted latency; the learnt "
                                       "margin (95th percentile of recent actual - predicted) is used when larger",
                                 group="cloud link")
    connect_timeout_s: float = option(5.0, "deadline for connecting and for Describe/Probe calls", group="cloud link")
    stream_lifetime_s: float = option(300.0, "an Infer stream is replaced after this long (its deadline)", group="cloud link")
    max_message_mb: float = option(32.0, "largest message sent or received, MiB", group="cloud link")
    tls_ca: str = option("", "CA (PEM) that signed the server's certificate: TLS", group="security")
    tls_cert: str = option("", "this agent's certificate (PEM), for mutual TLS", group="security")
    tls_key: str = option("", "private key (PEM) of tls_cert", group="security")
    tls_server_name: str = option("", "name to verify in the server's certificate when it differs from the cloud host", group="security")
    token_file: str = option("", "file holding the bearer token sent with every call", group="security")
    insecure: bool = option(False, "talk plaintext without TLS (development only)", group="security")
    allow_plaintext_token: bool = option(
        False, "send token_file's bearer token over plaintext (insecure); refused without this, as anyone on "
               "the network can read the token (development only; the agent warns loudly)", group="security")
    metrics_listen: str = option("", "HOST:PORT for Prometheus /metrics; empty = off", group="output")
    log_level: str = option("info", "logging level", choices=("debug", "info", "warning", "error"), group="output")
    results_format: str = option("jsonl", "results log format: jsonl (JSON lines) or sqlite (SQLite, WAL mode)",
                                 choices=("jsonl", "sqlite"), group="output")
    results_fsync: bool = option(True, "make every record durable before going on (jsonl: fsync per line; "
                                       "sqlite: synchronous = FULL, else NORMAL)", group="output")
    resume: bool = option(True, "continue an existing results log: skip frames it already records (camera: number "
                                "after its last id); --no-resume renames the old log to NAME.TIMESTAMP.bak", group="output")
    results_rotate_h: float = option(0.0, "a camera's run: start a new results log every this many hours; the old one "
                                          "is closed and renamed NAME.<UTC time>Z.EXT, complete and safe to copy off "
                                          "(0: never)", group="output")
    capture: str = option("survey", "survey: every frame is processed, none dropped; live: keep up with the camera, "
                                    "dropping (and recording) the oldest unprocessed frame when behind",
                          choices=("survey", "live"), group="input")
    grace_s: float = option(10.0, "SIGTERM/SIGINT: time frames in flight get to finish; then the agent exits anyway "
                                  "(unfinished frames have no record and run again on resume)", group="output")
    keepalive_s: float = option(20.0, "ping an open stream after this long without traffic, to notice a dead link; "
                                      "at least 5: the server permits one ping every 5 s", group="cloud link")
    require_cloud: bool = option(False, "exit with an error (1) when no cloud server was reached during the run, "
                                        "instead of a warning after running every frame locally", group="cloud link")
    live_buffer: int = option(2, "live capture: frames read ahead and waiting; when full the oldest is dropped", group="input")
    camera_reopen_s: float = option(30.0, "camera: when it stops delivering frames (a USB reset, unplugged), open it "
                                          "again every second for up to this long before the run ends (0: end at "
                                          "once)", group="input")
    policy: PolicyConfig = option(default_factory=PolicyConfig, help="split policy: the [policy] table")

    @property
    def window_size(self) -> int:
        return 1 if self.mode == "latency" else self.window

    def loaded_splits(self, manifest: Any) -> list[int]:
        """The splits this agent loads heads for, of the bundle's `manifest`: `splits` and K, or all."""
        return sorted(set(self.splits) | {manifest.num_layers}) if self.splits else list(manifest.split_ids)

    @property
    def device_spec(self) -> Device:
        return Device.parse(self.device)

    def validate(self) -> None:
        parse_target("cloud", self.cloud)
        if self.metrics_listen:
            parse_address("metrics_listen", self.metrics_listen)
        self.device_spec  # noqa: B018 - parses and raises ConfigError naming the value
        if self.split is not None and self.split < 0:
            raise ConfigError("split", self.split, "must be >= 0")
        if any(k < 0 for k in self.splits):
            raise ConfigError("splits", self.splits, "split numbers are >= 0")
        for key in ("threads", "window", "frame_deadline_ms", "live_buffer"):
            if getattr(self, key) < 1:
                raise ConfigError(key, getattr(self, key), "must be at least 1")
        if self.threads > MAX_THREADS:  # 100000 spent 20 s failing pthread_create, then aborted
            raise ConfigError("threads", self.threads, f"must be at most {MAX_THREADS}")
        for key in ("window", "live_buffer"):
            if getattr(self, key) > MAX_FRAMES_HELD:
                raise ConfigError(key, getattr(self, key), f"must be at most {MAX_FRAMES_HELD} frames (each holds "
                                                           "its image and input in memory)")
        if not self.results.strip():
            raise ConfigError("results", self.results, "give the results log's file name")
        if len(self.agent_name) > MAX_AGENT_NAME:  # 20,000 characters: the server refused every stream's metadata
            raise ConfigError("agent_name", self.agent_name[:40] + "...", f"must be at most {MAX_AGENT_NAME} characters")
        if self.agent_name and not _METADATA_VALUE.fullmatch(self.agent_name):
            # sent as gRPC metadata, which gRPC refuses (every frame then fell back) unless it is this
            raise ConfigError("agent_name", self.agent_name, "must be printable ASCII, without leading or trailing "
                                                             "spaces (it is sent as gRPC metadata)")
        if self.fps is not None and not self.fps * MAX_SECONDS >= 1:  # a wait of 1/fps: 1e-300 overflowed sleep()
            raise ConfigError("fps", self.fps, f"must be > 0, at least one frame per {MAX_SECONDS} s (24.8 days)")
        if self.max_frames is not None and not 0 <= self.max_frames <= MAX_RUN_FRAMES:
            raise ConfigError("max_frames", self.max_frames, f"must be from 0 to {MAX_RUN_FRAMES} (a billion "
                                                             "frames: over three years at 10 fps); leave it out for no limit")
        if self.hedge_margin < 0:
            raise ConfigError("hedge_margin", self.hedge_margin, "must be >= 0 (ms)")
        if self.grace_s < 0:
            raise ConfigError("grace_s", self.grace_s, "must be >= 0")
        if self.results_rotate_h < 0:
            raise ConfigError("results_rotate_h", self.results_rotate_h, "must be >= 0 (hours; 0: never)")
        if self.camera_reopen_s < 0:
            raise ConfigError("camera_reopen_s", self.camera_reopen_s, "must be >= 0 (seconds; 0: end at once)")
        permitted_s = wire_metadata.PERMITTED_PING_INTERVAL_MS / 1000
        if not self.keepalive_s >= permitted_s:  # faster: the server closes the connection (too_many_pings)
            raise ConfigError("keepalive_s", self.keepalive_s,
                              f"must be at least {permitted_s:g} (s): the server permits one ping every {permitted_s:g} s "
                              "and closes the connection of an agent that pings faster")
        if self.connect_timeout_s <= 0:
            raise ConfigError("connect_timeout_s", self.connect_timeout_s, "must be > 0")
        if self.stream_lifetime_s * 1000 <= 2 * self.frame_deadline_ms:
            raise ConfigError("stream_lifetime_s", self.stream_lifetime_s,
                              f"must be more than twice frame_deadline_ms ({self.frame_deadline_ms} ms): above "
                              f"{2 * self.frame_deadline_ms / 1000:g} s, or lower frame_deadline_ms")
        if not 0.001 <= self.max_message_mb <= wire_metadata.MAX_MESSAGE_MB:
            raise ConfigError("max_message_mb", self.max_message_mb, f"must be between 0.001 and {wire_metadata.MAX_MESSAGE_MB}")
        # last: value errors are named first. TLS or plaintext is required only of an agent that
        # may contact a server, which the bundle's K tells (check_transport, when the agent is built)
        self.security.validate(talks=False)
        check_tls_name("cloud", self.cloud, bool(self.tls_ca), self.tls_server_name)

    @property
    def cloud_target(self) -> str:
        """The gRPC target for `cloud` (a list becomes ipv4:A,B; dns:/// stays)."""
        return parse_target("cloud", self.cloud)

    @property
    def security(self) -> ClientSecurity:
        return ClientSecurity(self.tls_ca, self.tls_cert, self.tls_key, self.tls_server_name, self.token_file,
                              self.insecure, self.allow_plaintext_token)

    def contacts_server(self, offloads: bool) -> bool:
        """Whether the agent asks a server anything: its policy `offloads` (scheduler/policy_base.py,
        may_offload), or require_cloud. The one rule for start-up (agent.py), TLS (below), doctor."""
        return offloads or self.require_cloud

    def check_transport(self, offloads: bool, reload: bool = False) -> None:
        """TLS or plaintext must be chosen (ConfigError naming what to set) when the agent may contact
        a server: its policy `offloads` (all but a fixed one at k = K), or require_cloud. An agent
        that runs every frame on the drone asks no server anything (edge_node/agent.py, start) and
        gets no channel (edge_node/assembly.py): inventing TLS settings for it would be pointless.

        `reload`: a SIGHUP's new [policy] would offload. Only [policy] is re-read, so an agent that
        started without TLS or plaintext cannot gain either: the reload is refused (the old policy
        kept) rather than frames sent in plaintext nobody asked for, or to no server at all."""
        if not self.contacts_server(offloads) or self.security.chosen:
            return
        if reload:
            raise ConfigError("policy", None, "the new policy sends frames to the cloud, and this agent started "
                                              "running every frame on the edge without tls_ca or insecure: set "
                                              "tls_ca (and tls_cert/tls_key for mutual TLS), or insecure = true "
                                              "(development only), and restart the agent")
        self.security.check_mode()

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)
