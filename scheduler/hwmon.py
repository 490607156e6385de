"""HwmonMeter: Linux hwmon power*_input, or curr*_input x in*_input (INA219/INA226/INA260 boards
on a Pi). The sysfs root is a parameter so tests (and unusual boards) can point it elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scheduler.meters import (
    HWMON_ROOT,
    PowerWindow,
    _check_interval,
    _os_reason,
    _Poller,
    _read_int,
    _read_text,
    _trapezoid_mean,
)
from splitpoint.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

# hwmon chips that sit on the supply rail of a board (TI INA2xx/INA3221 current/power
# monitors). They are preferred over whatever else the kernel exposes a power reading for
# (a GPU, a laptop battery), because they measure what the drone's battery actually feeds.
_RAIL_MONITOR_PREFIXES = ("ina",)


@dataclass(frozen=True)
class HwmonSensor:
    """One hwmon channel that yields watts: a power*_input, or a curr*_input x in*_input pair."""

    chip: str  # the hwmon `name` file ("ina219"), or "?" when there is none
    hwmon: str  # "hwmon2"
    channel: str  # "power1" or "curr1*in1"
    label: str  # the channel's *_label file, or ""
    power_file: Path | None = None  # microwatts
    current_file: Path | None = None  # milliamps
    voltage_file: Path | None = None  # millivolts

    @property
    def id(self) -> str:
        return f"{self.hwmon}/{self.channel}"

    @property
    def description(self) -> str:
        text = f"{self.chip} {self.hwmon} {self.channel}"
        return f"{text} ({self.label})" if self.label else text

    def read_watts(self) -> float:
        """Raises OSError / ValueError; the callers decide whether that is fatal."""
        if self.power_file is not None:
            return _read_int(self.power_file) / 1e6
        assert self.current_file is not None and self.voltage_file is not None
        # mA x mV = uW. The current can be negative (charging, or a shunt wired backwards);
        # a power meter on a supply rail reports the magnitude.
        return abs(_read_int(self.current_file) * _read_int(self.voltage_file)) / 1e6


def _hwmon_index(path: Path) -> tuple[int, str]:
    m = re.fullmatch(r"hwmon(\d+)", path.name)
    return (int(m.group(1)) if m else 1 << 30, path.name)


def discover_hwmon_sensors(root: Path = HWMON_ROOT) -> tuple[list[HwmonSensor], list[str]]:
    """Every hwmon channel under `root` that reads as watts, best first, and why others were skipped.

    Per hwmonN directory: its power*_input channels (microwatts) if it has any, else every
    curr<i>_input (milliamps) that has an in<i>_input (millivolts) with the same index, the
    way the ina2xx/ina3221 drivers number a rail's bus voltage and current. The attributes live
    in hwmonN itself, or in hwmonN/device on old kernels. Each channel is read once here, so a
    file that exists but cannot be read (permissions, a driver error) is skipped now rather than
    failing in the middle of a measurement.

    Order: rail monitors (chip name starting with "ina") first, then power channels before
    current x voltage pairs, then by hwmon and channel number.
    """
    sensors: list[tuple[tuple, HwmonSensor]] = []
    skipped: list[str] = []
    try:
        dirs = sorted((p for p in root.iterdir() if p.name.startswith("hwmon")), key=_hwmon_index)
    except OSError:
        return [], []
    for hw in dirs:
        attr_dirs = [d for d in (hw, hw / "device") if d.is_dir()]
        chip = "?"
        for d in attr_dirs:
            with contextlib.suppress(OSError):
                chip = _read_text(d / "name") or "?"
                break
        for d in attr_dirs:
            found = _channels_in(d, chip, hw.name)
            if found:
                break
        else:
            continue
        preferred = chip.lower().startswith(_RAIL_MONITOR_PREFIXES)
        for order, sensor in found:
            try:
                sensor.read_watts()
            except (OSError, ValueError) as exc:
                why = _os_reason(exc) if isinstance(exc, OSError) else f"unparsable ({exc})"
                skipped.append(f"{sensor.description}: {why}")
                continue
            key = (not preferred, sensor.power_file is None, _hwmon_index(hw), order)
            sensors.append((key, sensor))
    sensors.sort(key=lambda pair: pair[0])
    return [s for _, s in sensors], skipped


def _label(d: Path, prefix: str) -> str:
    try:
        return _read_text(d / f"{prefix}_label")
    except OSError:
        return ""


def _channels_in(d: Path, chip: str, hwmon: str) -> list[tuple[int, HwmonSensor]]:
    """The watt-yielding channels of one attribute directory, with their index for ordering."""
    try:
        names = {p.name for p in d.iterdir()}
    except OSError:
        return []
    power = sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"power(\d+)_input", n)))
    if power:
        return [
            (i, HwmonSensor(chip, hwmon, f"power{i}", _label(d, f"power{i}"), power_file=d / f"power{i}_input"))
            for i in power
        ]
    curr = sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"curr(\d+)_input", n)))
    return [
        (
            i,
            HwmonSensor(
                chip, hwmon, f"curr{i}*in{i}", _label(d, f"curr{i}") or _label(d, f"in{i}"),
                current_file=d / f"curr{i}_input", voltage_file=d / f"in{i}_input",
            ),
        )
        for i in curr
        if f"in{i}_input" in names
    ]


class HwmonMeter:
    """A Linux hwmon power sensor: an INA219/INA226/INA260/INA3221 on the Pi's supply rail.

    These chips report power (or current and bus voltage) continuously; sysfs gives the latest
    conversion. A window therefore samples on a background thread every `interval_s` and takes
    the time-weighted (trapezoid) mean, which is what the energy of the window divided by its
    length would be if power moved linearly between samples. Pick the sampling interval close
    to the chip's conversion time: faster only re-reads the same value.

    `sensor` selects a channel when there are several: a channel id ("hwmon2/power1"), a
    hwmon directory ("hwmon2"), a chip name ("ina219") or a channel label ("VDD_IN"); None
    takes the first in discovery order (see discover_hwmon_sensors).
    """

    name = "hwmon"

    def __init__(self, path_root: Path = HWMON_ROOT, sensor: str | None = None, interval_s: float = 0.01):
        self.interval_s = _check_interval("interval_s", interval_s)
        root = Path(path_root)
        found, skipped = discover_hwmon_sensors(root)
        if not found:
            why = f"no hwmon power/current sensors under {root}"
            if skipped:
                why += f" (unreadable: {'; '.join(skipped)})"
            raise BackendUnavailableError(why)
        if sensor is not None:
            matches = [s for s in found if sensor in (s.id, s.hwmon, s.chip, s.label)]
            if not matches:
                known = ", ".join(f"{s.id} [{s.chip}{', ' + s.label if s.label else ''}]" for s in found)
                raise ConfigError("sensor", sensor, f"no such hwmon power sensor under {root}; found: {known}")
            found = matches
        self.sensor = found[0]
        self.description = self.sensor.description
        if len(found) > 1:
            log.debug("hwmon: using %s; also found %s", self.description, ", ".join(s.description for s in found[1:]))

    def read_watts(self) -> float:
        """The sensor's latest reading, W (the chip's own averaging interval)."""
        try:
            return self.sensor.read_watts()
        except (OSError, ValueError) as exc:
            raise BackendUnavailableError(f"hwmon sensor {self.description} could not be read: {exc}") from None

    @contextlib.contextmanager
    def window(self) -> Iterator[PowerWindow]:
        """Samples from entry to exit (also when the block raises); first and last samples are taken
        synchronously so that even a window shorter than one interval has two readings."""
        result = PowerWindow()
        times: list[float] = []
        watts: list[float] = []
        failures: list[str] = []

        def sample() -> None:
            try:
                w = self.sensor.read_watts()
            except (OSError, ValueError) as exc:
                # A read racing the driver's update can come back empty; skip, do not abort.
                failures.append(str(exc))
                return
            times.append(time.monotonic())
            watts.append(w)

        poller = _Poller(f"hwmon-{self.sensor.id}", self.interval_s, sample)
        start = time.monotonic()
        sample()
        poller.start()
        try:
            yield result
        finally:
            poller.stop()
            sample()
            result.seconds = time.monotonic() - start
            result.samples = len(watts)
            result.mean_watts = _trapezoid_mean(times, watts)
            if failures:
                log.warning("hwmon %s: %d of %d reads failed in a %.3f s window (last: %s)",
                            self.description, len(failures), len(failures) + len(watts), result.seconds, failures[-1])

