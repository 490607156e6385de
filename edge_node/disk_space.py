"""Free space where the results log is written, watched while the agent runs.

A results log that cannot be written stops the agent (a record lost is worse than a stop),
so a drone or field robot whose disk fills stops working - a log at 10 fps grows about
270 MB a day. `DiskWatch` tells its operator first: after a record is written it looks at
the free space, at most every CHECK_EVERY_S, exports it (`splitpoint_edge_results_disk_free_bytes`,
for an alert), and logs one warning when the space falls under LOW_FREE_BYTES or, at the
rate it fell over the last minutes, would run out within WARN_WITHIN_S; and one line when
there is room again. `splitpoint doctor` checks the same floor before a run.

Not locked: its one caller holds the Recorder's lock around `after_write`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name

#: under this much free space the results log is about to fail (doctor's floor too)
LOW_FREE_BYTES = 200 * 1024 * 1024
#: a disk that, at its recent rate, fills within this long is warned about
WARN_WITHIN_S = 24 * 3600.0
#: how often the free space is looked at (a statvfs: microseconds)
CHECK_EVERY_S = 30.0
#: the rate is taken over the last this many looks (10 min), and only over a minute or more
RATE_SAMPLES = 20
RATE_MIN_SPAN_S = 60.0


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


class DiskWatch:
    def __init__(self, path: str | Path, gauge: Any = None, clock: Callable[[], float] = time.monotonic,
                 statvfs: Callable[[str], os.statvfs_result] = os.statvfs):
        self.directory = str(Path(path).resolve().parent)
        self._gauge = gauge
        self._clock = clock
        self._statvfs = statvfs
        self._next = float("-inf")
        self._samples: deque[tuple[float, int]] = deque(maxlen=RATE_SAMPLES)
        self.warned = False

    def after_write(self) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + CHECK_EVERY_S
        try:
            st = self._statvfs(self.directory)
        except OSError as exc:  # the write itself says whether the disk works
            log.debug("results disk: cannot tell the free space at %s (%s)", self.directory, exc)
            return
        free = st.f_bavail * st.f_frsize
        if self._gauge is not None:
            self._gauge.set(free)
        if self._samples and free > self._samples[-1][1]:
            self._samples.clear()  # space freed (old logs removed): the rate before says nothing now
        self._samples.append((now, free))
        left_s, per_hour = self._time_left(now, free)
        short = free < LOW_FREE_BYTES or (left_s is not None and left_s < WARN_WITHIN_S)
        if short and not self.warned:
            self.warned = True
            pace = "" if left_s is None or per_hour is None else \
                f", falling {_mib(per_hour)} an hour: full in about {left_s / 3600:.1f} h"
            log.warning("results disk: %s free at %s%s; the agent stops when its results log cannot be "
                        "written: copy old logs off and remove them (docs/field-deployment.md)",
                        _mib(free), self.directory, pace)
        elif self.warned and free >= 2 * LOW_FREE_BYTES and (left_s is None or left_s >= 2 * WARN_WITHIN_S):
            self.warned = False
            log.info("results disk: %s free at %s again", _mib(free), self.directory)

    def _time_left(self, now: float, free: int) -> tuple[float | None, float | None]:
        """(seconds until full, bytes used an hour) at the rate the space fell since the oldest
        look kept; (None, None) over less than RATE_MIN_SPAN_S or while it did not fall."""
        then, free_then = self._samples[0]
        if now - then < RATE_MIN_SPAN_S or free >= free_then:
            return None, None
        per_s = (free_then - free) / (now - then)
        return free / per_s, per_s * 3600
