"""Bandwidth traces: the capacity of a link over time, for the link emulator.

A trace is a piecewise-constant rate in bits per second. Sources:

* Mahimahi files (`*.up`, `*.down`): each line is a time in milliseconds and one
  opportunity to deliver one 1500-byte packet; the opportunities are binned into
  windows (100 ms by default) to get a rate, and kept as `opportunities_s`.
* Simple text/CSV files: lines `time_s,mbps` (or whitespace separated, `#`
  comments); each rate holds until the next line.
* `constant(mbps)` and `step([(time_s, mbps), ...])` built in code.

Mahimahi and simple traces repeat when they reach their end (`repeat=True`), as
mm-link does. A `step()` schedule does not: its last rate holds forever.

`bits_between(t0, t1)` integrates the rate exactly; the emulator's serializer
inverts it to find when a piece of bytes has finished crossing the link.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from splitpoint.errors import ConfigError

__all__ = [
    "MAHIMAHI_PACKET_BYTES",
    "MAX_TRACE_S",
    "BandwidthTrace",
    "constant",
    "load_mahimahi",
    "load_simple",
    "load_trace",
    "step",
]

#: bytes delivered per Mahimahi opportunity (one MTU-sized packet)
MAHIMAHI_PACKET_BYTES = 1500

_MAHIMAHI_SUFFIXES = (".up", ".down")

#: the longest a trace file may last: 6 hours, 20 times the longest shipped trace (1065 s).
#: A Mahimahi trace becomes one rate per 100 ms bin, so its length, not its line count, sets
#: its memory: `0` then `1000000000` (11.6 days) asked for gigabytes and died out of memory,
#: and a time past 2^63 ms ended in an OverflowError traceback.
MAX_TRACE_S = 6 * 3600


class BandwidthTrace:
    """A piecewise-constant link rate.

    `starts` are the segment start times in seconds (the first is 0, strictly
    increasing) and `rates_bps` the rate of each segment. A repeating trace has
    period `duration_s` (the last segment ends there); a non-repeating one keeps
    its last rate after `duration_s` (= the start of its last segment unless
    given).
    """

    def __init__(self, starts: Sequence[float], rates_bps: Sequence[float], *, duration_s: float | None = None,
                 repeat: bool = True, name: str = "trace", opportunities_s: np.ndarray | None = None):
        key = f"trace {name}"
        starts = [float(s) for s in starts]
        rates = [float(r) for r in rates_bps]
        if not starts or len(starts) != len(rates):
            raise ConfigError(key, (len(starts), len(rates)), "needs one rate per segment start, at least one")
        if starts[0] != 0.0:
            raise ConfigError(key, starts[0], "the first segment must start at time 0")
        for a, b in zip(starts, starts[1:], strict=False):
            if not b > a:
                raise ConfigError(key, b, f"segment starts must increase (after {a})")
        for r in rates:
            if not (math.isfinite(r) and r >= 0):
                raise ConfigError(key, r, "rates must be finite and >= 0 bps")
        if not any(r > 0 for r in rates):
            raise ConfigError(key, rates[0], "all rates are zero: nothing could ever be delivered")
        if duration_s is None:
            if repeat:
                raise ConfigError(key, None, "a repeating trace needs duration_s")
            duration_s = starts[-1]
        duration_s = float(duration_s)
        if not math.isfinite(duration_s) or duration_s < starts[-1] or (repeat and duration_s <= starts[-1]):
            raise ConfigError(key, duration_s, f"duration_s must be finite and after the last segment start {starts[-1]}")
        self.name = name
        self.repeat = repeat
        self.duration_s = duration_s
        self.opportunities_s = opportunities_s
        self._starts = starts
        self._rates = rates
        # _cum[i]: bits delivered in [0, starts[i])
        cum = [0.0]
        for i in range(1, len(starts)):
            cum.append(cum[-1] + rates[i - 1] * (starts[i] - starts[i - 1]))
        self._cum = cum
        self._period_bits = self._f(duration_s) if repeat else 0.0

    # ------------------------------------------------------------------ queries
    @property
    def segments(self) -> list[tuple[float, float]]:
        """(start_s, bps) of every segment."""
        return list(zip(self._starts, self._rates, strict=True))

    def rate_bps(self, t_s: float) -> float:
        """The rate at time t_s (seconds from the start; wraps around for repeating traces)."""
        t = self._local(t_s)
        return self._rates[bisect.bisect_right(self._starts, t) - 1]

    def bits_between(self, t0_s: float, t1_s: float) -> float:
        """Bits the link can carry in [t0_s, t1_s] (the integral of the rate)."""
        if t1_s <= t0_s:
            return 0.0
        return self._big_f(t1_s) - self._big_f(t0_s)

    @property
    def mean_bps(self) -> float:
        """Time-weighted mean rate over one period (non-repeating: over [0, duration_s])."""
        if self.duration_s <= 0:
            return self._rates[0]
        return self.bits_between(0.0, self.duration_s) / self.duration_s

    def window_rates_bps(self, window_s: float = 1.0) -> np.ndarray:
        """Mean rate of each whole window of window_s over [0, duration_s]."""
        if not (math.isfinite(window_s) and window_s > 0):
            raise ConfigError("window_s", window_s, "must be a positive number of seconds")
        if self.duration_s <= 0:
            return np.array([self._rates[0]])
        n = int(math.floor(self.duration_s / window_s + 1e-9))
        if n == 0:
            return np.array([self.mean_bps])
        edges = [self._big_f(k * window_s) for k in range(n + 1)]
        return np.diff(np.array(edges)) / window_s

    def percentile_bps(self, p: float, window_s: float = 1.0) -> float:
        """The p-th percentile (0..100) of the rate averaged over windows of window_s."""
        if not (0 <= p <= 100):
            raise ConfigError("p", p, "percentile must be within 0..100")
        return float(np.percentile(self.window_rates_bps(window_s), p))

    def longest_outage(self, t0_s: float, t1_s: float, limit_s: float = 3600.0) -> tuple[float, float]:
        """(start s, length s) of the longest stretch with no delivery (rate 0) in [t0_s, t1_s), from
        t0_s on; an outage still on at t1_s counts whole, up to limit_s past t1_s.
        (t0_s, 0.0) when the link delivers all the time. A slice's mean rate hides such a gap: a
        1 s slice of 199 packets is 2.4 Mbps on average and may go dark for ten minutes."""
        best = (float(t0_s), 0.0)
        dark_from: float | None = None
        t, end = float(t0_s), float(t1_s) + limit_s
        while t < end:
            local = self._local(t)
            i = bisect.bisect_right(self._starts, local) - 1
            seg_end = self._starts[i + 1] if i + 1 < len(self._starts) else (self.duration_s if self.repeat else math.inf)
            nxt = min(end, max(t + (seg_end - local), math.nextafter(t, math.inf)))
            if self._rates[i] > 0:
                if dark_from is not None and t - dark_from > best[1]:
                    best = (dark_from, t - dark_from)
                dark_from = None
                if t >= t1_s:
                    break
            elif dark_from is None:
                if t >= t1_s:
                    break
                dark_from = t
            t = nxt
        if dark_from is not None and min(t, end) - dark_from > best[1]:
            best = (dark_from, min(t, end) - dark_from)
        return best

    def __repr__(self) -> str:
        return (f"BandwidthTrace(name={self.name!r}, duration_s={self.duration_s:g}, "
                f"mean={self.mean_bps / 1e6:.3g} Mbps, segments={len(self._starts)}, repeat={self.repeat})")

    # ------------------------------------------------------------------ internals
    def _local(self, t_s: float) -> float:
        t = max(0.0, float(t_s))
        if self.repeat:
            t = math.fmod(t, self.duration_s)
        return t

    def _f(self, t: float) -> float:
        """Bits in [0, t] for 0 <= t (within one period for repeating traces)."""
        i = bisect.bisect_right(self._starts, t) - 1
        return self._cum[i] + self._rates[i] * (t - self._starts[i])

    def _big_f(self, t_s: float) -> float:
        t = max(0.0, float(t_s))
        if not self.repeat:
            return self._f(t)
        k = math.floor(t / self.duration_s)
        return k * self._period_bits + self._f(t - k * self.duration_s)


# ---------------------------------------------------------------------- builders
def constant(mbps: float, name: str | None = None) -> BandwidthTrace:
    """A fixed rate (a one-second trace that repeats)."""
    if isinstance(mbps, bool) or not isinstance(mbps, int | float) or not (math.isfinite(mbps) and mbps > 0):
        raise ConfigError("mbps", mbps, "must be a positive, finite number of Mbit/s")
    return BandwidthTrace([0.0], [mbps * 1e6], duration_s=1.0, repeat=True, name=name or f"constant-{mbps:g}Mbps")


def step(schedule: Sequence[tuple[float, float]], period_s: float | None = None,
         name: str | None = None) -> BandwidthTrace:
    """Step changes: [(time_s, mbps), ...], e.g. [(0, 50), (2, 2), (4, 50)].

    The first step must be at time 0. Without period_s the last rate holds
    forever; with it the schedule repeats every period_s seconds.
    """
    if not schedule:
        raise ConfigError("schedule", schedule, "needs at least one (time_s, mbps) step")
    starts: list[float] = []
    rates: list[float] = []
    for i, item in enumerate(schedule):
        try:
            t, mbps = (float(x) for x in item)
        except (TypeError, ValueError):
            raise ConfigError(f"schedule[{i}]", item, "expected (time_s, mbps)") from None
        if not (math.isfinite(t) and t >= 0):
            raise ConfigError(f"schedule[{i}]", item, "time must be finite and >= 0")
        if not (math.isfinite(mbps) and mbps >= 0):
            raise ConfigError(f"schedule[{i}]", item, "mbps must be finite and >= 0")
        if i == 0 and t != 0:
            raise ConfigError("schedule[0]", item, "the first step must be at time 0")
        if i > 0 and t <= starts[-1]:
            raise ConfigError(f"schedule[{i}]", item, f"times must increase (after {starts[-1]:g} s)")
        starts.append(t)
        rates.append(mbps * 1e6)
    label = name or "step-" + "-".join(f"{r / 1e6:g}" for r in rates) + "Mbps"
    if period_s is not None:
        return BandwidthTrace(starts, rates, duration_s=period_s, repeat=True, name=label)
    return BandwidthTrace(starts, rates, repeat=False, name=label)


# ---------------------------------------------------------------------- loaders
def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("trace", str(path), f"cannot read: {exc}") from None


def _bad(path: Path, lineno: int, text: str, reason: str) -> ConfigError:
    return ConfigError(f"{path}:{lineno}", text, reason)


def load_mahimahi(path: str | Path, bin_ms: float = 100.0) -> BandwidthTrace:
    """A Mahimahi trace: one 1500-byte delivery opportunity per line (a time in ms).

    The rate of each bin_ms window is packets * 1500 * 8 / window. The period is
    the last timestamp (as in mm-link, which repeats the file from there). The
    raw opportunity times are kept in `opportunities_s`.
    """
    path = Path(path)
    if not (math.isfinite(bin_ms) and bin_ms > 0):
        raise ConfigError("bin_ms", bin_ms, "must be a positive number of milliseconds")
    times: list[int] = []
    last = 0
    for lineno, raw in enumerate(_read_lines(path), start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            ms = int(text)
        except ValueError:
            raise _bad(path, lineno, raw, "expected one integer time in milliseconds per line (Mahimahi format)") from None
        if ms < 0:
            raise _bad(path, lineno, raw, "time must be >= 0 ms")
        if ms > MAX_TRACE_S * 1000:
            raise _bad(path, lineno, raw, f"time must be at most {MAX_TRACE_S * 1000} ms "
                                          f"({MAX_TRACE_S // 3600} h, the longest trace read)")
        if ms < last:
            raise _bad(path, lineno, raw, f"times must not decrease (previous line: {last} ms)")
        last = ms
        times.append(ms)
    if not times:
        raise ConfigError(str(path), "", "empty trace: no delivery opportunities")
    if times[-1] <= 0:
        raise ConfigError(str(path), times[-1], "the trace must last a nonzero time (last timestamp > 0 ms)")
    t = np.asarray(times, dtype=np.float64)
    period_ms = float(times[-1])
    nbins = int(math.ceil(period_ms / bin_ms - 1e-9))
    idx = np.minimum((t // bin_ms).astype(np.int64), nbins - 1)
    counts = np.bincount(idx, minlength=nbins).astype(np.float64)
    lengths_s = np.full(nbins, bin_ms / 1000.0)
    lengths_s[-1] = (period_ms - (nbins - 1) * bin_ms) / 1000.0
    rates = counts * MAHIMAHI_PACKET_BYTES * 8 / lengths_s
    starts = np.arange(nbins) * (bin_ms / 1000.0)
    return BandwidthTrace(starts.tolist(), rates.tolist(), duration_s=period_ms / 1000.0, repeat=True,
                          name=path.name, opportunities_s=t / 1000.0)


_SPLIT = re.compile(r"[,\s;]+")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _simple_fields(text: str) -> list[str]:
    return [f for f in _SPLIT.split(text.strip()) if f]


def load_simple(path: str | Path, repeat: bool = True) -> BandwidthTrace:
    """Lines `time_s,mbps` (commas, semicolons or whitespace; `#` starts a comment).

    Each rate holds until the next line. Times must increase; they are taken
    relative to the first line. An optional header line (e.g. `time_s,mbps`)
    is skipped. The last line's rate lasts as long as the median interval
    between lines (1 s for a one-line file); with repeat the trace then
    starts over, without it the last rate holds forever.
    """
    path = Path(path)
    points: list[tuple[float, float]] = []
    first_data = True
    for lineno, raw in enumerate(_read_lines(path), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        fields = _simple_fields(text)
        is_header = first_data and not any(_is_number(f) for f in fields)
        first_data = False
        if is_header:
            continue
        if len(fields) != 2:
            raise _bad(path, lineno, raw, "expected two fields: time_s, mbps")
        try:
            t, mbps = float(fields[0]), float(fields[1])
        except ValueError:
            raise _bad(path, lineno, raw, "time_s and mbps must be numbers") from None
        if not (math.isfinite(t) and t >= 0):
            raise _bad(path, lineno, raw, "time_s must be finite and >= 0")
        if not (math.isfinite(mbps) and mbps >= 0):
            raise _bad(path, lineno, raw, "mbps must be finite and >= 0")
        if points and t <= points[-1][0]:
            raise _bad(path, lineno, raw, f"times must increase (previous line: {points[-1][0]:g} s)")
        if points and t - points[0][0] > MAX_TRACE_S:  # as a Mahimahi trace: the bench slices by length
            raise _bad(path, lineno, raw, f"the trace may last at most {MAX_TRACE_S} s "
                                          f"({MAX_TRACE_S // 3600} h) from its first line")
        points.append((t, mbps))
    if not points:
        raise ConfigError(str(path), "", "empty trace: no `time_s,mbps` lines")
    if not any(m > 0 for _, m in points):
        raise ConfigError(str(path), "", "all rates are zero: nothing could ever be delivered")
    t0 = points[0][0]
    starts = [t - t0 for t, _ in points]
    rates = [m * 1e6 for _, m in points]
    last_len = float(np.median(np.diff(starts))) if len(starts) > 1 else 1.0
    if repeat:
        return BandwidthTrace(starts, rates, duration_s=starts[-1] + last_len, repeat=True, name=path.name)
    return BandwidthTrace(starts, rates, repeat=False, name=path.name)


def load_trace(path: str | Path) -> BandwidthTrace:
    """Load a trace, Mahimahi or simple, chosen by suffix (.up/.down) and then by content."""
    path = Path(path)
    if path.suffix in _MAHIMAHI_SUFFIXES:
        return load_mahimahi(path)
    for raw in _read_lines(path):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if re.fullmatch(r"\d+", text):
            return load_mahimahi(path)
        return load_simple(path)
    raise ConfigError(str(path), "", "empty trace file")
