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
   ahead: pieces are scheduled up to 200 ms (`link._AHEAD_S`) before the
   link frees.
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

The package: `emulator` (LinkEmulator: arguments, lifecycle, live changes, stats, accepting
connections), `link` (one direction's serializer, outage windows, the argument checks) and
`relay` (one connection's bytes through the links and the delay line; socket handling).
"""

from splitpoint.linkemu.emulator import LinkEmulator
from splitpoint.linkemu.link import LinkSpec

__all__ = ["LinkEmulator", "LinkSpec"]
