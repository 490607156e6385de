"""`splitpoint loadtest`: N emulated drones against one server or a set of replicas.

Each drone is its own gRPC channel (its own connection, spread over the target's
addresses by gRPC's `round_robin` policy with client-side health checking, as real
agents are) and its own Infer stream, paced like a camera at `fps` with a random phase,
sending the cut tensor of split `split` for the bundle's held-out frames. The cut
tensors are computed once, before the run, by the real int8 heads (LiteRT), so the
generator spends its time on the wire, not on heads.

Every frame sent ends in exactly one outcome: answered (its latency, send to answer,
and the replica that answered), refused by the server (the status code in its answer,
e.g. RESOURCE_EXHAUSTED, after which a real agent runs the frame locally), or failed
with its stream (the stream's status code; the drone opens a new stream, which the
channel may place on another replica). Frames still unanswered when the run ends count
as `unanswered`. Each frame not answered is also counted against the replica whose stream held
it (`held`): a hung replica keeps its frames unanswered and its drones' windows full, and its
share of the answers alone looked normal.

Under mutual TLS the server knows an agent by its client certificate's name, so drones given
one certificate (`tls_cert`) are one agent to it, held together to `max_streams_per_agent`;
`tls_client_dir` gives each drone its own (`splitpoint certs --clients`), in turn.

One drone holds at most `window` frames in flight; a tick that finds the window full
is counted as a skipped frame (the camera's frame that a real agent would run locally), and
one that finds no stream open (refused, or between streams) as a frame with no stream. A skipped
frame is held against the replica of the stream whose frames fill the window.
"""

from __future__ import annotations

import heapq
import logging
import math
import queue
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import grpc

from splitpoint.certs import client_pairs
from splitpoint.config import MAX_SECONDS, option
from splitpoint.errors import ConfigError, status_code_from_int
from splitpoint.loadtest_frames import MAX_MESSAGE_BYTES, check_server_bundle, cut_requests
from splitpoint.loadtest_report import LoadReport, latency_figures
from splitpoint.security import ClientSecurity, check_key_pair
from splitpoint.targets import balanced_options, check_tls_name, parse_target
from splitpoint.v1 import offload_pb2, offload_pb2_grpc
from splitpoint.wire_metadata import AGENT_METADATA_KEY, REPLICA_METADATA_KEY

log = logging.getLogger(__name__)

#: what one loadtest process emulates: a channel and a thread per drone, one pacer for all
MAX_AGENTS, MAX_FRAMES_PER_S = 10_000, 100_000
#: how late the pacer may send a frame before the report says the figures are the load
#: generator's: a pacer with a core to itself is milliseconds late, one on a busy shared machine
#: a hundred or two now and then; half a second late, it has held back frames of many drones
PACER_MARGIN_S = 0.5
#: how long the drones' channels get to close once the run is over (every wait is bounded: 1000
#: drones each given 5 s to end their stream once kept a run going for minutes)
CLOSE_S = 5.0


