"""One direction of the emulated link: a serializer on a virtual clock, driven by a bandwidth trace.

The direction's trace (or a fixed bps, or unlimited) carries one piece at a time, first come,
first served across connections (an asyncio.Lock is FIFO). A piece of n bytes that starts at
s = max(now, when the link frees) finishes at the exact time f at which the trace has carried
8n bits since s (the integral of the rate), and the link is busy until f. An idle link gains
no credit, so no burst ever beats the rate; and since f is computed, not slept, a late wake-up
of the event loop costs nothing as long as the link was scheduled ahead: pieces are scheduled
up to `_AHEAD_S` before the link frees. Outage windows carry nothing: a piece that would overlap
one starts after it.

Also here: the checks of the emulator's arguments that describe the link (rates, delay,
addresses), so that every place that takes them (constructor, live setters) says the same.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from typing import Any

from splitpoint.errors import ConfigError
from splitpoint.traces import BandwidthTrace

__all__ = ["Link", "LinkSpec", "Outages", "check_address", "check_delay", "check_link"]

LinkSpec = BandwidthTrace | float | int | None

_MAX_SLEEP_S = 0.010
_MIN_SLEEP_S = 0.0005
#: the serializer schedules the next piece up to this long before the link frees, so a stalled
#: event loop does not leave the link idle (stalls of 100-150 ms were seen on a 2-core machine at
#: load 7); bytes scheduled ahead wait in the delay line, each for its own finish time
_AHEAD_S = 0.200
#: a piece: one packet, or 1 ms at the current rate if that is more (few wake-ups at 100 Mbps)
_PIECE_BYTES = 1500
_PIECE_TIME_S = 0.001


def check_address(key: str, value: Any) -> tuple[str, int]:
    if (not isinstance(value, tuple | list) or len(value) != 2 or not isinstance(value[0], str)
            or isinstance(value[1], bool) or not isinstance(value[1], int) or not 0 <= value[1] <= 65535):
        raise ConfigError(key, value, "expected (host, port), e.g. ('127.0.0.1', 50051)")
    return value[0], value[1]


def check_link(key: str, value: Any) -> BandwidthTrace | None:
    if value is None or isinstance(value, BandwidthTrace):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise ConfigError(key, value, "expected a BandwidthTrace, a positive rate in bit/s, or None (unlimited)")
    return BandwidthTrace([0.0], [float(value)], duration_s=1.0, repeat=True, name=f"constant-{value / 1e6:g}Mbps")


def check_delay(value: Any) -> float:
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


class Outages:
    """The outage windows in absolute time.monotonic(), merged; shared by both directions.

    The tuple is replaced whole, never changed in place, so the loop thread reading it while
    another thread adds a window sees either the old or the new set."""

    def __init__(self) -> None:
        self.windows: tuple[tuple[float, float], ...] = ()

    def set(self, windows: Iterable[tuple[float, float]]) -> None:
        self.windows = _merge(windows)

    def add(self, windows: Iterable[tuple[float, float]], now: float) -> None:
        """Add windows; those that ended over a minute ago are forgotten."""
        kept = [w for w in self.windows if w[1] > now - 60.0]
        self.windows = _merge([*kept, *windows])

    def end_at(self, now: float) -> float | None:
        """The end of the outage going on at `now`, or None."""
        for s, e in self.windows:
            if s <= now < e:
                return e
        return None


def _constant(trace: BandwidthTrace | None) -> float | None:
    """The rate of a one-segment trace (a fixed rate): its finish times need no search."""
    if trace is None:
        return None
    segments = trace.segments
    return segments[0][1] if len(segments) == 1 else None


class Link:
    """One direction of the link: a serializer driven by a trace, shared by every connection."""

    def __init__(self, name: str, trace: BandwidthTrace | None, outages: Outages):
        self.name = name
        self.trace = trace
        self.constant_bps = _constant(trace)
        self.outages = outages
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
            hit = next(((s, e) for s, e in self.outages.windows if s < end and e > start), None)
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
                end = self.outages.end_at(now)
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
