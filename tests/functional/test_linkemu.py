"""The link emulator with real sockets on 127.0.0.1: rate, delay, outages, resets, many
connections, half-close, stop() with open connections, a real gRPC call, step traces.

Every server binds 127.0.0.1 port 0; every socket has a timeout; every thread is joined with
a timeout; every loop is bounded in count. Timing bands are generous: they check the link
model, not the scheduler of a busy CI machine.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from splitpoint.errors import ConfigError
from splitpoint.linkemu import LinkEmulator
from splitpoint.traces import step

HOST = "127.0.0.1"
SOCK_TIMEOUT_S = 15.0
RESULT_TIMEOUT_S = 20.0


# ---------------------------------------------------------------- helpers
@dataclass
class Received:
    """What a server connection received: byte count, sha256, (monotonic time, cumulative bytes)."""

    nbytes: int = 0
    digest: str = ""
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    error: str | None = None

    @property
    def last_arrival(self) -> float:
        return self.arrivals[-1][0]

    def bytes_at(self, t: float) -> int:
        n = 0
        for when, total in self.arrivals:
            if when > t:
                break
            n = total
        return n

    def rate_bps(self, t0: float, t1: float) -> float:
        return (self.bytes_at(t1) - self.bytes_at(t0)) * 8 / (t1 - t0)

    def max_gap_s(self) -> float:
        times = [t for t, _ in self.arrivals]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


class TcpServer:
    """A sink or echo server on 127.0.0.1:0; one thread per connection; results in `.results`."""

    def __init__(self, mode: str = "sink", greeting: bytes = b""):
        self.mode = mode
        self.greeting = greeting
        #: set when one connection has received `notify_bytes` (if set)
        self.notify_bytes: int | None = None
        self.reached = threading.Event()
        self.connected = threading.Event()   # a connection was accepted
        self.sock = socket.create_server((HOST, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.results: queue.Queue[Received] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connected.set()
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        got = Received()
        h = hashlib.sha256()
        conn.settimeout(SOCK_TIMEOUT_S)
        try:
            if self.greeting:
                conn.sendall(self.greeting)
                conn.close()
                return
            for _ in range(1_000_000):
                data = conn.recv(65536)
                if not data:
                    break
                h.update(data)
                got.nbytes += len(data)
                got.arrivals.append((time.monotonic(), got.nbytes))
                if self.notify_bytes is not None and got.nbytes >= self.notify_bytes:
                    self.reached.set()
                if self.mode == "echo":
                    conn.sendall(data)
        except OSError as exc:
            got.error = repr(exc)
        finally:
            got.digest = h.hexdigest()
            conn.close()
            self.results.put(got)

    def result(self) -> Received:
        return self.results.get(timeout=RESULT_TIMEOUT_S)

    def close(self) -> None:
        self._stop.set()
        self._accepter.join(timeout=2)
        self.sock.close()
        for t in self._threads:
            t.join(timeout=2)


@pytest.fixture
def sink() -> Iterator[TcpServer]:
    server = TcpServer("sink")
    yield server
    server.close()


@pytest.fixture
def echo() -> Iterator[TcpServer]:
    server = TcpServer("echo")
    yield server
    server.close()


def connect(port: int) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=SOCK_TIMEOUT_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    for _ in range(100_000):
        if len(buf) >= n:
            break
        data = s.recv(n - len(buf))
        if not data:
            break
        buf += data
    return bytes(buf)


def recv_until_eof(s: socket.socket) -> bytes:
    buf = bytearray()
    for _ in range(1_000_000):
        data = s.recv(65536)
        if not data:
            break
        buf += data
    return bytes(buf)


def ping(s: socket.socket, payload: bytes = b"ping-0123") -> float:
    t = time.monotonic()
    s.sendall(payload)
    assert recv_exactly(s, len(payload)) == payload
    return time.monotonic() - t


def echo_through(port: int, data: bytes) -> bytes:
    """Send data, half-close, read the echo until EOF (sending in a thread so neither side blocks)."""
    s = connect(port)
    try:
        def send() -> None:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        back = recv_until_eof(s)
        sender.join(timeout=SOCK_TIMEOUT_S)
        return back
    finally:
        s.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def send_and_close(port: int, data: bytes) -> float:
    """Send everything, close; returns the time the first byte was handed to the kernel."""
    s = connect(port)
    try:
        t0 = time.monotonic()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return t0
    finally:
        s.close()


def peer_gone(s: socket.socket, within_s: float) -> tuple[bool, float]:
    """Does the peer close or reset within within_s? (True, seconds it took)."""
    s.settimeout(within_s)
    t = time.monotonic()
    try:
        data = s.recv(1024)
        return data == b"", time.monotonic() - t
    except (ConnectionResetError, BrokenPipeError):
        return True, time.monotonic() - t
    except TimeoutError:
        return False, time.monotonic() - t


# ---------------------------------------------------------------- rate
def test_goodput_at_8_mbps(sink: TcpServer) -> None:
    data = os.urandom(1_000_000)
    with LinkEmulator((HOST, sink.port), uplink=8e6) as link:
        t0 = send_and_close(link.port, data)
        got = sink.result()
        stats = link.stats()
    elapsed = got.last_arrival - t0
    goodput = len(data) * 8 / elapsed
    print(f"8 Mbps link: 1 MB in {elapsed:.3f} s, goodput {goodput / 1e6:.2f} Mbps ({goodput / 8e6:.0%})")
    assert got.nbytes == len(data) and got.digest == sha(data)
    assert 0.8 <= elapsed <= 1.6
    assert 0.85 * 8e6 <= goodput <= 1.10 * 8e6
    assert stats["up_bytes"] == len(data) and stats["connections_total"] == 1


@pytest.mark.parametrize("message_bytes", [1000, 1_000_000])
@pytest.mark.parametrize("mbps", [1, 10, 100])
def test_emulator_keeps_its_rate(sink: TcpServer, mbps: int, message_bytes: int) -> None:
    """Messages written back to back: goodput from the moment bytes can flow is 98-101% of the rate
    (an idle link has no burst credit to beat the rate, and a stalled event loop must not leave the
    link idle).

    Goodput is the best bytes/(t - t0) over the arrivals in the second half of a 2 s window: capacity
    the link lost (idling) can never be made up, so it lowers every later point, whereas a stall of
    this busy machine's scheduler right at one instant only delays a delivery the link had already
    carried (seen: 100-200 ms gaps at load 7 on 2 cores), which the best point skips."""
    rate = mbps * 1e6
    window = 2.0                                # a 1 Mbps piece (1500 B) is 12 ms: well under 1%
    expected = rate * window / 8
    sink.notify_bytes = int(expected * 1.05)    # delivered past the window: the measurement is done
    count = max(1, int(expected * 1.2) // message_bytes + 1)  # enough to keep the link busy throughout
    msg = os.urandom(message_bytes)
    started: list[float] = []
    with LinkEmulator((HOST, sink.port), uplink=rate) as link:
        s = connect(link.port)
        # the proxy has reached the sink before the first write: its set-up is not the link's time
        assert sink.connected.wait(timeout=SOCK_TIMEOUT_S)

        # the first 250 ms of the link's bytes in one write: a source thread that the busy machine
        # deschedules right after its first small message would idle the link (not the emulator's doing)
        first = max(1, min(count, int(rate * 0.25 / 8) // message_bytes))

        def send() -> None:
            started.append(time.monotonic())
            try:
                s.sendall(msg * first)
                for _ in range(count - first):
                    s.sendall(msg)
            except OSError:
                pass                            # the link was stopped under a blocked sendall

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            assert sink.reached.wait(timeout=window * 3 + 5), "the link never delivered rate x window"
        finally:
            link.stop()
            s.close()
            sender.join(timeout=SOCK_TIMEOUT_S)
    got = sink.result()
    t0 = started[0]                             # no byte can arrive before the first write
    late = [(t, n) for t, n in got.arrivals if t0 + window / 2 <= t <= t0 + window]
    assert late, "nothing arrived in the second half of the window"
    measured = max(n * 8 / (t - t0) for t, n in late)
    at_end = got.bytes_at(t0 + window) * 8 / window
    print(f"{mbps} Mbps, {message_bytes} B messages: {measured / 1e6:.4f} Mbps ({measured / rate:.2%} of the rate; "
          f"{at_end / rate:.2%} counted at the window's end; longest silence {got.max_gap_s() * 1000:.0f} ms)")
    assert 0.98 * rate <= measured <= 1.01 * rate


def test_step_trace_changes_the_rate(sink: TcpServer) -> None:
    data = os.urandom(2_600_000)       # ~1 s at 16 Mbps, then ~1.2 s at 4 Mbps
    with LinkEmulator((HOST, sink.port), uplink=step([(0, 16), (1.0, 4)])) as link:
        start = link.started_at
        send_and_close(link.port, data)
        got = sink.result()
    fast = got.rate_bps(start + 0.15, start + 0.9)
    slow = got.rate_bps(start + 1.2, start + 2.0)
    print(f"step 16 -> 4 Mbps: measured {fast / 1e6:.2f} then {slow / 1e6:.2f} Mbps")
    assert got.digest == sha(data)
    assert fast == pytest.approx(16e6, rel=0.2)
    assert slow == pytest.approx(4e6, rel=0.2)


def test_shared_link_many_connections_and_half_close(echo: TcpServer) -> None:
    """16 connections echo 64 KB each through a 50 Mbps link both ways: all bytes back, in order,
    and the link is shared (the aggregate cannot beat 50 Mbps)."""
    blobs = [os.urandom(65536) for _ in range(16)]
    with LinkEmulator((HOST, echo.port), uplink=50e6, downlink=50e6, delay_ms=5) as link:
        t0 = time.monotonic()
        with futures.ThreadPoolExecutor(len(blobs)) as pool:
            backs = list(pool.map(lambda b: echo_through(link.port, b), blobs, timeout=30))
        elapsed = time.monotonic() - t0
        stats = link.stats()
    total = sum(len(b) for b in blobs)
    print(f"16 connections, {total} bytes each way over 50 Mbps: {elapsed:.3f} s "
          f"({total * 8 / elapsed / 1e6:.1f} Mbps aggregate)")
    assert [sha(b) for b in backs] == [sha(b) for b in blobs]
    assert elapsed >= 0.85 * total * 8 / 50e6
    assert stats["up_bytes"] == stats["down_bytes"] == total
    assert stats["connections_total"] == 16


def test_downlink_only_shaping(echo: TcpServer) -> None:
    data = os.urandom(500_000)
    with LinkEmulator((HOST, echo.port), uplink=None, downlink=8e6) as link:
        t0 = time.monotonic()
        back = echo_through(link.port, data)
        elapsed = time.monotonic() - t0
    assert back == data
    assert 0.4 <= elapsed <= 1.0      # 0.5 s at 8 Mbps


def test_large_transfer_unlimited(echo: TcpServer) -> None:
    data = os.urandom(16 * 1024 * 1024)
    with LinkEmulator((HOST, echo.port)) as link:
        t0 = time.monotonic()
        back = echo_through(link.port, data)
        elapsed = time.monotonic() - t0
        stats = link.stats()
    print(f"unlimited: 16 MiB echoed in {elapsed:.2f} s ({len(data) * 8 / elapsed / 1e6:.0f} Mbps)")
    assert sha(back) == sha(data)
    assert stats["up_bytes"] == stats["down_bytes"] == len(data)


# ---------------------------------------------------------------- delay
def test_delay_round_trip(echo: TcpServer) -> None:
    with LinkEmulator((HOST, echo.port), delay_ms=50) as link:
        s = connect(link.port)
        try:
            rtts = [ping(s) for _ in range(3)]
            link.set_delay_ms(10)
            after = [ping(s) for _ in range(3)]
        finally:
            s.close()
    print(f"50 ms one-way delay: RTTs {[round(r * 1000, 1) for r in rtts]} ms; at 10 ms: "
          f"{[round(r * 1000, 1) for r in after]} ms")
    assert min(rtts) >= 0.100
    assert max(rtts) < 0.4
    assert 0.020 <= min(after) < 0.1


def test_delay_and_rate_compose(sink: TcpServer) -> None:
    """Serialization at the rate, then the propagation delay: 250 kB at 8 Mbps + 100 ms."""
    data = os.urandom(250_000)
    with LinkEmulator((HOST, sink.port), uplink=8e6, delay_ms=100) as link:
        t0 = send_and_close(link.port, data)
        got = sink.result()
    first, last = got.arrivals[0][0] - t0, got.last_arrival - t0
    assert first >= 0.1
    assert 0.33 <= last <= 0.6       # 250 kB / 1 MB/s + 0.1 s (no burst: an idle link has no credit)
    assert got.digest == sha(data)


# ---------------------------------------------------------------- outages and resets
def test_scheduled_outage_delays_but_loses_nothing(sink: TcpServer) -> None:
    data = os.urandom(600_000)          # 0.6 s at 8 Mbps, with an outage 0.3 .. 0.8 s
    with LinkEmulator((HOST, sink.port), uplink=8e6, outages=[(0.3, 0.8)]) as link:
        t0 = send_and_close(link.port, data)
        got = sink.result()
    gap = got.max_gap_s()
    print(f"0.5 s outage: longest silence {gap:.3f} s, transfer {got.last_arrival - t0:.3f} s")
    assert got.nbytes == len(data) and got.digest == sha(data)
    assert gap >= 0.4
    assert got.last_arrival - t0 >= 0.6 + 0.4


def test_live_outage(echo: TcpServer) -> None:
    with LinkEmulator((HOST, echo.port), uplink=20e6) as link:
        s = connect(link.port)
        try:
            before = ping(s)
            link.outage(0.5)
            assert link.stats()["in_outage"]
            during = ping(s)
            after = ping(s)
        finally:
            s.close()
    assert before < 0.1 and after < 0.1
    assert during >= 0.4


def test_reset_at_closes_connections(echo: TcpServer) -> None:
    with LinkEmulator((HOST, echo.port), reset_at=[0.3]) as link:
        s = connect(link.port)
        try:
            assert ping(s) < 0.2
            gone, waited = peer_gone(s, within_s=3.0)
        finally:
            s.close()
        server_side = echo.result()
        assert link.stats()["resets"] == 1
        # the listener survives: a new connection works
        s2 = connect(link.port)
        try:
            assert ping(s2) < 0.2
        finally:
            s2.close()
    assert gone and waited < 1.0
    assert server_side.error is not None and "Reset" in server_side.error


def test_reset_connections_now(echo: TcpServer) -> None:
    with LinkEmulator((HOST, echo.port)) as link:
        clients = [connect(link.port) for _ in range(3)]
        try:
            for c in clients:
                ping(c)
            link.reset_connections()
            assert all(peer_gone(c, within_s=2.0)[0] for c in clients)
        finally:
            for c in clients:
                c.close()


def test_stop_with_open_connections(echo: TcpServer) -> None:
    link = LinkEmulator((HOST, echo.port), uplink=1e6, delay_ms=20).start()
    clients = [connect(link.port) for _ in range(4)]
    try:
        for c in clients:
            ping(c)
        clients[0].sendall(os.urandom(200_000))   # bytes still queued in the link
        t = time.monotonic()
        link.stop()
        stopped_in = time.monotonic() - t
        link.stop()                                # idempotent
        assert stopped_in < 1.5
        assert all(peer_gone(c, within_s=1.0)[0] for c in clients)
        with pytest.raises(OSError):
            connect(link.port).close()
        assert link.stats()["connections_open"] == 0
    finally:
        for c in clients:
            c.close()


def test_server_closes_first_and_target_down(sink: TcpServer) -> None:
    greeter = TcpServer(greeting=b"hello, and goodbye")
    try:
        with LinkEmulator((HOST, greeter.port), delay_ms=10) as link:
            s = connect(link.port)
            try:
                assert recv_until_eof(s) == b"hello, and goodbye"
            finally:
                s.close()
    finally:
        greeter.close()
    # a target that refuses connections: the client is closed, the emulator carries on
    closed = socket.socket()
    closed.bind((HOST, 0))                        # bound, not listening: connections are refused
    try:
        with LinkEmulator((HOST, closed.getsockname()[1])) as link:
            try:
                s = connect(link.port)
            except ConnectionResetError:
                pass  # the emulator reset us before connect() returned: the peer is gone all the same
            else:
                try:
                    assert peer_gone(s, within_s=3.0)[0]
                finally:
                    s.close()
            deadline = time.monotonic() + 3.0
            while link.stats()["connect_failures"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert link.stats()["connect_failures"] == 1
    finally:
        closed.close()


# ---------------------------------------------------------------- gRPC
def test_grpc_health_check_through_the_link() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    try:
        with LinkEmulator((HOST, port), uplink=2e6, downlink=8e6, delay_ms=20) as link:
            with grpc.insecure_channel(link.address, options=[("grpc.enable_http_proxy", 0)]) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                t = time.monotonic()
                first = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5.0)
                first_s = time.monotonic() - t
                t = time.monotonic()
                again = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5.0)
                again_s = time.monotonic() - t
            stats = link.stats()
    finally:
        server.stop(grace=0.5).wait(timeout=2)
    print(f"gRPC health through 20 ms each way: first call {first_s * 1000:.0f} ms, next {again_s * 1000:.0f} ms")
    assert first.status == again.status == health_pb2.HealthCheckResponse.SERVING
    assert first_s >= 0.040 and again_s >= 0.040     # at least one round trip through 2 x 20 ms
    assert stats["up_bytes"] > 0 and stats["down_bytes"] > 0


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "kwargs",
    [
        {"target": "127.0.0.1:1"},
        {"target": (HOST, 70000)},
        {"uplink": -1.0},
        {"uplink": "8 Mbps"},
        {"downlink": 0},
        {"delay_ms": -5},
        {"outages": [(1.0, 0.5)]},
        {"outages": [(1.0,)]},
        {"reset_at": [-1]},
        {"max_inflight_bytes": 0},
    ],
)
def test_bad_configuration(kwargs: dict) -> None:
    args = {"target": (HOST, 1), **kwargs}
    with pytest.raises(ConfigError):
        LinkEmulator(**args)


def test_live_setters_validate_and_port_needs_start() -> None:
    link = LinkEmulator((HOST, 1))
    with pytest.raises(RuntimeError):
        _ = link.port
    with pytest.raises(ConfigError):
        link.set_uplink(-3)
    with pytest.raises(ConfigError):
        link.set_delay_ms(float("nan"))
    with pytest.raises(ConfigError):
        link.outage(0)
    link.stop()    # never started: a no-op
