"""What every power meter shares: the window a measurement fills in, the meter protocol, the
sysfs readers and the sampling thread. The meters: scheduler/hwmon.py and scheduler/rapl.py;
which one a machine has: scheduler.power.find_meter.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from splitpoint.errors import ConfigError

log = logging.getLogger(__name__)

HWMON_ROOT = Path("/sys/class/hwmon")
POWERCAP_ROOT = Path("/sys/class/powercap")
POWER_SUPPLY_ROOT = Path("/sys/class/power_supply")




@dataclass
class PowerWindow:
    """What a meter saw over one `with meter.window()` block; filled in when the block exits.

    `mean_watts` stays None when the meter could not take a single good reading during the
    window (a sensor that vanished, a counter that became unreadable), so that callers cannot
    mistake "no data" for "0 W".
    """

    mean_watts: float | None = None
    seconds: float = 0.0
    samples: int = 0

    @property
    def joules(self) -> float | None:
        """Energy over the window (mean power x duration), or None without a mean."""
        return None if self.mean_watts is None else self.mean_watts * self.seconds


@runtime_checkable
class PowerMeter(Protocol):
    """A real meter: the profiler measures a stretch of work, or asks for a reading now."""

    #: short identifier ("hwmon", "rapl")
    name: str
    #: which sensor or counter, in words, for logs and result files ("ina219 hwmon2 power1")
    description: str

    def window(self) -> contextlib.AbstractContextManager[PowerWindow]:
        """A context manager yielding a PowerWindow that is filled in on exit."""
        ...

    def read_watts(self) -> float:
        """Power now (an instantaneous or short-interval reading), W."""
        ...


def _read_text(path: Path) -> str:
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.read().strip()


def _read_int(path: Path) -> int:
    """An integer sysfs attribute; ValueError for empty or garbled content, OSError if unreadable."""
    return int(_read_text(path))


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _check_interval(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(key, value, "must be a finite number of seconds > 0")
    return float(value)


def _trapezoid_mean(times: list[float], watts: list[float]) -> float | None:
    """Time-weighted mean of samples: each interval counts by its length, not by sample count.

    Sampling threads wake late on a busy CPU (exactly when the heads run), so samples are not
    evenly spaced; weighting by time keeps one late sample from counting as much as a long
    stretch. With one sample (or no elapsed time) the plain mean is all there is.
    """
    if not watts:
        return None
    span = times[-1] - times[0]
    if len(watts) == 1 or span < 1e-9:  # below a nanosecond the division is rounding noise
        return sum(watts) / len(watts)
    area = sum((watts[i] + watts[i + 1]) / 2 * (times[i + 1] - times[i]) for i in range(len(watts) - 1))
    return min(max(watts), max(min(watts), area / span))


class _Poller:
    """Calls `fn` every `interval_s` on a daemon thread until stopped.

    The meters read sysfs from a thread so that the measured code runs undisturbed and the
    window's length is whatever the `with` block takes.
    """

    def __init__(self, name: str, interval_s: float, fn: Callable[[], None]):
        self._interval_s = interval_s
        self._fn = fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._fn()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

