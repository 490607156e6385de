"""LinkEmulator: the proxy's public face - its arguments, its lifecycle (an asyncio loop in a
background thread), live changes (rates, delay, outages, resets), stats, and accepting
connections. The link model is in `link`, the bytes of a connection in `relay`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from splitpoint.config import format_address
from splitpoint.errors import ConfigError
from splitpoint.linkemu import relay
from splitpoint.linkemu.link import Link, LinkSpec, Outages, check_address, check_delay, check_link

__all__ = ["LinkEmulator"]

log = logging.getLogger(__name__)


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
        self.target = check_address("target", target)
        self.listen = check_address("listen", listen)
        self._outages = Outages()
        self._up = Link("up", check_link("uplink", uplink), self._outages)
        self._down = Link("down", check_link("downlink", downlink), self._outages)
        self._delay_s = check_delay(delay_ms) / 1000.0
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

        self._t0: float | None = None
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[int, relay.Conn] = {}
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
        return format_address(host, self.port)

    # ------------------------------------------------------------------ live changes
    def set_uplink(self, link: LinkSpec) -> None:
        """A new rate or trace for client->target; a trace starts at its t=0 now."""
        trace = check_link("uplink", link)
        self._on_loop(lambda: self._up.set_trace(trace, time.monotonic()))

    def set_downlink(self, link: LinkSpec) -> None:
        trace = check_link("downlink", link)
        self._on_loop(lambda: self._down.set_trace(trace, time.monotonic()))

    def set_delay_ms(self, ms: float) -> None:
        """Applies to bytes entering the link from now on (bytes in flight keep theirs; order is kept)."""
        self._delay_s = check_delay(ms) / 1000.0

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
            "in_outage": self._outages.end_at(time.monotonic()) is not None,
        }

    # ------------------------------------------------------------------ internals
    def _rate_now(self, link: Link) -> float | None:
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
        self._outages.add([(start, end)], now)
        log.info("link emulator %s: outage for %.2f s", self.name, end - max(start, now))

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

    async def _start_async(self) -> None:
        host, port = self.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # inherited by accepted sockets (window scale is fixed at SYN)
            relay.tune(sock, self.socket_buffer_bytes)
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
            self._outages.set((now + s, now + e) for s, e in self._outages_rel)
        loop = asyncio.get_running_loop()
        for t in self._reset_rel:
            loop.call_later(max(0.0, now + t - time.monotonic()), self._reset_all)
        self._server = await asyncio.start_server(self._handle, sock=sock, limit=relay.READER_LIMIT)

    async def _stop_async(self, timeout_s: float) -> None:
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task] = []
        for conn in list(self._conns.values()):
            for w in conn.writers:
                relay.abort(w, rst=False)
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
                relay.abort(w, rst=True)
            for t in conn.tasks:
                t.cancel()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        cid = self._next_cid
        self._next_cid += 1
        self._connections_total += 1
        conn = relay.Conn(cid, c_writer.get_extra_info("peername"))
        conn.writers.append(c_writer)
        self._conns[cid] = conn
        relay.nodelay(c_writer)
        try:
            try:
                s_reader, s_writer = await asyncio.wait_for(
                    relay.connect(self.target, self.socket_buffer_bytes), timeout=self.connect_timeout_s)
            except (TimeoutError, OSError) as exc:
                self._connect_failures += 1
                log.warning("link emulator %s: connection %d: cannot reach %s:%d: %r", self.name, cid,
                            self.target[0], self.target[1], exc)
                relay.abort(c_writer, rst=True)
                return
            conn.writers.append(s_writer)
            relay.nodelay(s_writer)
            log.debug("link emulator %s: connection %d from %s", self.name, cid, conn.peer)
            await relay.splice(conn, (c_reader, c_writer), (s_reader, s_writer), self._up, self._down,
                               lambda: self._delay_s, self.max_inflight_bytes, self.name)
        except asyncio.CancelledError:
            for w in conn.writers:
                relay.abort(w, rst=False)
            raise
        finally:
            self._conns.pop(cid, None)
            log.debug("link emulator %s: connection %d closed", self.name, cid)
