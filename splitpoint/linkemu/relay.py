"""The bytes of one proxied connection: each direction read, passed through its Link, held in a
delay line and written out; socket set-up and teardown (TCP_NODELAY, buffer sizes, RST).

The delay line: a piece that finished serializing at f is written to the other side at
f + delay (no earlier), in order - serialization at the rate, then propagation delay, as on a
real link. Reading from a source stops while its bytes wait for the link (and while the delay
line holds more than `max_inflight_bytes`), so TCP flow control pushes back on the sender
instead of the proxy buffering without bound.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from splitpoint.linkemu.link import Link

__all__ = ["READER_LIMIT", "Conn", "abort", "connect", "nodelay", "splice", "tune"]

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024
READER_LIMIT = 16 * 1024      # asyncio pauses reading a socket beyond 2x this

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Conn:
    """What it takes to break one proxied connection: both writers and both pump tasks."""

    def __init__(self, cid: int, peer: Any):
        self.cid = cid
        self.peer = peer
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task] = []


def tune(sock: socket.socket, buffer_bytes: int | None) -> None:
    if buffer_bytes is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)


async def connect(target: tuple[str, int], buffer_bytes: int | None) -> Streams:
    host, port = target
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        tune(sock, buffer_bytes)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        return await asyncio.open_connection(sock=sock, limit=READER_LIMIT)
    except BaseException:
        sock.close()
        raise


async def splice(conn: Conn, client: Streams, server: Streams, up: Link, down: Link,
                 delay_s: Callable[[], float], max_inflight_bytes: int, name: str) -> None:
    """Relay both directions until both end; one side breaking (a reset, a write to a closed
    peer) resets the other, as on a real link."""
    up_task = asyncio.create_task(_pump(client[0], server[1], up, delay_s, max_inflight_bytes))
    down_task = asyncio.create_task(_pump(server[0], client[1], down, delay_s, max_inflight_bytes))
    conn.tasks += [up_task, down_task]
    done, pending = await asyncio.wait([up_task, down_task], return_when=asyncio.FIRST_EXCEPTION)
    failed = [t for t in done if not t.cancelled() and t.exception() is not None]
    if failed or any(t.cancelled() for t in done):
        # one side broke (reset, write to a closed peer): break the other side too
        for t in failed:
            log.debug("link emulator %s: connection %d: %r", name, conn.cid, t.exception())
        for w in conn.writers:
            abort(w, rst=True)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
    else:
        for w in conn.writers:
            w.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link,
                delay_s: Callable[[], float], max_inflight_bytes: int) -> None:
    """Move bytes reader -> link model -> writer until EOF; propagate EOF as a half-close.
    delay_s is asked at every piece: the delay may change while the connection lives."""
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
            if state["queued"] <= max_inflight_bytes:
                room.set()

    def push(data: bytes | None, leaves: float | None = None) -> None:
        """Queue data for delivery at `leaves` (when it finished serializing; default now) + delay."""
        due = (time.monotonic() if leaves is None else leaves) + delay_s()
        if line and line[-1][0] > due:
            due = line[-1][0]        # a lowered delay must not reorder bytes
        line.append((due, data))
        if data is not None:
            state["queued"] += len(data)
            if state["queued"] > max_inflight_bytes:
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


def nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def abort(writer: asyncio.StreamWriter, rst: bool) -> None:
    """Close now, discarding buffered bytes; with rst the peer gets a TCP reset."""
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
    writer.transport.abort()
