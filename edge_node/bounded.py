"""What the agent keeps about every frame of a run, in memory that does not grow with the run.

A drone flies for an hour; a field robot runs for weeks. A set of every frame id written and a
list of every latency held about 130 bytes a frame: 340 MB a day at 30 fps, until the Pi ran
out of memory. Both are kept here in bounded form:

- `IdRanges`: a results log's frame ids as sorted disjoint ranges. A run's ids are consecutive
  but for the few in flight (answered out of order), so it holds a handful of ranges;
- `LatencyMedian`: a run's latencies as counts in log-spaced bins 0.1% wide, so at most a few
  thousand bins whatever the run's length, and a median within 0.05% of the exact one;
- `RecordedOrigins`: the origin each record of a resumed log names. Most name their frame by
  number ("camera:0#1234", "clip.mp4#12", "synthetic#3"), held as ranges of ids per name; only
  others (a directory's file names: one per file the source has anyway) are held one by one.
  A dict of them (and the list of every record parsed to build it) took 2.1 GB to resume a
  log of a million records - a day of a 10 fps camera - more memory than a Pi 4 of 2 GB has.

None is locked: each has one owner that holds its own lock around it (a resumed log's
`RecordedOrigins` is filled once, as the log is opened, then only read).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from itertools import chain


class IdRanges:
    """A set of ints, held as sorted disjoint ranges [start, end)."""

    def __init__(self, ids: Iterable[int] = ()):
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0
        for i in sorted(set(ids)):
            self.add(i)

    def _range_of(self, i: int) -> int:
        """The index of the last range starting at or before i (-1: none)."""
        return bisect_right(self._starts, i) - 1

    def __contains__(self, i: object) -> bool:
        if not isinstance(i, int):
            return False
        j = self._range_of(i)
        return j >= 0 and i < self._ends[j]

    def add(self, i: int) -> bool:
        """Add i; False when it was there already."""
        j = self._range_of(i)
        if j >= 0 and i < self._ends[j]:
            return False
        extends_left = j >= 0 and self._ends[j] == i
        extends_right = j + 1 < len(self._starts) and self._starts[j + 1] == i + 1
        if extends_left and extends_right:  # i fills the gap between two ranges: one range
            self._ends[j] = self._ends[j + 1]
            del self._starts[j + 1], self._ends[j + 1]
        elif extends_left:
            self._ends[j] = i + 1
        elif extends_right:
            self._starts[j + 1] = i
        else:
            self._starts.insert(j + 1, i)
            self._ends.insert(j + 1, i + 1)
        self._count += 1
        return True

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for start, end in zip(self._starts, self._ends, strict=True):
            yield from range(start, end)

    @property
    def ranges(self) -> int:
        """How many ranges are held: what the memory grows with."""
        return len(self._starts)

    @property
    def last(self) -> int | None:
        """The largest id (None: empty)."""
        return self._ends[-1] - 1 if self._ends else None

    def copy(self) -> IdRanges:
        other = IdRanges()
        other._starts, other._ends, other._count = list(self._starts), list(self._ends), self._count
        return other


class RecordedOrigins:
    """Frame id -> the origin its record names (None: none), for ids added once each."""

    def __init__(self) -> None:
        self._numbered: dict[str, IdRanges] = {}  # name -> ids whose origin is f"{name}#{id}"
        self._named: dict[int, str | None] = {}  # every other origin, by id
        self.ids = IdRanges()
        #: model -> (records naming it, the lowest id among them): one or two models, not one per record
        self.models: dict[str, tuple[int, int]] = {}

    def add(self, fid: int, origin: str | None, model: str | None = None) -> None:
        if not self.ids.add(fid):
            return
        if model is not None:
            count, first = self.models.get(model, (0, fid))
            self.models[model] = (count + 1, min(first, fid))
        suffix = f"#{fid}"
        if origin is not None and origin.endswith(suffix):
            name = origin[: -len(suffix)]
            ranges = self._numbered.get(name)
            if ranges is None:
                ranges = self._numbered[name] = IdRanges()
            ranges.add(fid)
        else:
            self._named[fid] = origin

    def __len__(self) -> int:
        return len(self.ids)

    def items(self) -> Iterator[tuple[int, str | None]]:
        """(id, origin) of every id, not in id order."""
        numbered = ((fid, f"{name}#{fid}") for name, ranges in self._numbered.items() for fid in ranges)
        return chain(numbered, self._named.items())

    @property
    def held(self) -> int:
        """How many entries are held: what the memory grows with."""
        return len(self._named) + sum(r.ranges for r in self._numbered.values()) + self.ids.ranges


class LatencyMedian:
    """The median of the latencies added, from counts per bin: bin b holds values in
    [RATIO**b, RATIO**(b+1)) and stands for their geometric middle."""

    RATIO = 1.001
    _LOG_RATIO = math.log(RATIO)
    _ZERO = -(1 << 40)  # the bin of 0 and below (a latency is never negative; a bad clock could make one)

    def __init__(self) -> None:
        self._bins: dict[int, int] = {}
        self.count = 0

    def add(self, ms: float) -> None:
        if not math.isfinite(ms):
            return
        b = math.floor(math.log(ms) / self._LOG_RATIO) if ms > 0 else self._ZERO
        self._bins[b] = self._bins.get(b, 0) + 1
        self.count += 1

    def _value(self, b: int) -> float:
        return 0.0 if b == self._ZERO else self.RATIO ** (b + 0.5)

    def median(self) -> float | None:
        """As statistics.median would give on the values (the mean of the two middle ones for an
        even count), each value read as its bin's middle: within 0.05% of it."""
        if not self.count:
            return None
        lower, upper = (self.count - 1) // 2, self.count // 2  # 0-based ranks of the middle values
        seen, low = 0, None
        for b in sorted(self._bins):
            seen += self._bins[b]
            if low is None and seen > lower:
                low = self._value(b)
            if seen > upper:
                assert low is not None
                return (low + self._value(b)) / 2
        raise AssertionError("unreachable: the counts add up to count")

    def merge(self, other: LatencyMedian) -> None:
        """Add `other`'s latencies to these."""
        for b, n in other._bins.items():
            self._bins[b] = self._bins.get(b, 0) + n
        self.count += other.count

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile (0 < q <= 1: the smallest value with at least q of the
        values at or below it), read as its bin's middle: within 0.05% of it."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for b in sorted(self._bins):
            seen += self._bins[b]
            if seen >= rank:
                return self._value(b)
        raise AssertionError("unreachable: the counts add up to count")

    @property
    def bins(self) -> int:
        """How many bins are held: what the memory grows with."""
        return len(self._bins)
