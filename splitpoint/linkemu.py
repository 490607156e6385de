"""A userspace TCP proxy that emulates a weak link (the drone's cellular uplink).

    client (agent) --> [LinkEmulator 127.0.0.1:PORT] --> target (server)

Bytes from the client to the target ("up") and back ("down") go through a
model of a link per direction, shared by all connections:

1. a serializer on a virtual clock: the direction's bandwidth trace (or a
   fixed bps, or unlimited) carries one piece at a time, first come, first
   served across connections (an asyncio.Lock is FIFO). A piece of n bytes
   that starts at s = max(now, when the link frees) finishes at the exact time
   f at which the trace has carried 8n bits since s (the integral of the
   rate), and the link is busy until f. An idle link gains no credit, so no
   burst ever beats the rate; and since f is computed, not slept, a late
   wake-up of the event loop costs nothing as long as the link was scheduled
   ahead: pieces are scheduled up to `_AHEAD_S` before the link frees.
2. a delay line: a piece that finished serializing at f is written to the
   other side at f + delay (no earlier), in order. Serialization at the rate,
   then propagation delay, as on a real link.

Outage windows carry nothing (a piece that would overlap one starts after
it; connections stay open and bytes wait, nothing is lost). `reset_at` times
abort every current connection with an RST on both sides.

Everything runs in one asyncio event loop in a background thread; the public
methods are thread-safe. Reading from a source stops while its bytes wait for
the link (and while the delay line holds more than `max_inflight_bytes`), so TCP
flow control pushes back on the sender instead of the proxy buffering
without bound.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from splitpoint.errors import ConfigError
from splitpoint.traces import BandwidthTrace

__all__ = ["LinkEmulator", "LinkSpec"]

log = logging.getLogger(__name__)

LinkSpec = BandwidthTrace | float | int | None

_READ_CHUNK = 64 * 1024
_READER_LIMIT = 16 * 1024      # asyncio pauses reading a socket beyond 2x this
_MAX_SLEEP_S = 0.010
_MIN_SLEEP_S = 0.0005
#: the serializer schedules the next piece up to this long before the link frees, so a stalled
#: event loop does not leave the link idle (stalls of 100-150 ms were seen on a 2-core machine at
#: load 7); bytes scheduled ahead wait in the delay line, each for its own finish time
_AHEAD_S = 0.200
#: a piece: one packet, or 1 ms at the current rate if that is more (few wake-ups at 100 Mbps)
_PIECE_BYTES = 1500
_PIECE_TIME_S = 0.001


def _check_address(key: str, value: Any) -> tuple[str, int]:
    if (not isinstance(value, tuple | list) or len(value) != 2 or not isinstance(value[0], str)
            or isinstance(value[1], bool) or not isinstance(value[1], int) or not 0 <= value[1] <= 65535):
        raise ConfigError(key, value, "expected (host, port), e.g. ('127.0.0.1', 50051)")
    return value[0], value[1]


def _check_link(key: str, value: Any) -> BandwidthTrace | None:
    if value is None or isinstance(value, BandwidthTrace):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise ConfigError(key, value, "expected a BandwidthTrace, a positive rate in bit/s, or None (unlimited)")
    return BandwidthTrace([0.0], [float(value)], duration_s=1.0, repeat=True, name=f"constant-{value / 1e6:g}Mbps")


def _check_delay(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value >= 0):
        raise ConfigError("delay_ms", value, "must be a finite number of milliseconds >= 0")
    return float(value)


def _merge(windows: Iterable[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    merged: list[list[float]] = []
    for s, e in sorted(windows):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return tuple((s, e) for s, e in merged)


def _constant(trace: BandwidthTrace | None) -> float | None:
    """The rate of a one-segment trace (a fixed rate): its finish times need no search."""
    if trace is None:
        return None
    segments = trace.segments
    return segments[0][1] if len(segments) == 1 else None


class _Link:
    """One direction of the link: a serializer driven by a trace, shared by every connection."""

    def __init__(self, emu: LinkEmulator, name: str, trace: BandwidthTrace | None):
        self.emu = emu
        self.name = name
        self.trace = trace
        self.constant_bps = _constant(trace)
        self.origin = 0.0          # monotonic time that is t=0 of the trace
        self.free_at = 0.0         # monotonic time the last scheduled piece finishes serializing
        self.lock: asyncio.Lock | None = None
        self.bytes_in = 0          # read from the source side
        self.bytes_out = 0         # written to the destination side

    def start(self, now: float) -> None:
        self.origin = now
        self.free_at = now
        self.lock = asyncio.Lock()

    def set_trace(self, trace: BandwidthTrace | None, now: float) -> None:
        """Called on the loop thread. A new trace starts at its t=0 now; pieces already
        scheduled keep their times (they were serialized at the old rate)."""
        self.trace = trace
        self.constant_bps = _constant(trace)
        self.origin = now

    def rate_bps(self, now: float) -> float:
        if self.trace is None:
            return math.inf
        return self.trace.rate_bps(now - self.origin)

    def finish(self, start: float, nbytes: int) -> float:
        """The time at which the trace, starting at `start`, has carried nbytes (outages carry nothing)."""
        assert self.trace is not None
        while True:
            end = self._carried(start, nbytes * 8.0)
            hit = next(((s, e) for s, e in self.emu._outage_windows if s < end and e > start), None)
            if hit is None:
                return end
            start = max(start, hit[1])   # the piece waits for the outage to end (nothing is lost)

    def _carried(self, start: float, bits: float) -> float:
        """The earliest t with trace.bits_between(start, t) >= bits (the rate's integral, inverted)."""
        assert self.trace is not None
        t0 = start - self.origin
        if self.constant_bps is not None:
            return start + bits / self.constant_bps
        lo, step = t0, max(bits / max(self.trace.rate_bps(t0), 1.0), 1e-3)
        hi = t0 + step
        while self.trace.bits_between(t0, hi) < bits:   # bounded: some segment's rate is > 0
            lo, step = hi, step * 2
            hi = t0 + step
        for _ in range(60):                             # bisection to well under a microsecond
            if hi - lo < 1e-7:
                break
            mid = (lo + hi) / 2
            if self.trace.bits_between(t0, mid) >= bits:
                hi = mid
            else:
                lo = mid
        return self.origin + hi

    async def take(self, want: int) -> tuple[int, float]:
        """Wait until bytes may enter the link; returns how many (1..want) and the time the last
        of them finishes serializing (now, for an unlimited link)."""
        assert self.lock is not None
        async with self.lock:
            while True:
                now = time.monotonic()
                end = self.emu._outage_end(now)
                if end is not None:
                    await asyncio.sleep(min(end - now, 0.05) + _MIN_SLEEP_S)
                    continue
                if self.trace is None:
                    return want, now
                ahead = self.free_at - now
                if ahead > _AHEAD_S:
                    await asyncio.sleep(min(max(ahead - _AHEAD_S, _MIN_SLEEP_S), _MAX_SLEEP_S))
                    continue
                start = max(now, self.free_at)   # an idle link starts now: no credit from idling
                piece = max(_PIECE_BYTES, int(self.rate_bps(start) / 8 * _PIECE_TIME_S))
                granted = min(want, piece)
                self.free_at = self.finish(start, granted)
                return granted, self.free_at


class _Conn:
    def __init__(self, cid: int, peer: Any):
        self.cid = cid
        self.peer = peer
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task] = []