@dataclass
class LoadtestConfig:
    bundle: str = option(help="bundle directory (the server's): frames, cut tensors, digest", group="target")
    target: str = option(help="gRPC target: HOST:PORT, several IP:PORT comma-separated, ipv4:A:P,B:P, or dns:///NAME:PORT",
                         group="target")
    agents: int = option(10, "emulated drones, each its own channel and stream", group="load")
    fps: float = option(5.0, "frames per second per drone", group="load")
    split: int = option(0, "split every drone sends (0: the quantized input)", group="load")
    window: int = option(1, "frames in flight per drone; a tick with a full window skips its frame", group="load")
    stream_frames: int = option(20, "frames a drone sends on one Infer stream before it opens the next, as agents "
                                    "replace streams; each new stream may land on another replica (0 = one stream)",
                                group="load")
    duration: float = option(20.0, "seconds the drones send", group="load")
    timeout_s: float = option(10.0, "seconds the drones get to connect before the clock starts; a frame "
                                    "unanswered this long after the run ends counts as unanswered", group="load")
    json: str = option("", "write every figure here as JSON", group="output")
    tls_ca: str = option("", "CA (PEM) that signed the servers' certificates", group="security")
    tls_cert: str = option("", "client certificate (PEM) for mutual TLS", group="security")
    tls_key: str = option("", "private key (PEM) of tls_cert", group="security")
    tls_client_dir: str = option("", "directory of NAME.pem/NAME.key pairs (`splitpoint certs --clients` writes "
                                     "them): each drone presents its own, in turn, instead of tls_cert",
                                 group="security")
    tls_server_name: str = option("", "name to verify in the servers' certificates", group="security")
    token_file: str = option("", "file holding the bearer token", group="security")
    insecure: bool = option(False, "plaintext (development only)", group="security")

    def validate(self) -> None:
        if self.stream_frames < 0:
            raise ConfigError("stream_frames", self.stream_frames, "must be >= 0 (0 = one stream per drone)")
        for key in ("agents", "window"):
            if getattr(self, key) < 1:
                raise ConfigError(key, getattr(self, key), "must be at least 1")
        for key in ("fps", "duration", "timeout_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(key, getattr(self, key), "must be > 0")
        if self.agents > MAX_AGENTS:  # each is a channel and a thread: 100 million never started
            raise ConfigError("agents", self.agents, f"must be at most {MAX_AGENTS} (run several loadtests for more)")
        if self.agents * self.fps > MAX_FRAMES_PER_S:  # --fps 1e9 paced a billion frames for a 1 s run
            raise ConfigError("fps", self.fps, f"x {self.agents} agents is more than one pacer sends (at most "
                                               f"{MAX_FRAMES_PER_S} frames/s in all; run several loadtests for more)")
        if self.fps * self.duration < 1:  # each drone's first frame is due within one period of the start
            raise ConfigError("duration", self.duration, f"is shorter than one frame at fps = {self.fps:g} (one "
                                                         f"every {1 / self.fps:g} s): no drone would send a frame")
        if self.duration > MAX_SECONDS:
            raise ConfigError("duration", self.duration, f"must be at most {MAX_SECONDS} s")
        if self.split < 0:
            raise ConfigError("split", self.split, "must be >= 0")
        parse_target("target", self.target)
        if self.tls_client_dir:
            for key in ("tls_cert", "tls_key", "insecure"):
                if getattr(self, key):
                    raise ConfigError("tls_client_dir", self.tls_client_dir, f"cannot be combined with {key}: "
                                      "the drones present either tls_cert or their own from tls_client_dir, over TLS")
        self.security.validate()
        check_tls_name("target", self.target, bool(self.tls_ca), self.tls_server_name)

    def client_pairs(self) -> list[tuple[str, str]]:
        """The drones' own (certificate, key) pairs; empty without tls_client_dir."""
        return client_pairs("tls_client_dir", self.tls_client_dir) if self.tls_client_dir else []

    def check_files(self) -> None:
        """Every file named is usable (ConfigError naming it), before the heads run."""
        self.security.check_files()
        for cert, key in self.client_pairs():
            check_key_pair("tls_client_dir", cert, "tls_client_dir", key)

    def drone_security(self, pairs: list[tuple[str, str]], n: int) -> ClientSecurity:
        if not pairs:
            return self.security
        cert, key = pairs[n % len(pairs)]
        return replace(self.security, tls_cert=cert, tls_key=key)

    @property
    def security(self) -> ClientSecurity:
        return ClientSecurity(self.tls_ca, self.tls_cert, self.tls_key, self.tls_server_name, self.token_file,
                              self.insecure)


class _Tally:
    """Outcomes of every frame of the run; the one lock guards all of it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.refused: Counter[str] = Counter()
        self.stream_failures: Counter[str] = Counter()
        self.replicas: Counter[str] = Counter()
        #: replica -> its frames not answered: refused, lost (with its stream), unanswered, skipped (window
        #: full of its frames); "?" a stream whose server never named itself (not taken, or hung before)
        self.held: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.sent = self.skipped = self.no_stream = 0
        self.last_error = ""  # the latest stream failure, to tell a user why nothing connected


class _Drone:
    """One emulated agent: a channel, a stream at a time, `window` frames in flight at most."""

    def __init__(self, n: int, conf: LoadtestConfig, security: ClientSecurity,
                 requests: list[offload_pb2.InferRequest], tally: _Tally):
        self.n, self.conf, self.requests, self.tally = n, conf, requests, tally
        self.channel = security.channel(parse_target("target", conf.target),
                                             balanced_options(MAX_MESSAGE_BYTES, own_connection=True))
        self.stub = offload_pb2_grpc.OffloadStub(self.channel)
        self.answered = 0
        self._inflight: dict[int, float] = {}  # frame id -> send time (monotonic)
        self._lock = threading.Lock()  # guards _inflight and _feed; taken before tally.lock
        self._feed: queue.Queue | None = None
        self._replica = ""  # the current stream's replica, once its metadata named it; guarded by _lock
        self._next_id = 0
        self._on_stream = 0  # frames sent on the current stream
        self._stop = threading.Event()
        self.ready = threading.Event()  # its first stream is open (the server sent its metadata)
        self._reader = threading.Thread(target=self._run_streams, name=f"drone-{n}", daemon=True)

    def start(self) -> None:
        self._reader.start()

    def tick(self) -> None:
        """The camera delivers a frame: send it, or skip it when the window is full."""
        with self._lock:
            if self._feed is None or len(self._inflight) >= self.conf.window:
                with self.tally.lock:
                    if self._feed is None:  # refused, or its next stream not open yet
                        self.tally.no_stream += 1
                    else:  # the window is full of frames sent on the current stream: its replica's
                        self.tally.skipped += 1
                        self.tally.held[self._replica or "?"]["skipped"] += 1
                return
            fid = self._next_id
            self._next_id += 1
            req = offload_pb2.InferRequest()
            req.CopyFrom(self.requests[fid % len(self.requests)])
            req.frame_id = fid
            self._inflight[fid] = time.monotonic()
            self._feed.put(req)
            self._on_stream += 1
            if self._on_stream == self.conf.stream_frames:  # its quota: half-close, the reader opens the next
                self._feed.put(None)
                self._feed = None
        with self.tally.lock:
            self.tally.sent += 1

    def _requests(self, feed: queue.Queue) -> Iterator[offload_pb2.InferRequest]:
        while (req := feed.get()) is not None:
            yield req

    def _run_streams(self) -> None:
        while not self._stop.is_set():
            feed: queue.Queue = queue.Queue()
            with self._lock:
                self._feed, self._on_stream, self._replica = feed, 0, ""
            call = self.stub.Infer(self._requests(feed), metadata=[(AGENT_METADATA_KEY, f"loadtest-{self.n}")])
            code, replica = "OK", "?"
            try:
                taken = dict(call.initial_metadata() or ()).get(REPLICA_METADATA_KEY)
                if taken is not None:  # the server took the stream (it names itself only then)
                    self.ready.set()
                # A call that failed to connect, or that the server refused (a token, a limit), also
                # "returns" metadata, and done() could still be False then: the drone counted as
                # connected and the run ended in figures of nothing instead of the refusal (a full test run, once).
                replica = taken or "?"
                with self._lock:
                    self._replica = replica
                for resp in call:
                    self._answer(resp, replica)
            except grpc.RpcError as err:
                code = err.code().name if err.code() else "UNKNOWN"
                if not self._stop.is_set():  # not the cancel of its own close: the report said that was why
                    with self.tally.lock:    # drones failed ("CANCELLED: ... Channel closed!")
                        self.tally.last_error = f"{code}: {err.details()}"
            with self._lock:  # frames in flight on the ended stream end with it
                lost, self._inflight = len(self._inflight), {}
                self._feed = None
            feed.put(None)
            if lost:
                with self.tally.lock:
                    self.tally.stream_failures[code] += lost
                    self.tally.held[replica]["lost"] += lost
            if code != "OK":
                self._stop.wait(0.2)  # a failed stream: a moment before the next, which round_robin places
                                      # on a replica that reports SERVING

    def _answer(self, resp: offload_pb2.InferResponse, replica: str) -> None:
        now = time.monotonic()
        with self._lock:
            sent = self._inflight.pop(resp.frame_id, None)
        if sent is None:
            return  # not ours, or already counted
        with self.tally.lock:
            if resp.error.code:
                self.tally.refused[status_code_from_int(resp.error.code).name] += 1
                self.tally.held[replica]["refused"] += 1
            else:
                self.answered += 1
                self.tally.latencies.append((now - sent) * 1000)
                self.tally.replicas[replica] += 1

    def outstanding(self) -> int:
        with self._lock:
            return len(self._inflight)

    def stop(self) -> int:
        """Stop the drone (it sends no more); returns how many of its frames were never answered
        (each counted here and nowhere else: an answer arriving now finds its frame gone).
        It does not wait: `close` does, for the whole fleet at once."""
        self._stop.set()
        with self._lock:
            unanswered, self._inflight = len(self._inflight), {}
            if self._feed is not None:
                self._feed.put(None)  # half-close: the server ends the stream
            if unanswered:  # all sent on the current stream (the next opens once it ends)
                with self.tally.lock:
                    self.tally.held[self._replica or "?"]["unanswered"] += unanswered
        return unanswered

    def close(self, deadline: float) -> None:
        """Close the channel (its stream is cancelled: the reader ends) and wait for the reader
        until `deadline` (monotonic) at most."""
        self.channel.close()
        self._reader.join(max(0.0, deadline - time.monotonic()))


@dataclass
class Pacing:
    """How the pacer kept its schedule."""

    seconds: float  # the run's length: the duration, or until it was interrupted
    complete: bool  # False: interrupted (KeyboardInterrupt: Ctrl-C, or SIGTERM as the CLI maps it)
    late_s: float = 0.0  # the most a tick came after its time
    unpaced: int = 0  # ticks due before the end that it never reached


def pace(drones: Sequence[_Drone], fps: float, duration: float, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> Pacing:
    """One pacer for every drone: drone n's frames are due at start + phase_n + i / fps, the
    phases random (seeded) within one period. It ends at start + duration by the clock, not
    once every frame due by then went out: a pacer starved by the drones' threads (1000 drones
    on 2 cores) was 60 s behind, and the run took 161 s instead of 3. A KeyboardInterrupt ends
    it too: what was sent is measured."""
    period = 1.0 / fps
    rng = random.Random(0)
    start = clock()
    due = [(start + rng.uniform(0, period), n) for n in range(len(drones))]
    heapq.heapify(due)
    end = start + duration
    late = 0.0
    try:
        while due[0][0] < end:
            t, n = due[0]
            delay = t - clock()
            if delay > 0:
                sleep(delay)
            now = clock()
            late = max(late, now - t)
            if now >= end:  # behind: this frame and those after it are counted, never sent
                break
            heapq.heapreplace(due, (t + period, n))
            drones[n].tick()
    except KeyboardInterrupt:
        return Pacing(min(clock(), end) - start, False, late)
    # each drone's frames still due before the end, from its next one
    unpaced = sum(math.ceil((end - t) / period) for t, _ in due if t < end)
    return Pacing(duration, True, late, unpaced)


def run_loadtest(conf: LoadtestConfig) -> LoadReport:
    """The run: the drones connect (timeout_s at most), send for `duration`, get timeout_s at
    most for their last answers and CLOSE_S to close; the report of what they measured. A
    KeyboardInterrupt (Ctrl-C; SIGTERM, as the CLI maps it) before the clock starts ends the
    run with nothing measured (it is raised again); once it runs, it ends the sending, and the
    report is of the part run (complete = False)."""
    requests = cut_requests(conf.bundle, conf.split)
    tally = _Tally()
    pairs = conf.client_pairs()
    check_server_bundle(conf.target, conf.drone_security(pairs, 0), requests[0].model_digest, conf.timeout_s)
    drones: list[_Drone] = []
    try:
        for n in range(conf.agents):
            drones.append(_Drone(n, conf, conf.drone_security(pairs, n), requests, tally))
        t0 = time.monotonic()
        for d in drones:
            d.start()
        # the fleet is connected before the clock starts: connection set-up is not load
        for d in drones:
            d.ready.wait(max(0.0, t0 + conf.timeout_s - time.monotonic()))
    except KeyboardInterrupt:
        for d in drones:
            d.stop()
        _close(drones)
        raise
    ready = sum(d.ready.is_set() for d in drones)
    log.info("%d of %d drones connected in %.1fs", ready, len(drones), time.monotonic() - t0)
    pacing = pace(drones, conf.fps, conf.duration)
    complete = pacing.complete
    deadline = time.monotonic() + conf.timeout_s
    try:
        while sum(d.outstanding() for d in drones) and time.monotonic() < deadline:
            time.sleep(0.05)
    except KeyboardInterrupt:  # a second stop while the answers come: stop waiting for them
        complete = False
    unanswered = sum(d.stop() for d in drones)  # counted before anything else can interrupt
    complete = _close(drones) and complete
    return LoadReport(
        config={k: v for k, v in asdict(conf).items() if k not in ("token_file",)}, seconds=pacing.seconds,
        complete=complete, connected=ready, last_error=tally.last_error,
        certificates=min(len(pairs), conf.agents) if pairs else int(bool(conf.tls_cert)),
        sent=tally.sent, answered=len(tally.latencies), skipped=tally.skipped, no_stream=tally.no_stream,
        unanswered=unanswered, unpaced=pacing.unpaced, pacer_late_ms=pacing.late_s * 1000,
        pacer_behind=pacing.late_s > PACER_MARGIN_S or pacing.unpaced > 0,
        refused=dict(tally.refused), stream_failures=dict(tally.stream_failures), replicas=dict(tally.replicas),
        held={replica: dict(counts) for replica, counts in tally.held.items()},
        per_agent_answered=[d.answered for d in drones], latency_ms=latency_figures(tally.latencies),
    )


def _close(drones: list[_Drone]) -> bool:
    """Close the stopped drones within CLOSE_S; False if a KeyboardInterrupt (a second stop)
    cut that short: the figures are kept, the last channels close with the process."""
    deadline = time.monotonic() + CLOSE_S
    try:
        for d in drones:
            d.close(deadline)
    except KeyboardInterrupt:
        return False
    return True