class LinkEmulator:
    """A TCP proxy shaping client->target ("uplink") and optionally target->client ("downlink").

    >>> with LinkEmulator(("127.0.0.1", server_port), uplink=8e6, delay_ms=25) as link:
    ...     channel = grpc.insecure_channel(link.address)

    uplink/downlink: a BandwidthTrace, a fixed rate in bit/s, or None (unlimited).
    delay_ms: one-way delay added in each direction (the RTT grows by twice that).
    outages: (start_s, end_s) windows, relative to start(), when no bytes flow.
    reset_at: times (s after start()) at which every open connection is reset.
    max_inflight_bytes: bytes a connection may have in the delay line per direction
        before the proxy stops reading (only matters with an unlimited rate).
    socket_buffer_bytes: SO_RCVBUF/SO_SNDBUF for the proxy's sockets (None: kernel
        default); small buffers keep the bytes waiting upstream of the link, where the
        sender's TCP sees them, as on a real bottleneck.
    """

    def __init__(self, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0), *,
                 uplink: LinkSpec = None, downlink: LinkSpec = None, delay_ms: float = 0.0,
                 outages: Sequence[tuple[float, float]] = (), reset_at: Sequence[float] = (),
                 max_inflight_bytes: int = 4 * 1024 * 1024,
                 socket_buffer_bytes: int | None = 64 * 1024, connect_timeout_s: float = 5.0,
                 name: str = "link"):
        self.target = _check_address("target", target)
        self.listen = _check_address("listen", listen)
        self._up = _Link(self, "up", _check_link("uplink", uplink))
        self._down = _Link(self, "down", _check_link("downlink", downlink))
        self._delay_s = _check_delay(delay_ms) / 1000.0
        self._outages_rel: list[tuple[float, float]] = []
        for w in outages:
            try:
                s, e = (float(x) for x in w)
            except (TypeError, ValueError):
                raise ConfigError("outages", w, "expected (start_s, end_s)") from None
            if not (math.isfinite(s) and math.isfinite(e) and 0 <= s < e):
                raise ConfigError("outages", w, "expected 0 <= start_s < end_s")
            self._outages_rel.append((s, e))
        self._reset_rel: list[float] = []
        for t in reset_at:
            if isinstance(t, bool) or not isinstance(t, int | float) or not (math.isfinite(t) and t >= 0):
                raise ConfigError("reset_at", t, "expected times in seconds >= 0")
            self._reset_rel.append(float(t))
        if isinstance(max_inflight_bytes, bool) or not isinstance(max_inflight_bytes, int) or max_inflight_bytes < 1:
            raise ConfigError("max_inflight_bytes", max_inflight_bytes, "must be an integer >= 1")
        if socket_buffer_bytes is not None and (isinstance(socket_buffer_bytes, bool)
                                                or not isinstance(socket_buffer_bytes, int)
                                                or socket_buffer_bytes < 4096):
            raise ConfigError("socket_buffer_bytes", socket_buffer_bytes, "must be an integer >= 4096 or None")
        self.max_inflight_bytes = max_inflight_bytes
        self.socket_buffer_bytes = socket_buffer_bytes
        if (isinstance(connect_timeout_s, bool) or not isinstance(connect_timeout_s, int | float)
                or not (math.isfinite(connect_timeout_s) and connect_timeout_s > 0)):
            raise ConfigError("connect_timeout_s", connect_timeout_s, "must be a positive number of seconds")
        self.connect_timeout_s = float(connect_timeout_s)
        self.name = name

        self._outage_windows: tuple[tuple[float, float], ...] = ()   # absolute monotonic, merged
        self._t0: float | None = None
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[int, _Conn] = {}
        self._next_cid = 0
        self._connections_total = 0
        self._connect_failures = 0
        self._resets = 0
        self._stopped = False
        self._state_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LinkEmulator:
        with self._state_lock:
            if self._loop is not None:
                return self
            if self._stopped:
                raise RuntimeError("a stopped LinkEmulator cannot be started again")
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._thread = threading.Thread(target=self._run_loop, name=f"linkemu-{self.name}", daemon=True)
            self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start_async(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        log.info("link emulator %s on %s -> %s:%d (up %s, down %s, delay %.1f ms)", self.name, self.address,
                 self.target[0], self.target[1], self._up.trace, self._down.trace, self._delay_s * 1000)
        return self

    def stop(self, timeout_s: float = 1.0) -> None:
        """Close the listener and every connection. Idempotent; returns within ~timeout_s."""
        with self._state_lock:
            if self._stopped:
                return
            self._stopped = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._stop_async(timeout_s * 0.8), loop)
            try:
                fut.result(timeout=timeout_s)
            except Exception as exc:  # stopping must not fail
                log.warning("link emulator %s: unclean stop: %r", self.name, exc)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=timeout_s)
        if thread.is_alive():
            log.warning("link emulator %s: loop thread still running after %.1f s", self.name, timeout_s)
        log.info("link emulator %s stopped: %s", self.name, self.stats())

    def __enter__(self) -> LinkEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LinkEmulator is not started")
        return self._port

    @property
    def started_at(self) -> float:
        """time.monotonic() at start(): t=0 of the traces, the outage windows and reset_at."""
        if self._t0 is None:
            raise RuntimeError("LinkEmulator is not started")
        return self._t0

    @property
    def address(self) -> str:
        """"HOST:PORT" to connect to (e.g. a gRPC target)."""
        host = self.listen[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    # ------------------------------------------------------------------ live changes
    def set_uplink(self, link: LinkSpec) -> None:
        """A new rate or trace for client->target; a trace starts at its t=0 now."""
        trace = _check_link("uplink", link)
        self._on_loop(lambda: self._up.set_trace(trace, time.monotonic()))

    def set_downlink(self, link: LinkSpec) -> None:
        trace = _check_link("downlink", link)
        self._on_loop(lambda: self._down.set_trace(trace, time.monotonic()))

    def set_delay_ms(self, ms: float) -> None:
        """Applies to bytes entering the link from now on (bytes in flight keep theirs; order is kept)."""
        self._delay_s = _check_delay(ms) / 1000.0

    def outage(self, seconds: float) -> None:
        """Start an outage now, lasting `seconds`."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError("seconds", seconds, "an outage lasts a positive, finite number of seconds")
        now = time.monotonic()
        self._add_outage(now, now + float(seconds))

    def reset_connections(self) -> None:
        """Abort every open connection now (RST to both sides)."""
        self._on_loop(self._reset_all)

    def stats(self) -> dict[str, Any]:
        """Bytes forwarded each way and connection counts (a snapshot)."""
        return {
            "up_bytes": self._up.bytes_out,
            "down_bytes": self._down.bytes_out,
            "up_bytes_read": self._up.bytes_in,
            "down_bytes_read": self._down.bytes_in,
            "connections_total": self._connections_total,
            "connections_open": len(self._conns),
            "connect_failures": self._connect_failures,
            "resets": self._resets,
            "uplink_bps_now": self._rate_now(self._up),
            "downlink_bps_now": self._rate_now(self._down),
            "in_outage": self._outage_end(time.monotonic()) is not None,
        }

    # ------------------------------------------------------------------ internals
    def _rate_now(self, link: _Link) -> float | None:
        """The rate now in bit/s; None when unlimited or not started."""
        if self._t0 is None or link.trace is None:
            return None
        return link.rate_bps(time.monotonic())

    def _on_loop(self, fn: Any) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(fn)
        else:
            fn()

    def _add_outage(self, start: float, end: float) -> None:
        now = time.monotonic()
        kept = [w for w in self._outage_windows if w[1] > now - 60.0]
        self._outage_windows = _merge([*kept, (start, end)])
        log.info("link emulator %s: outage for %.2f s", self.name, end - max(start, now))

    def _outage_end(self, now: float) -> float | None:
        for s, e in self._outage_windows:
            if s <= now < e:
                return e
        return None

    def _run_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=0.5))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _tune(self, sock: socket.socket) -> None:
        if self.socket_buffer_bytes is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.socket_buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer_bytes)

    async def _start_async(self) -> None:
        host, port = self.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tune(sock)     # inherited by accepted sockets (window scale is fixed at SYN)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError("listen", f"{host}:{port}", f"cannot listen: {exc}") from None
        self._port = sock.getsockname()[1]
        now = time.monotonic()
        self._t0 = now
        self._up.start(now)
        self._down.start(now)
        if self._outages_rel:
            self._outage_windows = _merge((now + s, now + e) for s, e in self._outages_rel)
        loop = asyncio.get_running_loop()
        for t in self._reset_rel:
            loop.call_later(max(0.0, now + t - time.monotonic()), self._reset_all)
        self._server = await asyncio.start_server(self._handle, sock=sock, limit=_READER_LIMIT)

    async def _stop_async(self, timeout_s: float) -> None:
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task] = []
        for conn in list(self._conns.values()):
            for w in conn.writers:
                _abort(w, rst=False)
            tasks.extend(conn.tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def _reset_all(self) -> None:
        conns = list(self._conns.values())
        if conns:
            log.info("link emulator %s: resetting %d connection(s)", self.name, len(conns))
        for conn in conns:
            self._resets += 1
            for w in conn.writers:
                _abort(w, rst=True)
            for t in conn.tasks:
                t.cancel()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        cid = self._next_cid
        self._next_cid += 1
        self._connections_total += 1
        conn = _Conn(cid, c_writer.get_extra_info("peername"))
        conn.writers.append(c_writer)
        self._conns[cid] = conn
        _nodelay(c_writer)
        try:
            try:
                s_reader, s_writer = await asyncio.wait_for(self._connect(), timeout=self.connect_timeout_s)
            except (TimeoutError, OSError) as exc:
                self._connect_failures += 1
                log.warning("link emulator %s: connection %d: cannot reach %s:%d: %r", self.name, cid,
                            self.target[0], self.target[1], exc)
                _abort(c_writer, rst=True)
                return
            conn.writers.append(s_writer)
            _nodelay(s_writer)
            log.debug("link emulator %s: connection %d from %s", self.name, cid, conn.peer)
            up = asyncio.create_task(self._pump(c_reader, s_writer, self._up, cid))
            down = asyncio.create_task(self._pump(s_reader, c_writer, self._down, cid))
            conn.tasks += [up, down]
            done, pending = await asyncio.wait([up, down], return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed or any(t.cancelled() for t in done):
                # one side broke (reset, write to a closed peer): break the other side too
                for t in failed:
                    log.debug("link emulator %s: connection %d: %r", self.name, cid, t.exception())
                for w in conn.writers:
                    _abort(w, rst=True)
                for t in pending:
                    t.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=1.0)
            else:
                for w in conn.writers:
                    w.close()
        except asyncio.CancelledError:
            for w in conn.writers:
                _abort(w, rst=False)
            raise
        finally:
            self._conns.pop(cid, None)
            log.debug("link emulator %s: connection %d closed", self.name, cid)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.target
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._tune(sock)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            return await asyncio.open_connection(sock=sock, limit=_READER_LIMIT)
        except BaseException:
            sock.close()
            raise

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link,
                    cid: int) -> None:
        """Move bytes reader -> link model -> writer until EOF; propagate EOF as a half-close."""
        line: deque[tuple[float, bytes | None]] = deque()
        state = {"queued": 0}
        ready = asyncio.Event()       # the delay line has something
        room = asyncio.Event()        # the delay line has room
        room.set()

        async def deliver() -> None:
            while True:
                while not line:
                    ready.clear()
                    await ready.wait()
                due, data = line[0]
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                line.popleft()
                if data is None:
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                link.bytes_out += len(data)
                state["queued"] -= len(data)
                if state["queued"] <= self.max_inflight_bytes:
                    room.set()

        def push(data: bytes | None, leaves: float | None = None) -> None:
            """Queue data for delivery at `leaves` (when it finished serializing; default now) + delay."""
            due = (time.monotonic() if leaves is None else leaves) + self._delay_s
            if line and line[-1][0] > due:
                due = line[-1][0]        # a lowered delay must not reorder bytes
            line.append((due, data))
            if data is not None:
                state["queued"] += len(data)
                if state["queued"] > self.max_inflight_bytes:
                    room.clear()
            ready.set()

        delivery = asyncio.create_task(deliver())
        try:
            while True:
                # race the read against the delivery task, so that a failed write
                # (the destination went away) ends this pump even if the source is idle
                read = asyncio.ensure_future(reader.read(_READ_CHUNK))
                await asyncio.wait({read, delivery}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    break
                data = read.result()          # raises on a reset from the source
                if not data:
                    push(None)
                    break
                link.bytes_in += len(data)
                off = 0
                while off < len(data) and not delivery.done():
                    granted, leaves = await link.take(len(data) - off)
                    push(data[off:off + granted], leaves)
                    off += granted
                    if not room.is_set():
                        waiter = asyncio.ensure_future(room.wait())
                        await asyncio.wait({waiter, delivery}, return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()
                if delivery.done():
                    break
            await delivery       # raises if writing failed
        finally:
            if not delivery.done():
                delivery.cancel()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _abort(writer: asyncio.StreamWriter, rst: bool) -> None:
    """Close now, discarding buffered bytes; with rst the peer gets a TCP reset."""
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
    writer.transport.abort()
